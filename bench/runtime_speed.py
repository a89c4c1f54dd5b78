"""Runtime benchmarks: controller decisions, server under load, device-loop memory.

    python -m bench.runtime_speed [--observations 5000] [--clients 32] [--seconds 10]

1. Controller decision time (exported numpy policy + observation builder) against
   SB3 ``model.predict`` on the same observations, in the same run, warm (back to
   back) and as the device loop sees it (one decision per request, with the process
   idle in between).
2. Server throughput and latency with ``--clients`` concurrent device connections on
   loopback, each sending requests back to back for ``--seconds``; nothing may be lost.
3. The controller's share of a request's time in the device loop, at the scenario
   device's speed and at the host's.
4. Memory: resident memory a fresh Python process gains by importing the controller
   and loading the exported policy (and whether torch or SB3 got imported), and the
   device loop's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench.common import write
from settings.cli import summary_of

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "runs" / "default" / "policy.npz"


def _percentiles_us(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def controller_vs_sb3(n: int) -> dict:
    from runtime_hooks.controller import BatteryMonitor, Controller
    from runtime_hooks.export import env_observations, export_run

    _, ppo, env = export_run(ROOT / "runs" / "default")
    observations = env_observations(env, n, seed=1)
    ctl = Controller.from_policy_file(POLICY, "lte", BatteryMonitor(1000.0, sensor=None))
    policy = ctl.policy
    model, normalizer = ppo.model, ppo.normalizer
    for o in observations[:200]:  # warm both
        policy.act(o)
        model.predict(normalizer(o), deterministic=True)
    # Each in its own pass over the observations, so that one does not evict the
    # other's working set from the caches between calls.
    decide, act, sb3 = [], [], []
    tel = ctl.telemetry
    for o in observations:
        tel.battery_level = float(o[6])  # vary the telemetry as the observations do
        t = time.perf_counter()
        ctl.decide(0.01, 0)
        decide.append(time.perf_counter() - t)
    for o in observations:
        t = time.perf_counter()
        policy.act(o)
        act.append(time.perf_counter() - t)
    for o in observations:
        t = time.perf_counter()
        model.predict(normalizer(o), deterministic=True)
        sb3.append(time.perf_counter() - t)
    idle, sb3_idle = [], []  # one decision per 20 ms, as in a loop at tens of requests/s
    for o in observations[:200]:
        time.sleep(0.02)
        t = time.perf_counter()
        ctl.decide(0.01, 0)
        idle.append(time.perf_counter() - t)
        time.sleep(0.02)
        t = time.perf_counter()
        model.predict(normalizer(o), deterministic=True)
        sb3_idle.append(time.perf_counter() - t)
    c_warm, c_idle = c_policy_calls(observations)
    d50, d99 = _percentiles_us(decide)
    a50, a99 = _percentiles_us(act)
    s50, s99 = _percentiles_us(sb3)
    i50, i99 = _percentiles_us(idle)
    j50, j99 = _percentiles_us(sb3_idle)
    return {
        "observations": n,
        "controller_decide_p50_us": d50,
        "controller_decide_p99_us": d99,
        "numpy_policy_act_p50_us": a50,
        "numpy_policy_act_p99_us": a99,
        "sb3_predict_p50_us": s50,
        "sb3_predict_p99_us": s99,
        "speedup_p50": s50 / d50,
        "speedup_p99": s99 / d99,
        "controller_decide_after_idle_p50_us": i50,
        "controller_decide_after_idle_p99_us": i99,
        "sb3_predict_after_idle_p50_us": j50,
        "sb3_predict_after_idle_p99_us": j99,
        **c_warm,
        **c_idle,
    }


def c_policy_calls(observations: np.ndarray) -> tuple[dict, dict]:
    """The shipped policy in C (``runtime_hooks.c_policy``, float32, ``-O2``) called from
    Python through ``ctypes``: warm, and after 20 ms idle; empty without a C compiler."""
    import ctypes
    import shutil
    import tempfile

    from bench.c_policy_speed import c_library
    from runtime_hooks.c_policy import write_c_policy
    from runtime_hooks.policy_file import NumpyPolicy

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        _, source, _ = write_c_policy(NumpyPolicy.load(POLICY), tmp)
        c = c_library(compiler, source)
        obs = np.ascontiguousarray(observations, np.float32)
        pointers = [row.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) for row in obs]
        action = (ctypes.c_int * 3)()
        warm, idle = [], []
        for p in pointers:
            t = time.perf_counter()
            c.splitctl_decide(p, action)
            warm.append(time.perf_counter() - t)
        for p in pointers[:200]:
            time.sleep(0.02)
            t = time.perf_counter()
            c.splitctl_decide(p, action)
            idle.append(time.perf_counter() - t)
    w50, w99 = _percentiles_us(warm)
    i50, i99 = _percentiles_us(idle)
    return (
        {"c_policy_ctypes_p50_us": w50, "c_policy_ctypes_p99_us": w99},
        {"c_policy_ctypes_after_idle_p50_us": i50, "c_policy_ctypes_after_idle_p99_us": i99},
    )


def server_load(clients: int, seconds: float, *server_args: str) -> dict:
    """``clients`` connections sending full-model requests back to back for
    ``seconds`` to a server started with ``server_args``."""
    from profiles import codecs
    from profiles.dataset import load_official
    from profiles.profile_io import load_profile
    from runtime_hooks import protocol as P
    from runtime_hooks.sim2real import start_server, stop_server

    model_hash = load_profile().model_hash
    images = load_official("test").images[:64]
    frames = [
        P.request_frame(0, 0, 3, "jpeg70", (28, 28), codecs.encode("jpeg70", im)) for im in images
    ]
    proc, address = start_server(*server_args, timeout_s=180.0)
    sent, answered, latencies, errors = [0] * clients, [0] * clients, [], []
    stop = time.monotonic() + seconds

    def device(i: int) -> None:
        try:
            with socket.create_connection(address, timeout=10.0) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader = P.handshake(sock, model_hash)
                mine = []
                while time.monotonic() < stop:
                    rid = sent[i] + 1
                    frame = bytearray(frames[rid % len(frames)])
                    frame[8:16] = rid.to_bytes(8, "little")
                    t = time.perf_counter()
                    sock.sendall(frame)
                    sent[i] += 1
                    header, _ = reader.read(10.0)
                    if header.kind == P.ANSWER and header.request_id == rid:
                        answered[i] += 1
                        mine.append(time.perf_counter() - t)
                latencies.extend(mine)
        except Exception as exc:  # reported, not hidden
            errors.append(repr(exc))

    try:
        threads = [threading.Thread(target=device, args=(i,)) for i in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
    finally:
        stop_server(proc)
    lat = np.asarray(latencies) * 1e3
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests_sent": sum(sent),
        "answers": sum(answered),
        "lost": sum(sent) - sum(answered),
        "errors": errors,
        "throughput_rps": sum(answered) / elapsed,
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "request": "cut 0, jpeg70 (level 3): the full model in the cloud",
    }


def device_loop_run(host_speed: bool, requests: int) -> dict:
    """The device CLI on a shaped FCC trace; its summary (share, peak memory)."""
    from runtime_hooks.sim2real import start_server, stop_server

    trace = sorted((ROOT / "traces" / "builtin" / "fcc").iterdir())[1]
    proc, (host, port) = start_server()
    out = ROOT / "bench" / "results" / "device_summary.json"
    try:
        cmd = [sys.executable, "-m", "runtime_hooks.device", "--server", f"{host}:{port}",
               "--requests", str(requests), "--rate", "4", "--trace", str(trace),
               "--json", str(out), "--log", str(out.with_suffix(".jsonl"))]  # fmt: skip
        if host_speed:
            cmd.append("--host-speed")
        subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    finally:
        stop_server(proc)
    return json.loads(out.read_text())


MEMORY_PROBE = """
import json, sys, psutil
p = psutil.Process(); before = p.memory_info().rss
from runtime_hooks.controller import BatteryMonitor, Controller
c = Controller.from_policy_file(sys.argv[1], "lte", BatteryMonitor(1000.0))
c.decide()
print(json.dumps({"added_mb": (p.memory_info().rss - before) / 2**20,
                  "imports_torch": "torch" in sys.modules,
                  "imports_sb3": "stable_baselines3" in sys.modules}))
