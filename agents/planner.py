"""A clairvoyant, label-blind planner: how far foresight goes without the labels.

``ForesightPlanner`` (``planner_label_blind``, run it with ``evaluate.py --policies``)
sees everything the simulator knows except each image's true answer: the future
bandwidth of the trace, the arrival times, the confidence every exit will have on
every coming image, the queue, the radio tail and the cloud's warmth. Every ``hold``
requests it tries each distinct action held for the next ``horizon`` requests on a
copy of the simulator, scores the requests at the calibrated accuracy of their exit
and confidence (what ``accuracy_credit="expected"`` credits, so the answers' luck is
not part of the plan), and keeps the best action for the next ``hold`` requests
(receding horizon).

What it is for: the clairvoyant ``Oracle`` leads PPO mostly because it knows whether
each early exit is right; ``LabelBlindOracle`` takes the labels away but also plans
nothing, so it never opens an upload regime (a cold FaaS instance, an idle radio)
whose cost only later requests repay. This planner keeps the foresight and plans far
enough ahead to see those regimes pay, so its score is a reference for what a policy
that cannot see labels could reach with a perfect forecast. It is not an upper bound:
it considers one action held over the horizon (and, with ``switch_top``, one switch
after ``hold`` requests), and it does not plan past the horizon.
Numbers in BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np

from envs.offload_env import OffloadEnv
from envs.wrappers import distinct_actions


class ForesightPlanner:
    name = "planner_label_blind"
    privileged = True

    def __init__(self, horizon: int = 40, hold: int = 8, switch_top: int = 0) -> None:
        if horizon < 1 or hold < 1 or switch_top < 0:
            raise ValueError(
                f"horizon and hold must be >= 1 and switch_top >= 0, "
                f"got {horizon}, {hold} and {switch_top}"
            )
        self.horizon, self.hold, self.switch_top = horizon, hold, switch_top
        self._actions: list[np.ndarray] | None = None
        self._held: np.ndarray | None = None
        self._left = 0  # requests the held action still covers

    def reset(self) -> None:
        """A new episode: plan again at its first request."""
        self._held, self._left = None, 0

    def act_privileged(self, env: OffloadEnv) -> np.ndarray:
        if self._left == 0 or self._held is None:
            self._held, self._left = self._plan(env), self.hold
        self._left -= 1
        return self._held.copy()

    def _plan(self, env: OffloadEnv) -> np.ndarray:
        """The first action of the best plan. Plans are one action held over the horizon;
        with ``switch_top`` > 0 also the ``switch_top`` best of those held for ``hold``
        requests and followed by any other action for the rest of the horizon."""
        if self._actions is None:
            self._actions = [
                np.array(a, dtype=np.int64) for a in distinct_actions(*env.action_space.nvec)
            ]
        start = env.snapshot()
        try:
            values = []
            for a in self._actions:
                env.restore(start)
                values.append(self._rollout(env, a, self.horizon)[0])
            best = int(np.argmax(values))
            best_action, best_value = self._actions[best], values[best]
            rest = self.horizon - self.hold
            for i in np.argsort(values)[::-1][: self.switch_top if rest > 0 else 0]:
                first = self._actions[i]
                env.restore(start)
                head, ended = self._rollout(env, first, self.hold)
                if ended:
                    continue
                switch = env.snapshot()
                for b in self._actions:
                    env.restore(switch)
                    value = head + self._rollout(env, b, rest)[0]
                    if value > best_value:
                        best_action, best_value = first, value
        finally:
            env.restore(start)
        return best_action

    def _rollout(self, env: OffloadEnv, action: np.ndarray, steps: int) -> tuple[float, bool]:
        """The calibrated reward of ``action`` held for the next ``steps`` requests, and
        whether the episode ended within them."""
        reward = env.system.reward
        value = 0.0
        for _ in range(steps):
            _, _, terminated, truncated, info = env.step(action)
            value += reward(
                info["accuracy_expected"],
                info["latency_s"],
                info["energy_j"],
                info["money_usd"],
                info["leakage"],
                info["battery_level"],
            )
            if terminated or truncated:
                return value, True
        return value, False

    def act(self, observation: np.ndarray) -> np.ndarray:
        raise RuntimeError("the planner needs the simulator: call act_privileged(env)")
