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
``summary.json``, ``sim2real.png`` and the device's own log ``device.jsonl`` into
``--out``, a folder that is new, empty or an earlier run's (nothing else is written
over). ``summary.json`` keeps the errors, accuracies and shares as fractions (0.108 for
10.8 %); the console prints them as percentages. Every argument is checked (the trace
read, the offset within it, the policy against the scenario) before the server starts.
"""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from runtime_hooks.fleet import (
    LONG_FALLBACK,
    MANY_DEVICES,
    MANY_REQUESTS,
    MAX_DEVICES,
    MAX_FALLBACK_S,
)
from runtime_hooks.fleet import MAX_REQUESTS as MAX_FLEET_REQUESTS
from settings.cli import (
    UsageError,
    check_options,
    int_list,
    non_negative,
    option,
    output_dir,
    output_file,
    parse,
    run_cli,
    summary_of,
    within,
)
from settings.cli import seed as seed_range
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
        reader = P.handshake(sock, profile.model_hash)
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


def prepare(args: Sim2RealArgs):
    """The trace, the policy and the scenario, each checked (the offset within the trace,
    the policy against the scenario's model and action grid) before the server starts."""
    from runtime_hooks.device_loop import DEFAULT_POLICY, device_policy
    from runtime_hooks.policy_file import NumpyPolicy
    from sim import System, load_scenario
    from traces.loaders import load_trace

    trace = load_trace(args.trace)
    if args.offset >= trace.duration_s:
        raise UsageError(
            f"--offset {args.offset:g}: past the end of {args.trace} ({trace.duration_s:g} s "
            f"long); give 0 to below {trace.duration_s:g}"
        )
    policy = NumpyPolicy.load(args.policy or DEFAULT_POLICY)
    base = load_scenario(args.scenario)
    system = System(base)
    system.require_single_cloud("sim-to-real (its loopback server is one process)")
    device_policy(policy, system)
    return trace, policy, base


def run(args: Sim2RealArgs) -> dict:
    from envs import OffloadEnv
    from sim import System

    trace, policy, base = prepare(args)
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
        sim_rows, real = run_both(args, env, policy, trace, address, catalog)
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


def run_both(args: Sim2RealArgs, env, policy, trace, address: tuple[str, int], catalog):
    """The episode in the simulator and through the real loop (behind a relay shaping
    the link to ``trace``); the simulator's rows and the real results."""
    from profiles.multiexit import data_for_profile
    from runtime_hooks.device_loop import DeviceLoop
    from runtime_hooks.relay import RelayThread, ShapingRelay

    scenario = env.scenario
    battery = float(np.random.default_rng(args.seed).uniform(0.3, 1.0))
    uplink, radio = env.uplink(trace)
    relay = RelayThread(ShapingRelay(address, uplink, offset_s=args.offset)).start()
    try:
        loop = DeviceLoop.create(
            ("127.0.0.1", relay.port), policy, scenario, radio=radio.name,
            battery_level=battery, battery_sensor=None, catalog=catalog,
            fallback_after_s=args.fallback_after,
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
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "device.jsonl", "w") as log:
            loop.log = log
            real = loop.run(
                test.inputs[samples], test.labels[samples], arrivals, samples, start_at=t0
            )
            loop.close()
    finally:
        relay.stop()
    return sim_rows, real


# The simulated episode must end within SIM_LEAD_S of the device connecting (about
# 8,000 requests a second on a laptop core), and the real one lasts requests / rate_hz
# (10,000 requests: 83 minutes at the built-in 2 a second).
MAX_REQUESTS = 10_000
LONG_RUN = (
    f"the simulated twin must finish within the {SIM_LEAD_S:g} s lead, and the real run "
    "lasts requests / rate"
)
# What a sim2real run writes into --out; a folder of only these, one of them its summary,
# is an earlier run's output and may be written over.
OWN_FILES = ("requests.csv", "summary.json", "sim2real.png", "device.jsonl", "fleet_sim2real.json")
PERCENT_KEYS = {
    "latency_mape",
    "latency_ape_p50",
    "latency_ape_p95",
    "latency_mape_offloaded",
    "latency_mape_local",
    "latency_mape_same_action",
    "sim_accuracy",
    "real_accuracy",
    "sim_offload_fraction",
    "real_offload_fraction",
    "action_agreement",
}


def results_dir(path: Path) -> Path:
    """``--out``: a folder that is absent, empty or an earlier sim2real's output (its
    files are replaced); a file, or a folder holding anything else, is refused: nothing
    the user did not ask to replace is written over."""
    output_dir(path)
    if not path.is_dir():
        return path
    names = sorted(p.name for p in path.iterdir())
    others = [n for n in names if n not in OWN_FILES]
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ValueError(
            f"{path} holds files sim2real does not write ({shown}); name a new "
            "or empty folder, or an earlier sim2real's --out"
        )
    if names and not _earlier_output(path):
        raise ValueError(
            f"{path} holds {', '.join(names)} but no sim2real summary; name a new "
            "or empty folder, or an earlier sim2real's --out"
        )
    return path


def _earlier_output(folder: Path) -> bool:
    """Whether ``folder`` holds a summary this command wrote (one device or a fleet)."""
    for name, keys in (
        ("summary.json", ("latency_mape", "mode")),
        ("fleet_sim2real.json", ("loads", "requests_per_device")),
    ):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and all(k in data for k in keys):
            return True
    return False


def existing_file(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    return path


@dataclass
class Sim2RealArgs:
    """``python -m runtime_hooks.sim2real``'s command line, checked before the server
    starts or anything is written. One device (``--trace``) or fleets (``--fleet``);
    the flags of the other mode are refused rather than ignored."""

    trace: Path | None = option(
        None, "two-column or 5G CSV trace file (one device)", type=Path, check=existing_file
    )
    fleet: list[int] | None = option(
        None,
        "fleet sizes, e.g. 8,32,64 (runtime_hooks.fleet_compare)",
        type=str,
        check=int_list(1, MAX_DEVICES, MANY_DEVICES),
    )
    requests_per_device: int | None = option(
        None,
        "with --fleet (default 60: at 20, an 8-device fleet's 160 requests were too "
        "few to compare offload fractions)",
        type=int,
        check=within(1, MAX_REQUESTS, LONG_RUN),
    )
    json: Path | None = option(
        None,
        "with --fleet: where to write the comparison (default: OUT/fleet_sim2real.json)",
        type=Path,
        check=output_file,
    )
    scenario: Path | None = option(None, "scenario TOML (built-in)", type=Path, check=existing_file)
    requests: int | None = option(
        None,
        "requests of the episode (default 60)",
        type=int,
        check=within(1, MAX_REQUESTS, LONG_RUN),
    )
    seed: int = option(0, "seed of the episode's draws", check=seed_range)
    offset: float | None = option(
        None,
        "seconds into the trace, from 0 to below its length (default 0)",
        type=float,
        check=non_negative,
    )
    policy: Path | None = option(
        None, "policy file (default: shipped)", type=Path, check=existing_file
    )
    replay: bool = option(
        False, "the real loop replays the simulator's actions (latency model alone)"
    )
    out: Path = option(
        Path("runs/sim2real"),
        "folder of the results: new, empty, or an earlier sim2real's (whose files are replaced)",
        type=Path,
    )
    fallback_after: float = option(
        30.0,
        f"seconds before a cloud request falls back, above 0 and at most "
        f"{MAX_FALLBACK_S:g} (large: compare the link, not faults)",
        check=within(0.0, MAX_FALLBACK_S, LONG_FALLBACK, above_low=True),
    )

    def __post_init__(self) -> None:
        check_options(self)
        if self.fleet is not None:
            self._fleet_mode()
        else:
            self._device_mode()

    def _fleet_mode(self) -> None:
        for flag, value in (
            ("--trace", self.trace),
            ("--requests", self.requests),
            ("--offset", self.offset),
        ):
            if value is not None:
                raise UsageError(
                    f"{flag} is for one device; with --fleet the simulator draws "
                    "each device's trace and offset (--requests-per-device)"
                )
        self.requests_per_device = self.requests_per_device or 60
        total = max(self.fleet) * self.requests_per_device
        if total > MAX_FLEET_REQUESTS:
            raise UsageError(
                f"--fleet {max(self.fleet)} x --requests-per-device {self.requests_per_device}"
                f" = {total:,} requests; at most {MAX_FLEET_REQUESTS:,} ({MANY_REQUESTS})"
            )
        if self.json is None:
            self._check_out()

    def _device_mode(self) -> None:
        if self.trace is None:
            raise UsageError("--trace is required (or --fleet for fleets)")
        for flag, value in (
            ("--requests-per-device", self.requests_per_device),
            ("--json", self.json),
        ):
            if value is not None:
                raise UsageError(
                    f"{flag} goes with --fleet; one device writes --out's summary.json"
                )
        self.requests = self.requests or 60
        self.offset = self.offset or 0.0
        self._check_out()

    def _check_out(self) -> None:
        try:
            results_dir(self.out)
        except ValueError as exc:
            raise UsageError(f"--out: {exc}") from None


def print_summary(summary: dict) -> None:
    """One line per figure; the fractions (``summary.json`` keeps them as fractions, 0.108
    for 10.8 %) print as percentages, so that a MAPE reads as one."""
    for key, value in summary.items():
        if key in PERCENT_KEYS and isinstance(value, float):
            text = f"{value:.2%}"
        elif isinstance(value, float):
            text = f"{value:.4g}"
        else:
            text = str(value)
        print(f"{key:>28}: {text}")


def main(argv: list[str] | None = None) -> int:
    def command() -> int:
        args = parse(Sim2RealArgs, argv, summary_of(__doc__))
        if args.fleet is not None:
            from runtime_hooks.fleet_compare import main_fleet

            return main_fleet(args)
        summary = run(args)
        print_summary(summary)
        print(f"wrote {args.out}/requests.csv, summary.json, sim2real.png")
        return 0

    return run_cli(command)


if __name__ == "__main__":
    sys.exit(main())
