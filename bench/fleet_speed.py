"""Fleet speed: device-steps per second of ``OffloadFleet-v0`` against CartPole-v1.

    python -m bench.fleet_speed [--sizes 1,64,256] [--steps 200] [--repeats 5]

A fleet step advances every device by one request in one compiled call
(``sim.kernel``), with the shared cloud between its phases (a FaaS cloud's instances
compiled too, an IaaS cloud's workers in Python). What is reported is the rate per
device (fleet steps/s x N) over CartPole-v1's steps/s in the same run, timed in
interleaved pairs, median of the pairs. Two scenarios: the default one (a FaaS cloud
with no concurrency limit, its instances shared by the fleet; goal at 64 devices: 3x)
and the fleet scenario (a t3.micro-class IaaS cloud, two workers; goal: 2x). Two
workloads each: random actions, and every device sending the raw image to the cloud
(the cloud's queue at its busiest; the fleet scenario's cloud saturates above ~100
devices).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

from bench.common import write
from bench.env_speed import steps_per_second
from settings.cli import summary_of

SCENARIOS = {"default": None, "fleet": "envs/scenarios/fleet.toml"}


def fleet_device_steps_per_second(fleet, steps: int, workload: str, seed: int) -> float:
    fleet.reset(seed=seed)
    n = fleet.num_envs
    if workload == "random":
        rng = np.random.default_rng(seed)
        actions = [rng.integers(fleet.single_action_space.nvec, size=(n, 3)) for _ in range(16)]
    else:
        actions = [np.tile([0, fleet.system.n_thresholds - 1, 0], (n, 1))] * 16
    step = fleet.step
    t0 = time.perf_counter()
    for i in range(steps):
        step(actions[i % 16])
    return steps * n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    from envs.fleet_env import OffloadFleetEnv
    from sim.scenario import load_scenario

    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--sizes", default="1,64,256")
    parser.add_argument("--steps", type=int, default=200, help="fleet steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",")]
    cartpole = gym.make("CartPole-v1")
    rows = []
    for name, path in SCENARIOS.items():
        for n in sizes:
            rows += _timed(
                name,
                OffloadFleetEnv(n, load_scenario(path), trace_source="builtin"),
                cartpole,
                args,
            )
    table = Table(title="OffloadFleet-v0 device-steps/s against CartPole-v1 (median pair)")
    for col in ("scenario", "devices", "actions", "device-steps/s", "CartPole steps/s", "ratio"):
        table.add_column(col, justify="right")
    for x in rows:
        table.add_row(
            x["scenario"],
            str(x["devices"]),
            x["workload"],
            f"{x['device_steps_per_s']:,.0f}",
            f"{x['cartpole_steps_per_s']:,.0f}",
            f"{x['ratio']:.2f}",
        )
    Console().print(table)
    print("goals at 64 devices, random actions: default >= 3x, fleet >= 2x")
    payload = {"scenarios": SCENARIOS, "steps_per_block": args.steps, "rows": rows}
    print("wrote", write("fleet_speed", payload))
    return payload


def _timed(scenario: str, fleet, cartpole, args) -> list[dict]:
    """Median-pair rates of one fleet, for each workload."""
    rows = []
    for workload in ("random", "cloud_only"):
        ratios, rates, refs = [], [], []
        for r in range(args.repeats):
            rate = fleet_device_steps_per_second(fleet, args.steps, workload, seed=r)
            ref = steps_per_second(cartpole, 20_000, seed=r)
            rates.append(rate)
            refs.append(ref)
            ratios.append(rate / ref)
        k = int(np.argsort(ratios)[len(ratios) // 2])
        rows.append(
            {
                "scenario": scenario,
                "devices": fleet.num_envs,
                "workload": workload,
                "device_steps_per_s": rates[k],
                "cartpole_steps_per_s": refs[k],
                "ratio": ratios[k],
                "ratios": ratios,
            }
        )
    return rows


if __name__ == "__main__":
    main()
