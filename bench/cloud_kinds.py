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
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.common import write
from settings.cli import summary_of

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


def main(argv: list[str] | None = None) -> dict:
    from sim import load_scenario

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
    base = load_scenario(args.scenario)
    actions = [tuple(int(v) for v in a.split(":")) for a in args.actions.split(",")]
    results = [
        run(
            base.with_updates(workload=replace(base.workload, rate_hz=float(rate))),
            cloud,
            action,
            args.episodes,
            args.requests,
        )
        for rate in args.rates.split(",")
        for action in actions
        for cloud in args.clouds.split(",")
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
    return payload


if __name__ == "__main__":
    main()
