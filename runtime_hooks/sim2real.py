"""The same requests through the simulator and the real loop, compared.

    python -m runtime_hooks.sim2real --trace FILE [--scenario S] [--requests 60] [--seed 0]
        [--policy runs/default/policy.npz] [--out runs/sim2real]
    python -m runtime_hooks.sim2real --fleet 8,32,64 --json F   (see runtime_hooks.fleet_compare)

One episode of the scenario (default: built-in) on ``FILE`` (from ``--offset`` seconds in): the
simulator draws the arrivals, the test images and the battery level from ``--seed``.
The real run serves the very same images at the very same arrival times with the
same policy, and the simulated device starts from the telemetry the real one measured
when it connected (its RTT ping and throughput probe): a
cloud server process on loopback, the device loop at the scenario device's speed,
and a relay that shapes the link to the same uplink trace and RTT. Both sides model
the server as what it is here (this host: the profile's host times, no cold start),
so the comparison isolates what the simulator abstracts away: the network stack, the
relay's scheduling, the server's real batching and Python overheads, codec times, and
the controller's own telemetry (its throughput estimates come from measured uploads,
the simulator's from exact ones, so actions can diverge).

``--replay`` makes the real loop take the simulator's actions instead of asking the
policy, which measures the latency model alone.

Reports per request and overall: latency error (MAPE, p50/p95 of the absolute
percentage error), accuracy on both sides, action agreement; writes ``requests.csv``,
``summary.json``, ``sim2real.png`` and the device's own log ``device.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sim import metrics

LOOPBACK_CLOUD = "loopback"
SIM_LEAD_S = 3.0  # the simulated episode runs between connecting and the real start


def loopback_setup(scenario, overhead_s: float = 0.0):
    """The scenario and catalog for a server on this host: the scenario's cloud, with
    speed-up 1 (the profile's host times), ``overhead_s`` per request, no cold start."""
    from profiles.catalog import load_catalog

    catalog = load_catalog(scenario.catalog)
    cloud = replace(
        catalog.cloud(scenario.cloud),
        name=LOOPBACK_CLOUD,
        description="the runtime's own server process on this host",
        speedup=1.0,
        overhead_s=overhead_s,
        cold_start_s=0.0,
    )
    catalog = replace(catalog, clouds={**catalog.clouds, LOOPBACK_CLOUD: cloud})
    return scenario.with_updates(cloud=LOOPBACK_CLOUD), catalog


class ReplayActions:
    """A policy that plays back a fixed sequence of actions (``--replay``): the real
    loop then takes the simulator's actions, which isolates the latency model's error
    from the policy's reaction to measured (not exact) telemetry."""

    name = "replay"

    def __init__(self, actions: list[tuple[int, int, int]]) -> None:
        self.actions, self.i = list(actions), 0

    def act(self, observation) -> np.ndarray:
        action = self.actions[min(self.i, len(self.actions) - 1)]
        self.i += 1
        return np.array(action, dtype=np.int64)


def measure_server_overhead(address: tuple[str, int], tail_s: float, profile, n: int = 30) -> float:
    """Seconds a loopback request to the server takes beyond the model's tail time
    (framing, decoding, batching, thread hand-off, TCP): the median of ``n`` requests
    of a zero input at cut 0, level 0, over a direct connection, less ``tail_s``."""
    import socket

    from profiles import codecs
    from runtime_hooks import protocol as P

    dtype = np.uint8 if profile.input_kind == "image" else np.float32
    sample = np.zeros(profile.input_shape, dtype)
    codec = profile.codec_name(0, 0)
    payload = codecs.encode(codec, sample)
    times = []
    with socket.create_connection(address, timeout=5.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = P.FrameReader(sock)
        for i in range(n):
            t = time.perf_counter()
            sock.sendall(P.request_frame(i + 1, 0, 0, codec, sample.shape, payload))
            header, _ = reader.read(5.0)
            if header.kind != P.ANSWER:
                raise RuntimeError(f"server answered a calibration request with {header}")
            times.append(time.perf_counter() - t)
    return max(float(np.median(times)) - tail_s, 0.0)


def simulate(
    env, policy, trace, seed: int, battery_level: float, telemetry=None, offset_s: float = 0.0
):
    """Run the episode in the simulator (from the device's measured ``telemetry`` when
    given); per-request rows plus the arrivals and samples it drew."""
    options = {"trace": trace, "offset_s": offset_s, "battery_level": battery_level}
    if telemetry is not None:
        options["telemetry"] = telemetry
    obs, _ = env.reset(seed=seed, options=options)
    st = env.state
    arrivals, samples = list(st.arrivals), list(st.samples)
    rows = []
    done = False
    while not done:
        action = np.asarray(policy.act(obs), dtype=np.int64)
        obs, _, terminated, truncated, info = env.step(action)
        rows.append({**info, "action": tuple(int(v) for v in action)})
        done = terminated or truncated
    return rows, np.array(arrivals), np.array(samples)


def start_server(
    *extra_args: str, timeout_s: float = 60.0
) -> tuple[subprocess.Popen, tuple[str, int]]:
    """A cloud server process on a free loopback port (``extra_args``: server flags)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime_hooks.server", "--port", "0", *extra_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if line.startswith("listening on"):
            host, port = line.split()[-1].rsplit(":", 1)
            return proc, (host, int(port))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the cloud server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    if proc.poll() is None:
        proc.kill()


SIM_FIELDS = ("latency_s", "correct", "offloaded", "deadline_miss")
COMPARED = ("latency_p50_ms", "latency_p95_ms", "accuracy", "offload_fraction")


def compare(sim_rows: list[dict], real: list) -> dict:
    """Latency error, accuracy and action agreement of two runs of the same requests."""
    sim_lat = np.array([r["latency_s"] for r in sim_rows])
    real_lat = np.array([r.latency_s for r in real])
    ape = np.abs(real_lat - sim_lat) / sim_lat
    offloaded = np.array([r["offloaded"] for r in sim_rows])
    same_action = np.array(
        [r["action"] == (x.cut, x.threshold, x.level) for r, x in zip(sim_rows, real, strict=True)]
    )

    def mape(mask) -> float | None:
        return float(ape[mask].mean()) if mask.any() else None

    fields = [k for k in SIM_FIELDS if sim_rows and k in sim_rows[0]]
    sim = metrics.summarise({k: np.array([r[k] for r in sim_rows]) for k in fields})
    got = metrics.summarise(metrics.records_of_results(real))
    return {
        "requests": len(real),
        "latency_mape": float(ape.mean()),
        "latency_ape_p50": float(np.percentile(ape, 50)),
        "latency_ape_p95": float(np.percentile(ape, 95)),
        "latency_mape_offloaded": mape(offloaded),
        "latency_mape_local": mape(~offloaded),
        "latency_mape_same_action": mape(same_action),
        **{
            f"{side}_{key}": summary[key]
            for key in COMPARED
            for side, summary in (("sim", sim), ("real", got))
        },
        "action_agreement": float(same_action.mean()),
        "real_fallbacks": sum(got["fallbacks"].values()),
    }


def plot(sim_rows: list[dict], real: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim_ms = np.array([r["latency_s"] for r in sim_rows]) * 1e3
    real_ms = np.array([r.latency_s for r in real]) * 1e3
    off = np.array([r["offloaded"] for r in sim_rows])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    hi = max(sim_ms.max(), real_ms.max()) * 1.05
    ax1.plot([0, hi], [0, hi], color="grey", lw=1, label="real = simulated")
    ax1.scatter(sim_ms[off], real_ms[off], s=14, label="offloaded (simulator)")
    ax1.scatter(sim_ms[~off], real_ms[~off], s=14, marker="x", label="on the device")
    ax1.set(xlabel="simulated latency (ms)", ylabel="measured latency (ms)", title="per request")
    ax1.legend()
    t = np.arange(len(sim_ms))
    ax2.plot(t, sim_ms, label="simulator", lw=1.2)
    ax2.plot(t, real_ms, label="real loop", lw=1.2, ls="--")
    ax2.set(xlabel="request", ylabel="latency (ms)", title="over the episode")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_requests(path: Path, sim_rows: list[dict], real: list) -> None:
    """One CSV row per request: the simulator's and the real loop's action, latency,
    path and correctness side by side."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["request", "sim_action", "real_action", "sim_latency_ms", "real_latency_ms",
                    "sim_offloaded", "real_path", "sim_correct", "real_correct"])  # fmt: skip
        for i, (s, r) in enumerate(zip(sim_rows, real, strict=True)):
            w.writerow([
                i, "/".join(map(str, s["action"])), f"{r.cut}/{r.threshold}/{r.level}",
                f"{s['latency_s'] * 1e3:.3f}", f"{r.latency_s * 1e3:.3f}", s["offloaded"],
                r.path, s["correct"], r.correct,
            ])  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    from envs import OffloadEnv
    from profiles.multiexit import data_for_profile
    from runtime_hooks.device_loop import DEFAULT_POLICY, DeviceLoop
    from runtime_hooks.policy_file import NumpyPolicy
    from runtime_hooks.relay import RelayThread, ShapingRelay
    from sim import System, load_scenario
    from traces.loaders import load_trace

    trace = load_trace(args.trace)
    policy = NumpyPolicy.load(args.policy or DEFAULT_POLICY)
    base = load_scenario(args.scenario)
    extra = ("--scenario", str(args.scenario)) if args.scenario else ()
    proc, address = start_server(*extra)
    try:
        scenario, catalog = loopback_setup(base)
        # The loopback cloud's overhead is measured, as one would calibrate a cloud
        # offer's ``overhead_s`` in the catalog; the relay's own overhead is not.
        system = System(scenario, catalog=catalog)
        overhead_s = measure_server_overhead(address, system.cloud_tail_s[0], system.profile)
        scenario, catalog = loopback_setup(base, overhead_s)
        env = OffloadEnv(
            scenario, [trace], sample_split="test", episode_requests=args.requests,
            catalog=catalog,
        )  # fmt: skip
        battery = float(np.random.default_rng(args.seed).uniform(0.3, 1.0))
        uplink, radio = env.uplink(trace)
        relay = RelayThread(ShapingRelay(address, uplink, offset_s=args.offset)).start()
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            log = open(args.out / "device.jsonl", "w")  # noqa: SIM115 (closed below)
            loop = DeviceLoop.create(
                ("127.0.0.1", relay.port), policy, scenario, radio=radio.name,
                battery_level=battery, battery_sensor=None, catalog=catalog,
                fallback_after_s=args.fallback_after, log=log,
            )  # fmt: skip
            test = data_for_profile(loop.system.profile, loop.spec, scenario.data)["test"]
            # The device connects first (RTT ping, throughput probe); the simulated
            # device starts from exactly what it measured, so both begin alike.
            relay.relay.start_clock()
            loop.connect()
            t0 = time.monotonic() + SIM_LEAD_S  # the real episode starts then
            measured = loop.controller.telemetry.relative_to(t0)
            sim_rows, arrivals, samples = simulate(
                env, policy, trace, args.seed, battery, measured, args.offset
            )
            if time.monotonic() > t0:
                raise RuntimeError(f"the simulation took longer than {SIM_LEAD_S} s")
            if args.replay:
                loop.controller.policy = ReplayActions([r["action"] for r in sim_rows])
            relay.relay.start_clock(t0)
            real = loop.run(
                test.inputs[samples], test.labels[samples], arrivals, samples, start_at=t0
            )
            loop.close()
            log.close()
        finally:
            relay.stop()
    finally:
        stop_server(proc)
    summary = {
        "trace": str(args.trace),
        "offset_s": args.offset,
        "seed": args.seed,
        "server_overhead_ms": overhead_s * 1e3,
        "mode": "replayed simulator actions" if args.replay else "closed loop (policy)",
        **compare(sim_rows, real),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_requests(args.out / "requests.csv", sim_rows, real)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(sim_rows, real, args.out / "sim2real.png",
         f"{trace.family}/{trace.name}: latency MAPE {summary['latency_mape']:.1%}, "
         f"actions agree {summary['action_agreement']:.0%}")  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", help="two-column or 5G CSV trace file (one device)")
    parser.add_argument("--fleet", help="fleet sizes, e.g. 8,32,64 (runtime_hooks.fleet_compare)")
    parser.add_argument(
        "--requests-per-device", type=int, default=60,
        help="with --fleet (at 20, an 8-device fleet's 160 requests were too few to "
        "compare offload fractions)",
    )  # fmt: skip
    parser.add_argument("--json", help="with --fleet: where to write the comparison")
    parser.add_argument("--scenario", type=Path, default=None, help="scenario TOML (built-in)")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--offset", type=float, default=0.0, help="seconds into the trace")
    parser.add_argument("--policy", default=None, help="policy file (default: shipped)")
    parser.add_argument(
        "--replay", action="store_true",
        help="the real loop replays the simulator's actions (latency model alone)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/sim2real"))
    parser.add_argument(
        "--fallback-after", type=float, default=30.0,
        help="seconds before a cloud request falls back (large: compare the link, not faults)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.fleet:
        from runtime_hooks.fleet_compare import main_fleet

        return main_fleet(args)
    if not args.trace:
        parser.error("--trace is required (or --fleet for a fleet)")
    summary = run(args)
    for key, value in summary.items():
        print(f"{key:>28}: {value:.4g}" if isinstance(value, float) else f"{key:>28}: {value}")
    print(f"wrote {args.out}/requests.csv, summary.json, sim2real.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