"""


def controller_memory() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(POLICY)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--observations", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device-requests", type=int, default=60)
    parser.add_argument(
        "--decisions-only",
        action="store_true",
        help="only the decision times (controller, C policy, SB3)",
    )
    args = parser.parse_args(argv)
    console = Console()
    decisions = controller_vs_sb3(args.observations)
    if args.decisions_only:
        console.print_json(json.dumps(decisions))
        print("wrote", write("runtime_decisions", {"decisions": decisions}))
        return {"decisions": decisions}
    load = server_load(args.clients, args.seconds)
    mcu = device_loop_run(False, args.device_requests)
    host = device_loop_run(True, args.device_requests)
    memory = controller_memory()

    t = Table(title="controller decision vs SB3 predict (same observations, same run)")
    for col in ("", "p50 (us)", "p99 (us)"):
        t.add_column(col, justify="right")
    d = decisions
    t.add_row(
        "Controller.decide",
        f"{d['controller_decide_p50_us']:.1f}",
        f"{d['controller_decide_p99_us']:.1f}",
    )
    t.add_row(
        "NumpyPolicy.act",
        f"{d['numpy_policy_act_p50_us']:.1f}",
        f"{d['numpy_policy_act_p99_us']:.1f}",
    )
    t.add_row(
        "SB3 model.predict", f"{d['sb3_predict_p50_us']:.1f}", f"{d['sb3_predict_p99_us']:.1f}"
    )
    t.add_row("speed-up", f"{d['speedup_p50']:.1f}x", f"{d['speedup_p99']:.1f}x")
    t.add_row("decide after 20 ms idle", f"{d['controller_decide_after_idle_p50_us']:.1f}",
              f"{d['controller_decide_after_idle_p99_us']:.1f}")  # fmt: skip
    t.add_row("SB3 predict after 20 ms idle", f"{d['sb3_predict_after_idle_p50_us']:.1f}",
              f"{d['sb3_predict_after_idle_p99_us']:.1f}")  # fmt: skip
    console.print(t)
    console.print(
        f"server, {load['clients']} clients for {load['seconds']:.1f} s: "
        f"{load['throughput_rps']:,.0f} req/s, p50 {load['latency_p50_ms']:.2f} ms, "
        f"p99 {load['latency_p99_ms']:.2f} ms, sent {load['requests_sent']}, "
        f"lost {load['lost']}, errors {len(load['errors'])}"
    )
    console.print(
        f"controller share of request time: {mcu['controller_share_of_latency']:.3%} at the "
        f"scenario device's speed, {host['controller_share_of_latency']:.3%} at host speed"
    )
    console.print(
        f"controller + policy: +{memory['added_mb']:.1f} MB resident, torch imported: "
        f"{memory['imports_torch']}, SB3 imported: {memory['imports_sb3']}; device loop "
        f"peak resident memory {mcu['peak_rss_mb']:.0f} MB"
    )
    payload = {
        "decisions": decisions,
        "server_load": load,
        "device_loop_emulated": mcu,
        "device_loop_host_speed": host,
        "controller_memory": memory,
    }
    print("wrote", write("runtime_speed", payload))
    return payload


if __name__ == "__main__":
    main()
