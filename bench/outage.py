"""A server outage under the default scenario: what the device answers while the cloud
is gone, and whether it goes back to the cloud when the server returns.

    python -m bench.outage [--requests 600] [--kill-at 3] [--restart-at 60] [--json F]

A real server process; the device loop as ``runtime_hooks.device`` runs it (the
shipped policy, the default scenario's micro-controller speed emulated, Poisson
arrivals at 2/s, test images, seed 0), over loopback. The server is killed
``--kill-at`` seconds into the run; with ``--restart-at`` it starts again on the same
port at that time. Reported per phase (before the kill, while down, after the
restart): requests, accuracy, share answered by the cloud, share of the policy's
actions that asked for the cloud, the mean block whose exit answered on the device,
deadline misses; and how long after the restart the first cloud answer came.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.common import write
from settings.cli import summary_of


@dataclass
class Events:
    kill_s: float
    restart_s: float | None = None
    listening_s: float | None = None  # when the restarted server listened


def _phase(results: list, k: int) -> dict:
    if not results:
        return {"requests": 0}
    local_exits = [r.exit_block for r in results if r.path in ("fallback", "exit", "local")]
    return {
        "requests": len(results),
        "accuracy": float(np.mean([r.correct for r in results])),
        "cloud_answered": float(np.mean([r.path == "cloud" for r in results])),
        "policy_asked_cloud": float(np.mean([r.cut < k for r in results])),
        "mean_device_exit_block": float(np.mean(local_exits)) if local_exits else None,
        "device_exit_blocks": {str(b): local_exits.count(b) for b in sorted(set(local_exits))},
        "deadline_miss_rate": float(np.mean([r.deadline_miss for r in results])),
        "latency_p95_ms": float(np.percentile([r.latency_s for r in results], 95) * 1e3),
        "fallbacks": {
            reason: sum(r.fallback == reason for r in results)
            for reason in sorted({r.fallback for r in results if r.fallback})
        },
    }


def run(requests: int, kill_at: float, restart_at: float | None, seed: int = 0) -> dict:
    from profiles.dataset import load_official
    from runtime_hooks.device_loop import DeviceLoop
    from runtime_hooks.sim2real import start_server, stop_server

    test = load_official("test")
    rng = np.random.default_rng(seed)  # the device CLI's draw: images, then arrivals
    samples = rng.integers(len(test.labels), size=requests)
    arrivals = np.cumsum(rng.exponential(1.0 / 2.0, requests))
    proc, address = start_server()
    loop = DeviceLoop.create(address, battery_sensor=None)
    events = Events(kill_at, restart_at)
    start = time.monotonic() + 0.5
    box: dict = {"proc": proc}

    def outage() -> None:
        time.sleep(max(start + kill_at - time.monotonic(), 0.0))
        box["proc"].kill()
        box["proc"].wait()
        if restart_at is not None:
            time.sleep(max(start + restart_at - time.monotonic(), 0.0))
            box["proc"], _ = start_server("--port", str(address[1]))
            events.listening_s = time.monotonic() - start

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    try:
        results = loop.run(
            test.images[samples], test.labels[samples], arrivals, samples, start_at=start
        )
    finally:
        loop.close()
        thread.join()
        stop_server(box["proc"])
    k = loop.k
    back = events.listening_s if restart_at is not None else None
    before = [r for r in results if r.arrival_s < kill_at]
    down = [r for r in results if r.arrival_s >= kill_at and (back is None or r.arrival_s < back)]
    after = [r for r in results if back is not None and r.arrival_s >= back]
    first_cloud = next((r.arrival_s + r.latency_s for r in after if r.path == "cloud"), None)
    return {
        "requests": requests,
        "answered": len(results),
        "lost": requests - len(results),
        "accuracy": float(np.mean([r.correct for r in results])),
        "kill_at_s": kill_at,
        "restart_at_s": restart_at,
        "server_listening_again_at_s": back,
        "first_cloud_answer_after_restart_s": None
        if first_cloud is None
        else round(first_cloud - back, 3),
        "phases": {"before": _phase(before, k), "down": _phase(down, k), "after": _phase(after, k)},
    }


def print_report(name: str, out: dict, console: Console) -> None:
    table = Table(title=f"{name}: {out['requests']} requests, {out['lost']} lost, "
                  f"accuracy {out['accuracy']:.3f}", title_justify="left")  # fmt: skip
    cols = ["phase", "requests", "accuracy", "cloud answered", "policy asked cloud",
            "device exit block", "miss", "p95 ms", "fallbacks"]  # fmt: skip
    for c in cols:
        table.add_column(c, justify="left" if c in ("phase", "fallbacks") else "right")
    for phase, r in out["phases"].items():
        if not r["requests"]:
            continue
        exit_block = r["mean_device_exit_block"]
        table.add_row(
            phase, str(r["requests"]), f"{r['accuracy']:.3f}", f"{r['cloud_answered']:.2f}",
            f"{r['policy_asked_cloud']:.2f}", "-" if exit_block is None else f"{exit_block:.2f}",
            f"{r['deadline_miss_rate']:.3f}", f"{r['latency_p95_ms']:.0f}", str(r["fallbacks"]),
        )  # fmt: skip
    console.print(table)
    if out["restart_at_s"] is not None:
        console.print(
            f"server listening again at {out['server_listening_again_at_s']:.1f} s; first "
            f"cloud answer {out['first_cloud_answer_after_restart_s']} s later"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--kill-at", type=float, default=3.0)
    parser.add_argument("--restart-requests", type=int, default=240)
    parser.add_argument("--restart-at", type=float, default=60.0)
    args = parser.parse_args(argv)
    console = Console(width=150)
    killed = run(args.requests, args.kill_at, None)
    print_report("server killed", killed, console)
    restarted = run(args.restart_requests, args.kill_at, args.restart_at)
    print_report("server killed, then restarted", restarted, console)
    path = write("outage", {"killed": killed, "killed_then_restarted": restarted})
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
