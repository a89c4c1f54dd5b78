"""Run a policy on every device of a fleet for one episode, and what came of it.

Every policy of ``agents.base`` acts for one device from its own observation; here
each device gets its own copy (a heuristic may keep state) and reads the first
``obs_dim`` features of its fleet observation (a single-device policy knows 17, a
fleet-trained one 18). A PPO policy acts for the whole fleet in one batched call.

Only each device's first episode counts: a fleet evaluation with a seed gives every
policy the same devices, traces, arrivals and images (common random numbers); a
device whose battery runs out stops counting there.
"""

from __future__ import annotations

import copy

import numpy as np

from envs.fleet_env import OffloadFleetEnv

FLEET_FIELDS = (
    "reward",
    "latency_s",
    "queue_s",
    "correct",
    "deadline_miss",
    "offloaded",
    "energy_j",
    "money_usd",
    "carbon_g",
    "cut",
)


class BatchedPPO:
    """A ``PPOPolicy`` acting for N devices at once."""

    def __init__(self, policy, obs_dim: int) -> None:
        self.policy, self.obs_dim, self.name = policy, obs_dim, policy.name

    def act_all(self, obs: np.ndarray) -> np.ndarray:
        """The deterministic action of every row of ``obs`` (SB3's ``predict``, minus
        its per-call checks: the most probable action of the policy's distribution)."""
        import torch

        p = self.policy
        normalized = p.normalizer(obs[:, : self.obs_dim])  # row by row, as ``act`` would
        policy = p.model.policy
        with torch.no_grad():
            features = torch.as_tensor(normalized, device=policy.device)
            actions = policy.get_distribution(features).mode().cpu().numpy()
        actions = np.asarray(actions, dtype=np.int64).reshape(len(obs), -1)
        if p.table is not None:
            return p.table[actions[:, 0]]
        return actions


class PerDevice:
    """Any single-device policy, acting for each device from its own observation."""

    def __init__(self, policy, n: int, obs_dim: int) -> None:
        if hasattr(policy, "reset"):
            # A policy with state: a shallow copy each (the system and tables it reads
            # are shared, never copied: they are large), its state made anew.
            self.copies = [copy.copy(policy) for _ in range(n)]
            for c in self.copies:
                c.reset()
        else:
            self.copies = [policy] * n
        self.obs_dim, self.name = obs_dim, policy.name

    def act_all(self, obs: np.ndarray) -> np.ndarray:
        d = self.obs_dim
        return np.stack([c.act(o[:d]) for c, o in zip(self.copies, obs, strict=True)])


def for_fleet(policy, n: int, obs_dim: int = 17):
    """``policy`` as something that acts for ``n`` devices: ``act_all(obs) -> (n, 3)`` (or
    ``(n, 4)`` with the model variant)."""
    from agents.ppo import PPOPolicy

    if getattr(policy, "privileged", False):
        raise ValueError(f"{policy.name} needs the simulator of one device; not in a fleet")
    if isinstance(policy, PPOPolicy):
        return BatchedPPO(policy, obs_dim)
    return PerDevice(policy, n, obs_dim)


def run_fleet(fleet: OffloadFleetEnv, actor, seed: int, options: dict | None = None
              ) -> dict[str, np.ndarray]:  # fmt: skip
    """One episode of every device (``options``: the fleet's reset options); per
    request, the fields of ``FLEET_FIELDS``, the ``action`` taken and ``device`` (also
    as ``episode``, so ``agents.metrics`` summarises per device)."""
    obs, _ = fleet.reset(seed=seed, options=options)
    n = fleet.num_envs
    counting = np.ones(n, dtype=bool)
    rows: dict[str, list] = {k: [] for k in (*FLEET_FIELDS, "device", "action")}
    for _ in range(fleet.requests_per_episode):
        actions = actor.act_all(obs)
        obs, reward, terminated, truncated, info = fleet.step(actions)
        live = np.flatnonzero(counting)
        rows["reward"].append(reward[live])
        for key in FLEET_FIELDS[1:]:
            rows[key].append(np.asarray(info[key])[live])
        rows["device"].append(live)
        rows["action"].append(np.asarray(actions)[live])
        counting &= ~(terminated | truncated)
        if not counting.any():
            break
    out = {k: np.concatenate(v) for k, v in rows.items()}
    out["episode"] = out["device"]
    return out
