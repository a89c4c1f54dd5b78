"""Record the golden episodes that pin the simulator's numbers (``tests/test_golden.py``).

Seeded episodes of ``Offload-v0`` (the default scenario, realized and expected accuracy
credit, with and without background probes) and of ``OffloadFleet-v0`` (the default
scenario's unlimited cloud, and the fleet scenario's shared, limited cloud), under
seeded random actions: every step's observation, reward and per-request metrics.

Run it only when a number changes on purpose, and say which and why in the commit:

    python -m tests.golden.record
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "episodes.npz"
SINGLE_KEYS = (
    "latency_s",
    "wait_s",
    "device_s",
    "network_s",
    "cloud_s",
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
)
FLEET_KEYS = (
    "latency_s",
    "device_s",
    "network_s",
    "cloud_s",
    "queue_s",
    "energy_j",
    "money_usd",
    "sent_bytes",
    "exit_block",
    "offloaded",
    "correct",
    "leakage",
    "deadline_miss",
    "cold_start",
)
SINGLE_CASES = {
    "single_realized": {"accuracy_credit": "realized", "probe": False},
    "single_expected": {"accuracy_credit": "expected", "probe": False},
    "single_probe": {"accuracy_credit": "realized", "probe": True},
}
# name: (scenario, devices, steps, FaaS concurrency or None for the scenario's capacity)
FLEET_CASES = {
    "fleet_default": ("default", 6, 150, None),
    "fleet_shared": ("fleet", 160, 30, None),
    "fleet_faas": ("faas", 24, 60, 6),
}
STEPS = 300


def _scenario(name: str, probe: bool = False):
    from sim.scenario import load_scenario

    root = HERE.parent.parent
    if name in ("default", "faas"):
        scenario = load_scenario(None)
        if name == "faas":
            scenario = scenario.with_updates(cloud="faas")
    else:
        scenario = load_scenario(root / "envs" / "scenarios" / f"{name}.toml")
    if probe:
        from dataclasses import replace

        scenario = scenario.with_updates(probe=replace(scenario.probe, interval_s=2.0))
    return scenario


def record_single(case: dict) -> dict[str, np.ndarray]:
    """One device's episodes (64 requests each, resets included) under random actions."""
    from envs.offload_env import OffloadEnv

    env = OffloadEnv(
        _scenario("default", case["probe"]),
        trace_source="builtin",
        trace_split="test",
        episode_requests=64,
        accuracy_credit=case["accuracy_credit"],
    )
    rng = np.random.default_rng(7)
    obs, _ = env.reset(seed=11)
    rows: dict[str, list] = {k: [] for k in (*SINGLE_KEYS, "obs", "reward", "end")}
    for _ in range(STEPS):
        action = rng.integers(env.action_space.nvec)
        nxt, reward, terminated, truncated, info = env.step(action)
        rows["obs"].append(obs)
        rows["reward"].append(reward)
        rows["end"].append(terminated or truncated)
        for k in SINGLE_KEYS:
            rows[k].append(info[k])
        obs = env.reset()[0] if terminated or truncated else nxt
    return {k: np.asarray(v, dtype=float) for k, v in rows.items()}


def record_fleet(case: tuple) -> dict[str, np.ndarray]:
    """A fleet's steps (autoreset included) under random actions."""
    from envs.fleet_env import OffloadFleetEnv
    from sim.capacity import Capacity

    scenario_name, devices, steps, concurrency = case
    capacity = None if concurrency is None else Capacity(concurrency=concurrency)
    env = OffloadFleetEnv(
        devices,
        _scenario(scenario_name),
        trace_source="builtin",
        trace_split="test",
        episode_requests=40,
        capacity=capacity,
    )
    rng = np.random.default_rng(5)
    obs, _ = env.reset(seed=3)
    rows: dict[str, list] = {k: [] for k in (*FLEET_KEYS, "obs", "reward", "end")}
    for _ in range(steps):
        actions = rng.integers(env.action_space.nvec)
        nxt, reward, terminated, truncated, info = env.step(actions)
        rows["obs"].append(obs)
        rows["reward"].append(reward)
        rows["end"].append(terminated | truncated)
        for k in FLEET_KEYS:
            rows[k].append(info[k])
        obs = nxt
    return {k: np.asarray(v, dtype=float) for k, v in rows.items()}


def record_all() -> dict[str, np.ndarray]:
    out = {}
    for name, case in SINGLE_CASES.items():
        out.update({f"{name}/{k}": v for k, v in record_single(case).items()})
    for name, case in FLEET_CASES.items():
        out.update({f"{name}/{k}": v for k, v in record_fleet(case).items()})
    return out


if __name__ == "__main__":
    np.savez_compressed(GOLDEN, **record_all())
    print(f"wrote {GOLDEN}")
