"""A real fleet: N device loops in one process against one real cloud server.

    python -m runtime_hooks.fleet --server HOST:PORT --devices N --requests R
        [--policy P] [--trace-dir D] [--scenario S] [--seed 0] [--json F]

Each device is a real ``DeviceLoop`` (the real model's head on real test images, real
early exits, real codecs, the device's speed emulated by padding its compute) behind
its own link shaped to a real trace (``runtime_hooks.relay``), all talking to one
server (start it with ``--workers W --max-batch B``, and ``--emulate-cloud`` to keep
the scenario cloud's time: two cores cannot be the serving tier a fleet saturates).
``R`` is the fleet's total: each device serves ``R / N`` requests. What each device
serves (its trace, offset, arrival times, images and battery) is what the simulator's
``OffloadFleet-v0`` draws for the same seed, so ``runtime_hooks.sim2real --fleet``
can compare the two.

The devices share one process, one model and one copy of every table (64 torch
processes would not fit); each runs in its own thread, which sleeps while its
emulated device computes. A device that loses its server falls back to a local
answer in time (counted per reason); every request is accounted for: ``answered`` +
``lost`` = ``requests``, a request whose device thread failed being ``lost`` with
the error in ``errors``.

JSON: ``devices``, ``requests``, ``answered``, ``lost``, ``latency_p50_ms``,
``latency_p95_ms``, ``latency_p99_ms``, ``throughput_rps``, ``server_queue_p95_ms``,
``deadline_miss_rate``, ``accuracy``, ``cloud_answers``, ``fallbacks`` (by reason),
``errors``.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime_hooks.device_loop import policy_choice
from settings.cli import (
    UsageError,
    check_options,
    option,
    output_file,
    parse,
    run_cli,
    summary_of,
    within,
)
from settings.cli import seed as seed_range
from settings.tables import InputError
from sim import metrics

FDS_PER_DEVICE = 4  # the device's socket, the relay's two ends, the relay's listener
# One process serves the whole fleet: each device is a thread with its own shaped relay
# (4 open files), and the devices start 2 s + 50 ms a device after connecting.
MAX_DEVICES = 1024
MANY_DEVICES = "one process runs every device: a thread, a shaped relay and 4 open files each"
# Every answer stays in memory for the summary (a result and a copy of its input, about
# 2 KB), and at 2 requests a second a device, 100,000 requests of 8 devices is ~2 hours.
MAX_REQUESTS = 100_000
MANY_REQUESTS = "every answer stays in memory for the summary, and the run lasts hours"
# The fleet waits for its devices 60 s past the last arrival: a longer wait before the
# local fallback would report a device as stuck instead of falling back.
MAX_FALLBACK_S = 60.0
LONG_FALLBACK = "the fleet waits 60 s past the last arrival for its devices"


@dataclass
class DeviceWork:
    """What one device of the fleet serves."""

    trace: object  # the uplink as its radio sees it
    radio: object
    offset_s: float
    arrivals_s: np.ndarray
    samples: np.ndarray
    battery_level: float


def fleet_workload(scenario, traces, devices: int, requests: int, seed: int) -> list[DeviceWork]:
    """Each device's share of ``requests`` (the fleet's total), drawn as
    ``OffloadFleet-v0`` draws it for ``seed`` on the test images."""
    from envs.fleet_env import OffloadFleetEnv

    per = [requests // devices + (1 if d < requests % devices else 0) for d in range(devices)]
    fleet = OffloadFleetEnv(devices, scenario, list(traces), trace_split=None,
                            sample_split="test", episode_requests=max(max(per), 1))  # fmt: skip
    fleet.reset(seed=seed)
    cap = fleet.system.battery_capacity_j
    states = [fleet.device_state(d) for d in range(devices)]
    return [
        DeviceWork(
            st.trace,
            st.radio,
            st.offset_s,
            np.asarray(st.arrivals[: per[d]]),
            np.asarray(st.samples[: per[d]]),
            st.battery_j / cap,
        )  # fmt: skip
        for d, st in enumerate(states)
    ]


def ensure_file_descriptors(devices: int) -> None:
    """Raise the soft limit on open files if the fleet needs it; refuse, naming the
    limit, when even the hard limit is too low."""
    need = FDS_PER_DEVICE * devices + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise InputError(
                f"--devices {devices}: needs about {need} open files, but this process may "
                f"open at most {hard} (ulimit -n); use fewer devices or raise the limit"
            )
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        except (ValueError, OSError) as exc:
            raise InputError(
                f"--devices {devices}: needs about {need} open files; raising the limit "
                f"failed ({exc}); use fewer devices or raise ulimit -n"
            ) from None


def run_fleet(
    server: tuple[str, int], work: list[DeviceWork], scenario, policy=None,
    fallback_after_s: float | None = None, lead_s: float | None = None,
    started: threading.Event | None = None, before_start=None,
) -> dict:  # fmt: skip
    """Run every device's work against ``server`` with ``policy`` (a policy file, any
    object with ``act``, or a list of them, one per device); returns the summary (see
    the module's JSON) and, under ``results``, each device's ``RequestResult`` list.
    Every device connects first (an RTT ping and a throughput probe through its shaped
    link); ``before_start(telemetry, t0)``, when given, is then told what each one
    measured (times relative to ``t0``, when the devices' first requests are due)."""
    import torch

    from profiles.multiexit import data_for_profile
    from runtime_hooks.device_loop import device_policy, torch_head
    from runtime_hooks.relay import RelayThread, ShapingRelay
    from sim import System

    ensure_file_descriptors(len(work))
    torch.set_num_threads(1)
    system = System(scenario)
    head, bottlenecks, spec = torch_head(system, scenario)  # one model for every device
    test = data_for_profile(system.profile, spec, scenario.data)["test"]
    # One policy for every device, or one each (a list: e.g. replayed actions); a
    # heuristic is built for each device's radio.
    if isinstance(policy, list):
        policies = policy
    else:
        policies = [device_policy(policy, system, w.radio) for w in work]
    relays = [ShapingRelay(server, w.trace, offset_s=w.offset_s) for w in work]
    relay_thread = RelayThread(relays).start()
    loops = []
    try:
        for w, port, policy in zip(work, relay_thread.ports, policies, strict=True):
            loop = _device_loop(system, head, bottlenecks, w, policy, port, fallback_after_s)
            loop.spec = spec
            loops.append(loop)
        loops[0].warm_up()  # the first calls of each codec and block pay lazy set-up once
        results: list[list] = [[] for _ in work]
        errors: list[str] = []
        _connect_all(loops, relays)
        lead = lead_s if lead_s is not None else 2.0 + 0.05 * len(work)
        t0 = time.monotonic() + lead
        if before_start is not None:
            before_start([loop.controller.telemetry.relative_to(t0) for loop in loops], t0)
        for relay in relays:
            relay.start_clock(t0)

        def serve(d: int) -> None:
            w, loop = work[d], loops[d]
            try:
                results[d] = loop.run(
                    test.inputs[w.samples], test.labels[w.samples], w.arrivals_s, w.samples,
                    progress=False, start_at=t0,
                )  # fmt: skip
            except Exception as exc:  # one device's failure is counted, never a hang
                errors.append(f"device {d}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=serve, args=(d,), daemon=True)
                   for d in range(len(work))]  # fmt: skip
        for t in threads:
            t.start()
        if started is not None:  # for drills: the devices are set up, t0 is ``lead`` away
            started.set()
        horizon = max(float(w.arrivals_s[-1]) for w in work if len(w.arrivals_s)) + 60.0
        for t in threads:
            t.join(max(t0 + horizon - time.monotonic(), 0.1))
        stuck = [d for d, t in enumerate(threads) if t.is_alive()]
        for d in stuck:
            errors.append(f"device {d}: still running {horizon:.0f} s after its first arrival")
        finished = time.monotonic()
    finally:
        for loop in loops:
            loop.close()
        relay_thread.stop()
    summary = summarise_fleet([[] if d in stuck else r for d, r in enumerate(results)],
                              sum(len(w.arrivals_s) for w in work), finished - t0)  # fmt: skip
    summary["errors"] = errors
    summary["results"] = results
    return summary


def _device_loop(
    system, head, bottlenecks, work: DeviceWork, policy, port: int, fallback_after_s: float | None
):
    """One device of the fleet: its controller (radio, battery, policy) and its loop on
    the shared model head, talking to the relay at ``port``."""
    from runtime_hooks.controller import BatteryMonitor, Controller
    from runtime_hooks.device_loop import DeviceLoop

    radio = work.radio
    battery = BatteryMonitor(system.battery_capacity_j, work.battery_level, sensor=None)
    controller = Controller(policy, system.observation_context(radio), battery, rtt_s=radio.rtt_s)
    return DeviceLoop(
        head,
        controller,
        system,
        radio,
        ("127.0.0.1", port),
        fallback_after_s=fallback_after_s,
        bottlenecks=bottlenecks,
    )


def _connect_all(loops: list, relays: list) -> None:
    """Every device connects (RTT ping, throughput probe) at once, as a fleet's would,
    each link shaped as its trace's first seconds."""
    for relay in relays:
        relay.start_clock()
    connecting = [threading.Thread(target=loop.connect, daemon=True) for loop in loops]
    for t in connecting:
        t.start()
    for t in connecting:
        t.join()


def summarise_fleet(results: list[list], requests: int, seconds: float) -> dict:
    """The real fleet's figures (``sim.metrics.summarise`` over every device's answers),
    its throughput and its wall time."""
    flat = [r for per_device in results for r in per_device]
    full = metrics.summarise(metrics.records_of_results(flat), requests=requests)
    last_done = max((r.arrival_s + r.latency_s for r in flat), default=0.0)
    keys = (
        "requests", "answered", "lost", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
        "server_queue_p95_ms", "deadline_miss_rate", "accuracy", "unlabelled",
        "offload_fraction", "cloud_answered_fraction", "cloud_answers", "fallbacks",
    )  # fmt: skip
    return {
        "devices": len(results),
        **{key: full[key] for key in keys},
        "throughput_rps": full["answered"] / max(last_done, 1e-9),
        "wall_s": seconds,
    }


@dataclass
class FleetArgs:
    """``python -m runtime_hooks.fleet``'s command line."""

    server: str = option(None, "the cloud server, HOST:PORT", required=True)
    devices: int = option(8, "devices in the fleet", check=within(1, MAX_DEVICES, MANY_DEVICES))
    requests: int = option(
        400, "requests of the whole fleet", check=within(1, MAX_REQUESTS, MANY_REQUESTS)
    )
    policy: str | None = option(
        None,
        "policy file (default: the shipped one), or a heuristic's name (edgent, spinn, ...)",
        type=str,
        check=policy_choice,
    )
    trace_dir: Path | None = option(None, "a directory of trace files (default: test split)",
                                    type=Path)  # fmt: skip
    scenario: Path | None = option(None, "scenario TOML (default: envs/scenarios/fleet.toml)",
                                   type=Path)  # fmt: skip
    seed: int = option(0, "seed of the fleet's draws", check=seed_range)
    fallback_after: float | None = option(
        None,
        f"seconds before a local fallback, above 0 and at most {MAX_FALLBACK_S:g} "
        "(default: the deadline)",
        type=float,
        check=within(0.0, MAX_FALLBACK_S, LONG_FALLBACK, above_low=True),
    )
    json: Path | None = option(None, "write the summary here", type=Path, check=output_file)
    address: tuple[str, int] = field(default=("", 0), init=False)

    def __post_init__(self) -> None:
        from runtime_hooks.device import server_address

        check_options(self)
        if self.requests < self.devices:
            raise InputError(f"--requests {self.requests}: fewer than --devices {self.devices}")
        try:
            self.address = server_address(self.server)
        except ValueError as exc:
            raise UsageError(f"--server: {exc}") from None
        if self.scenario is not None and not self.scenario.is_file():
            raise UsageError(f"--scenario: {self.scenario}: no such file")
        if self.trace_dir is not None and not self.trace_dir.is_dir():
            raise UsageError(f"--trace-dir: {self.trace_dir}: no such folder")


FLEET_SCENARIO = Path(__file__).resolve().parents[1] / "envs" / "scenarios" / "fleet.toml"


def fleet_traces(trace_dir: Path | None):
    from traces.sets import group_by_family, load_directory, load_families

    if trace_dir is not None:
        found, _ = load_directory(trace_dir)
        by_family = group_by_family(found)
    else:
        by_family, _ = load_families("auto", split="test")
    return [t for fam in sorted(by_family) for t in by_family[fam]]


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        from sim import load_scenario

        args = parse(FleetArgs, argv, summary_of(__doc__))
        address = args.address
        ensure_file_descriptors(args.devices)
        scenario = load_scenario(args.scenario or FLEET_SCENARIO)
        work = fleet_workload(scenario, fleet_traces(args.trace_dir), args.devices,
                              args.requests, args.seed)  # fmt: skip
        summary = run_fleet(address, work, scenario, args.policy, args.fallback_after)
        summary.pop("results")
        print(json.dumps(summary, indent=1))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        return 0 if summary["lost"] == 0 else 1

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
