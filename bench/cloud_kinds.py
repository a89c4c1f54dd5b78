"""A reserved VM, functions and their hybrid on the same requests: the simulator's money,
latency, accuracy and cold starts for fixed actions.

    python -m bench.cloud_kinds [--scenario envs/scenarios/hybrid.toml] [--episodes 20]

The scenario is run three times with only ``[scenario].cloud`` changed (its catalog's
``iaas``, ``faas`` and ``hybrid`` entries by default), on the same seeds: the same
traces, start offsets, arrivals and samples (common random numbers). Each fixed action
``cut,threshold index,level`` is held for every request. Money is the simulator's
(``sim.kernel``): the cloud's bill per request (an IaaS VM's busy seconds over its
utilisation; a function call's fee and GB-seconds) plus the cellular data, reported
per 1,000 requests in total and for the cloud alone.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.common import write
from settings.cli import UsageError, run_cli, summary_of, within
from settings.tables import InputError

ACTIONS = ("0,3,0", "1,3,2", "2,3,2", "0,6,0")  # raw image / int8 at cuts 1-2; 0.9; no exits


def run(scenario, cloud: str, action: tuple[int, int, int], episodes: int, requests: int) -> dict:
    """One fixed action on ``cloud`` for ``episodes`` seeded episodes of the test traces."""
    from envs import OffloadEnv
    from sim import formulas
    from sim import kernel as K

    env = OffloadEnv(
        scenario.with_updates(cloud=cloud),
        trace_source="builtin",
        trace_split="test",
        episode_requests=requests,
    )
    act = np.asarray(action, dtype=np.int64)
    rows = []
    for seed in range(episodes):
        env.reset(seed=seed)
        while True:
            _, _, term, trunc, info = env.step(act)
            o = env.devices.out[0]
            data = formulas.request_money_usd(info["sent_bytes"], env.system.data_usd_per_byte, 0.0)
            rows.append(
                (
                    info["money_usd"],
                    info["money_usd"] - data,
                    info["latency_s"],
                    info["correct"],
                    info["offloaded"],
                    info["cold_start"],
                    o[K.O_FN_CALL],
                    o[K.O_CLOUD_EXIT] > 0,
                )
            )
            if term or trunc:
                break
    r = np.asarray(rows, dtype=float)
    sent = r[:, 4] > 0
    offloaded = max(int(sent.sum()), 1)
    return {
        "cloud": cloud,
        "rate_hz": scenario.workload.rate_hz,
        "action": list(action),
        "requests": len(r),
        "usd_per_1000": 1e3 * float(r[:, 0].mean()),
        "cloud_usd_per_1000": 1e3 * float(r[:, 1].mean()),
        "latency_p95_ms": 1e3 * float(np.percentile(r[:, 2], 95)),
        "accuracy": float(r[:, 3].mean()),
        "offloaded": float(sent.mean()),
        "cold_share_of_offloaded": float(r[sent, 5].sum() / offloaded),
        # A FaaS cloud calls a function for every offloaded request, a VM for none.
        "function_call_share_of_offloaded": {"iaas": 0.0, "faas": 1.0}.get(
            env.system.cloud.kind, float(r[sent, 6].sum() / offloaded)
        ),
        "vm_exit_share_of_offloaded": float(r[sent, 7].sum() / offloaded),
    }


@dataclass(frozen=True, kw_only=True)
class Case:
    """One row of the comparison: a scenario at a request rate, a cloud, an action."""

    scenario: object
    cloud: str
    action: tuple[int, int, int]


def plan(args) -> list[Case]:
    """Every (rate, action, cloud) to run, each input checked before any runs: an error
    names the flag and the value."""
    from sim import System, load_scenario

    for flag, value, high in (
        ("--episodes", args.episodes, 1_000),
        ("--requests", args.requests, 100_000),
    ):
        try:
            within(1, high, "every row simulates them all")(value)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}") from None
    base = load_scenario(args.scenario)
    scenarios = []
    for text in args.rates.split(","):
        try:
            rate = float(text)
            scenarios.append(base.with_updates(workload=replace(base.workload, rate_hz=rate)))
        except (ValueError, InputError) as exc:
            raise UsageError(f"--rates {text!r}: {exc}") from None
    clouds = args.clouds.split(",")
    for cloud in clouds:
        try:
            with_cloud = base.with_updates(cloud=cloud)
            with_cloud.check_catalog()
            System(with_cloud)  # a hybrid the scenario cannot run is refused here
        except InputError as exc:
            raise UsageError(f"--clouds {cloud!r}: {exc}") from None
    system = System(base)
    actions = [_action(text, system) for text in args.actions.split(",")]
    return [
        Case(scenario=scenario, cloud=cloud, action=action)
        for scenario in scenarios
        for action in actions
        for cloud in clouds
    ]


def _action(text: str, system) -> tuple[int, int, int]:
    """``cut:threshold index:level``, each within the scenario's grid."""
    parts = text.split(":")
    limits = (system.n_cuts, system.n_thresholds, system.n_levels)
    try:
        values = tuple(int(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or any(not 0 <= v < n for v, n in zip(values, limits, strict=True)):
        raise UsageError(
            f"--actions {text!r}: expected cut:threshold index:level within "
            f"0..{limits[0] - 1}, 0..{limits[1] - 1} and 0..{limits[2] - 1}"
        )
    return values


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: compare(argv))


def compare(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--scenario", type=Path, default=root / "envs/scenarios/hybrid.toml")
    parser.add_argument("--clouds", default="iaas,faas,hybrid", help="catalog cloud names")
    parser.add_argument(
        "--actions",
        default=",".join(a.replace(",", ":") for a in ACTIONS),
        help="cut:threshold index:level, comma-separated",
    )
    parser.add_argument(
        "--rates",
        default="2",
        help="each device's request rates (Hz), comma-separated; the hybrid's split stays "
        "the one chosen for its catalog rate_hz",
    )
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--requests", type=int, default=400, help="requests per episode")
    args = parser.parse_args(argv)
    results = [
        run(case.scenario, case.cloud, case.action, args.episodes, args.requests)
        for case in plan(args)
    ]
    table = Table(title=f"clouds on the same requests ({args.scenario.name})")
    cols = (
        "req/s",
        "action",
        "cloud",
        "$/1k req",
        "cloud $/1k",
        "p95 ms",
        "acc",
        "offload",
        "cold",
        "fn calls",
        "VM exits",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for x in results:
        table.add_row(
            f"{x['rate_hz']:g}",
            ",".join(map(str, x["action"])),
            x["cloud"],
            f"{x['usd_per_1000']:.3g}",
            f"{x['cloud_usd_per_1000']:.3g}",
            f"{x['latency_p95_ms']:.1f}",
            f"{x['accuracy']:.3f}",
            f"{x['offloaded']:.2f}",
            f"{x['cold_share_of_offloaded']:.3f}",
            f"{x['function_call_share_of_offloaded']:.2f}",
            f"{x['vm_exit_share_of_offloaded']:.2f}",
        )
    Console(width=160).print(table)
    payload = {"scenario": str(args.scenario), "episodes": args.episodes, "results": results}
    print("wrote", write("cloud_kinds", payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
