"""Run policies on the same requests (common random numbers).

An ``EpisodeSpec`` pins everything random about an episode: the seed (arrival times
and image samples), the trace, its start offset and the initial battery. Every policy
of a comparison runs on the same list of specs, so differences in results come from
the policies alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.offload_env import OffloadEnv
from traces.trace import Trace


@dataclass(frozen=True)
class EpisodeSpec:
    seed: int
    trace: Trace
    offset_s: float
    battery_level: float


def make_specs(
    traces: list[Trace], n_episodes: int, seed: int, battery: tuple[float, float]
) -> list[EpisodeSpec]:
    """``n_episodes`` per trace list, cycling through the traces in a seeded order."""
    if not traces:
        raise ValueError("make_specs needs at least one trace")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(traces))
    specs = []
    for e in range(n_episodes):
        trace = traces[int(order[e % len(traces)])]
        specs.append(
            EpisodeSpec(
                seed=int(rng.integers(2**31)),
                trace=trace,
                offset_s=float(rng.uniform(0.0, trace.duration_s)),
                battery_level=float(rng.uniform(*battery)),
            )
        )
    return specs


ACTION_FIELDS = ("cut", "threshold", "level")
STEP_FIELDS = (
    "reward",
    "latency_s",
    "energy_j",
    "money_usd",
    "sent_bytes",
    "exit_block",
    "offloaded",
    "correct",
    "accuracy_expected",
    "leakage",
    "deadline_miss",
    "cold_start",
    "battery_level",
    "uplink_bps",
    "arrival_uplink_bps",
    "cut",
    "threshold",
    "level",
)
INFO_FIELDS = tuple(k for k in STEP_FIELDS if k != "reward" and k not in ACTION_FIELDS)


def run_episode(env: OffloadEnv, policy, spec: EpisodeSpec) -> dict[str, np.ndarray]:
    """One episode; returns one array per field of ``STEP_FIELDS`` (one entry a request)."""
    obs, _ = env.reset(
        seed=spec.seed,
        options={
            "trace": spec.trace,
            "offset_s": spec.offset_s,
            "battery_level": spec.battery_level,
        },
    )
    if hasattr(policy, "reset"):
        policy.reset()
    privileged = getattr(policy, "privileged", False)
    rows: dict[str, list] = {k: [] for k in STEP_FIELDS}
    while True:
        act = policy.act_privileged(env) if privileged else policy.act(obs)
        obs, reward, terminated, truncated, info = env.step(act)
        rows["reward"].append(reward)
        rows["cut"].append(int(act[0]))
        rows["threshold"].append(int(act[1]))
        rows["level"].append(int(act[2]))
        for key in INFO_FIELDS:
            rows[key].append(info[key])
        if terminated or truncated:
            break
    return {k: np.asarray(v) for k, v in rows.items()}


def run_many(env: OffloadEnv, policy, specs: list[EpisodeSpec]) -> dict[str, np.ndarray]:
    """Every spec, concatenated, with ``episode`` and ``family`` columns added."""
    parts = [run_episode(env, policy, spec) for spec in specs]
    out = {k: np.concatenate([p[k] for p in parts]) for k in STEP_FIELDS}
    out["episode"] = np.concatenate([np.full(len(p["reward"]), i) for i, p in enumerate(parts)])
    out["family"] = np.concatenate(
        [np.full(len(p["reward"]), s.trace.family) for s, p in zip(specs, parts, strict=True)]
    )
    return out
