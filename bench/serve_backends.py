"""The cloud tail in-process against Ray Serve (1 and 2 replicas), in one run.

    python -m bench.serve_backends [--clients 16] [--seconds 10] [--devices 32]
                                   [--fleet-requests 320] [--device-requests 40]

For each backend the same server (``runtime_hooks.server``, default scenario's model,
``--max-batch 32``) is started and put under three loads, one after the other:

1. closed loop: ``--clients`` connections sending full-model requests (cut 0, JPEG)
   back to back for ``--seconds``: throughput and latency at saturation;
2. the fleet load generator (``runtime_hooks.fleet``): ``--devices`` real device
   loops, each on its own shaped link, every request sent to the cloud (cut 0), at
   the fleet scenario's Poisson rate;
3. the device loop (``runtime_hooks.device``) with the shipped policy on a shaped FCC
   trace on which it sends most requests to the cloud.

Nothing may be lost in any of them. The start-up time of each backend (until the port
accepts requests) is reported too. Writes ``bench/results/serve_backends.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import write
from bench.runtime_speed import server_load
from settings.cli import summary_of

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {
    "in-process": ["--backend", "inprocess"],
    "Ray Serve, 1 replica": ["--backend", "ray", "--replicas", "1"],
    "Ray Serve, 2 replicas": ["--backend", "ray", "--replicas", "2"],
}


def started_in(server_args: list[str]) -> float:
    """Seconds from launching the server to its port accepting requests."""
    from runtime_hooks.sim2real import start_server, stop_server

    t0 = time.perf_counter()
    proc, _ = start_server(*server_args, timeout_s=180.0)
    seconds = time.perf_counter() - t0
    stop_server(proc)
    return seconds


def fleet_load(server_args: list[str], devices: int, requests: int) -> dict:
    from agents.base import FixedPolicy
    from runtime_hooks.fleet import fleet_traces, fleet_workload, run_fleet
    from runtime_hooks.sim2real import start_server, stop_server
    from sim.scenario import load_scenario

    scenario = load_scenario(ROOT / "envs" / "scenarios" / "fleet.toml")
    work = fleet_workload(scenario, fleet_traces(None), devices, requests, seed=0)
    proc, address = start_server(*server_args, timeout_s=180.0)
    try:
        summary = run_fleet(address, work, scenario, FixedPolicy(0, 6, 0), fallback_after_s=30.0)
    finally:
        stop_server(proc)
    summary.pop("results")
    return summary


def device_load(server_args: list[str], requests: int, out: Path) -> dict:
    from runtime_hooks.sim2real import start_server, stop_server

    # On this FCC trace the shipped policy sends about 90% of its requests to the cloud
    # (on some others it answers everything on the device, which measures no backend).
    trace = ROOT / "traces" / "builtin" / "fcc" / "trace_10212_http---www.ebay.com"
    proc, (host, port) = start_server(*server_args, timeout_s=180.0)
    try:
        cmd = [sys.executable, "-m", "runtime_hooks.device", "--server", f"{host}:{port}",
               "--requests", str(requests), "--trace", str(trace), "--json", str(out),
               "--log", str(out.with_suffix(".jsonl"))]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=900)
    finally:
        stop_server(proc)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--devices", type=int, default=32)
    parser.add_argument("--fleet-requests", type=int, default=320)
    parser.add_argument("--device-requests", type=int, default=40)
    args = parser.parse_args(argv)
    results = {}
    for name, server_args in BACKENDS.items():
        print(f"{name} ...", flush=True)
        results[name] = {
            "server_args": server_args,
            "start_s": started_in(server_args),
            "closed_loop": server_load(args.clients, args.seconds, *server_args),
            "fleet": fleet_load(server_args, args.devices, args.fleet_requests),
            "device_loop": device_load(server_args, args.device_requests,
                                       ROOT / "bench" / "results" / "serve_device.json"),
        }  # fmt: skip
    table = Table(title="cloud tail backends (same run, same machine)")
    for col in ("backend", "start (s)", "closed loop req/s", "p99 (ms)", "lost",
                f"fleet {args.devices} dev p50/p99 (ms)", "lost", "device loop p50/p99 (ms)",
                "lost"):  # fmt: skip
        table.add_column(col, justify="right")
    base = results["in-process"]["closed_loop"]["throughput_rps"]
    for name, r in results.items():
        c, f, d = r["closed_loop"], r["fleet"], r["device_loop"]
        table.add_row(
            name, f"{r['start_s']:.1f}",
            f"{c['throughput_rps']:,.0f} ({c['throughput_rps'] / base:.2f}x)",
            f"{c['latency_p99_ms']:.1f}", str(c["lost"]),
            f"{f['latency_p50_ms']:.0f} / {f['latency_p99_ms']:.0f}", str(f["lost"]),
            f"{d['latency_p50_ms']:.0f} / {d['latency_p99_ms']:.0f} "
            f"({d['cloud_answered_fraction']:.0%} cloud)", str(d["lost"]),
        )  # fmt: skip
    console = Console()
    console = console if console.is_terminal else Console(width=180)  # a log: no wrapping
    console.print(table)
    payload = {"clients": args.clients, "seconds": args.seconds, "devices": args.devices,
               "fleet_requests": args.fleet_requests, "device_requests": args.device_requests,
               "backends": results}  # fmt: skip
    print("wrote", write("serve_backends", payload))
    return payload


if __name__ == "__main__":
    main()
