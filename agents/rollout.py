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
from sim import kernel as K
from sim.devices import Devices
from telemetry.observation import OBS_DIM
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
    "carbon_g",
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
    "variant",
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
    """Every spec, concatenated, with ``episode`` and ``family`` columns added. A policy
    that acts from the observation alone runs every episode at once (``run_batched``:
    the same requests and numbers, far faster); the oracle and the planners, which
    search the simulator, one episode after another."""
    if getattr(policy, "privileged", False) or any(
        env.row_of(env.uplink(s.trace)[0]) is None for s in specs
    ):
        parts = [run_episode(env, policy, spec) for spec in specs]
    else:
        parts = run_batched(env, policy, specs)
    out = {k: np.concatenate([p[k] for p in parts]) for k in STEP_FIELDS}
    out["episode"] = np.concatenate([np.full(len(p["reward"]), i) for i, p in enumerate(parts)])
    out["family"] = np.concatenate(
        [np.full(len(p["reward"]), s.trace.family) for s, p in zip(specs, parts, strict=True)]
    )
    return out


# Where ``run_episode``'s info fields are in the kernel's outcome row, and their types.
_COLUMNS = {
    "latency_s": (K.O_LATENCY, float), "energy_j": (K.O_ENERGY, float),
    "money_usd": (K.O_MONEY, float), "carbon_g": (K.O_CARBON, float),
    "sent_bytes": (K.O_SENT, int),
    "exit_block": (K.O_EXIT_BLOCK, int), "offloaded": (K.O_OFFLOADED, bool),
    "correct": (K.O_CORRECT, bool), "accuracy_expected": (K.O_EXPECTED, float),
    "leakage": (K.O_LEAKAGE, float), "deadline_miss": (K.O_MISS, bool),
    "cold_start": (K.O_COLD, bool), "battery_level": (K.O_BATTERY_LEVEL, float),
    "uplink_bps": (K.O_UPLINK_BPS, float), "arrival_uplink_bps": (K.O_ARRIVAL_UPLINK_BPS, float),
    "reward": (K.O_REWARD, float), "variant": (K.O_VARIANT, int),
}  # fmt: skip


def run_batched(env: OffloadEnv, policy, specs: list[EpisodeSpec]) -> list[dict[str, np.ndarray]]:
    """``run_episode`` for every spec at once: each episode drawn by ``env`` as its
    ``reset`` draws it, then all of them stepped together (``sim.devices``, each device
    with the cloud to itself, as one device has), the policy acting for all in one call
    (``agents.fleet_rollout.for_fleet``)."""
    from agents.fleet_rollout import for_fleet

    n = len(specs)
    devices = Devices(env.system, env.bank, n, env.episode_requests)
    for d, spec in enumerate(specs):
        options = {"trace": spec.trace, "offset_s": spec.offset_s,
                   "battery_level": spec.battery_level}  # fmt: skip
        env.reset(seed=spec.seed, options=options)
        devices.copy_from(env.devices, 0, d)
    actor = for_fleet(policy, n, OBS_DIM)
    nvec = env.action_space.nvec
    obs = devices.observe()[:, :OBS_DIM].copy()
    live = np.ones(n, dtype=bool)
    steps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while live.any():
        raw = np.asarray(actor.act_all(obs), dtype=np.int64)
        out, next_obs = devices.step(devices.checked(raw, nvec))
        steps.append((live.copy(), raw, out.copy()))
        live &= (out[:, K.O_TERMINATED] == 0.0) & (out[:, K.O_TRUNCATED] == 0.0)
        obs = next_obs[:, :OBS_DIM].copy()
    return [_episode_rows(steps, d) for d in range(n)]


def _episode_rows(steps, d: int) -> dict[str, np.ndarray]:
    """Device ``d``'s requests of ``run_batched``'s steps, as ``run_episode`` returns."""
    taken = [(raw[d], out[d]) for live, raw, out in steps if live[d]]
    rows = {k: np.asarray([kind(o[col]) for _, o in taken]) for k, (col, kind) in _COLUMNS.items()}
    for j, name in enumerate(ACTION_FIELDS):
        rows[name] = np.asarray([int(a[j]) for a, _ in taken])
    return {k: rows[k] for k in STEP_FIELDS}
