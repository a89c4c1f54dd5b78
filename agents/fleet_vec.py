"""A fleet as Stable-Baselines3 sees it: one SB3 environment per device.

``FleetVecEnv`` turns ``OffloadFleet-v0`` (a Gymnasium ``VectorEnv`` stepping N devices
in numpy) into SB3's ``VecEnv``, so PPO trains one shared policy on every device's
experience. As in single-device training (``agents.training.make_env_fn``) each
decision is a ``Discrete`` index into the distinct actions (``envs.wrappers``) and is
held for ``action_repeat`` requests, its rewards summed.

A device whose episode ends inside a held decision reports ``done`` at the end of the
hold, with the observation its episode ended on as ``terminal_observation``; the
requests it serves in the rest of that hold (its new episode's first ones, under the
old decision) are not credited to any transition.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from envs.fleet_env import OffloadFleetEnv
from envs.wrappers import env_actions


class FleetVecEnv(VecEnv):
    def __init__(
        self, fleet: OffloadFleetEnv, action_repeat: int = 1, obs_dim: int | None = None
    ) -> None:
        """``obs_dim``: the observation's first features the policy sees (17 for a
        single-device policy trained on independent devices; default: all 18)."""
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        self.fleet = fleet
        self.action_repeat = action_repeat
        self.table = np.asarray(env_actions(fleet.single), dtype=np.int64)
        space = fleet.single_observation_space
        self.obs_dim = obs_dim or space.shape[0]
        if self.obs_dim != space.shape[0]:
            space = spaces.Box(space.low[: self.obs_dim], space.high[: self.obs_dim],
                               dtype=space.dtype)  # fmt: skip
        super().__init__(fleet.num_envs, space, spaces.Discrete(len(self.table)))
        self._seed: int | None = None
        self._actions: np.ndarray | None = None

    def seed(self, seed: int | None = None):
        self._seed = seed
        return [seed] * self.num_envs

    def reset(self) -> np.ndarray:
        obs, _ = self.fleet.reset(seed=self._seed)
        self._seed = None  # later resets continue the generator
        return obs[:, : self.obs_dim]

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = self.table[np.asarray(actions, dtype=np.int64).reshape(-1)]

    def step_wait(self):
        n = self.num_envs
        total = np.zeros(n, dtype=np.float32)
        done = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        terminal = [None] * n
        for _ in range(self.action_repeat):
            obs, reward, term, trunc, info = self.fleet.advance(self._actions, checked=True)
            live = ~done
            total[live] += reward[live]
            ended = (term | trunc) & live
            if ended.any():
                for d in np.flatnonzero(ended).tolist():
                    terminal[d] = info["final_obs"][d, : self.obs_dim]
                    truncated[d] = bool(trunc[d]) and not bool(term[d])
                done |= ended
        infos = [{} for _ in range(n)]
        for d in np.flatnonzero(done).tolist():
            infos[d]["terminal_observation"] = terminal[d]
            infos[d]["TimeLimit.truncated"] = bool(truncated[d])
        return obs[:, : self.obs_dim], total, done, infos

    def close(self) -> None:
        self.fleet.close()

    # SB3's attribute plumbing: the fleet is one object, every "sub-env" shares it.
    def get_attr(self, attr_name: str, indices=None) -> list:
        return [getattr(self.fleet, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        setattr(self.fleet, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list:
        result = getattr(self.fleet, method_name)(*method_args, **method_kwargs)
        return [result] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
