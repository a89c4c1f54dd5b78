"""Contention sim-to-real: the same fleets through ``OffloadFleet-v0`` and for real.

    python -m runtime_hooks.sim2real --fleet 8,32,64 [--scenario S] [--policy P]
        [--requests-per-device 60] [--seed 0] [--replay] [--json F]

For each fleet size a server process starts with the scenario's capacity
(``--workers``, ``--max-batch``) and ``--emulate-cloud`` (each batch takes the time the
simulator charges for its size), and ``runtime_hooks.fleet`` runs the real devices
(real head, codecs, shaped links, emulated device speed) on exactly what the
simulator's fleet draws for the seed: the same traces, offsets, arrival times, images
and batteries. Closed loop (the default), the policy decides on each real device from
what that device measures, and each simulated twin starts from what its real device
measured when it connected (its RTT ping and throughput probe through its shaped link),
as the single-device ``sim2real`` does: both then decide from the same knowledge, and
what is compared is the behaviour (the offload fraction) and the latency under
contention. ``--replay``: each real device takes its twin's actions instead (the
latency model alone). What differs is everything the simulator abstracts: the network
stack, the relays' scheduling, the server's real queue and batcher. Writes
``{"loads": [{"devices", "real_latency_p95_ms", "sim_latency_p95_ms", "p95_error",
"real_offload_fraction", "sim_offload_fraction", ...}]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from sim import metrics

COMPARED = ("latency_p50_ms", "latency_p95_ms", "offload_fraction", "server_queue_p95_ms")


def simulate_fleet(scenario, traces, devices: int, per_device: int, seed: int, policy,
                   options: dict | None = None) -> dict:  # fmt: skip
    from agents.fleet_rollout import PerDevice, run_fleet
    from envs.fleet_env import OffloadFleetEnv
    from telemetry.observation import OBS_DIM

    fleet = OffloadFleetEnv(devices, scenario, list(traces), trace_split=None,
                            sample_split="test", episode_requests=per_device)  # fmt: skip
    return run_fleet(fleet, PerDevice(policy, devices, OBS_DIM), seed=seed, options=options)


def _twin_simulator(scenario, traces, n: int, per_device: int, seed: int, policy, into: dict):
    """``run_fleet``'s ``before_start``: simulate the twins into ``into["sim"]``, each
    starting from what its real device measured when it connected (closed loop, as the
    single-device sim2real does), or from the simulator's own start (``measured`` None)."""

    def simulate(measured, t0) -> None:
        options = None if measured is None else {"telemetry_by_device": measured}
        into["sim"] = simulate_fleet(scenario, traces, n, per_device, seed, policy, options)

    return simulate


def compare_fleets(sizes, scenario_path, policy_path, per_device: int, seed: int,
                   fallback_after_s: float = 30.0, replay: bool = False) -> dict:  # fmt: skip
    from runtime_hooks.device_loop import DEFAULT_POLICY, device_policy
    from runtime_hooks.fleet import FLEET_SCENARIO, fleet_traces, fleet_workload, run_fleet
    from runtime_hooks.policy_file import NumpyPolicy
    from runtime_hooks.sim2real import ReplayActions, start_server, stop_server
    from sim import System, load_scenario

    path = scenario_path or FLEET_SCENARIO
    scenario = load_scenario(path)
    traces = fleet_traces(None)
    policy = NumpyPolicy.load(policy_path or DEFAULT_POLICY)
    system = System(scenario)
    system.require_single_cloud("a fleet sharing one cloud")  # before a server starts
    device_policy(policy, system)  # a mismatch is refused before a server starts
    cap = scenario.capacity
    loads = []
    for n in sizes:
        work = fleet_workload(scenario, traces, n, n * per_device, seed)
        flags = ["--scenario", str(path), "--workers", str(max(cap.workers, 1)),
                 "--max-batch", str(cap.max_batch), "--emulate-cloud"]  # fmt: skip
        twins: dict = {}
        simulate_twins = _twin_simulator(scenario, traces, n, per_device, seed, policy, twins)
        deciders = policy
        if replay:  # each real device takes its simulated twin's actions
            simulate_twins(None, 0.0)
            sim = twins["sim"]
            deciders = [ReplayActions([tuple(a) for a in sim["action"][sim["device"] == d]])
                        for d in range(n)]  # fmt: skip
        proc, address = start_server(*flags)
        try:
            real = run_fleet(address, work, scenario, deciders, fallback_after_s,
                             before_start=None if replay else simulate_twins)  # fmt: skip
        finally:
            stop_server(proc)
        sim = twins["sim"]
        flat = [r for per_device in real["results"] for r in per_device]
        got = metrics.summarise(metrics.records_of_results(flat))
        twin = metrics.summarise(sim)
        row = {
            "devices": n,
            "requests": int(len(sim["latency_s"])),
            **{
                f"{side}_{key}": summary[key]
                for key in COMPARED
                for side, summary in (("real", got), ("sim", twin))
            },
            "real_lost": real["lost"],
            "real_fallbacks": real["fallbacks"],
        }
        for q in (50, 95):
            real_ms, sim_ms = row[f"real_latency_p{q}_ms"], row[f"sim_latency_p{q}_ms"]
            row[f"p{q}_error"] = abs(sim_ms - real_ms) / real_ms
        loads.append(row)
        print(json.dumps(row), flush=True)
    return {"scenario": str(path), "policy": str(policy_path or DEFAULT_POLICY),
            "requests_per_device": per_device, "seed": seed, "loads": loads}  # fmt: skip


def main_fleet(args) -> int:
    """``sim2real --fleet``: ``args`` are ``Sim2RealArgs``, already checked (the sizes
    parsed, the output refused if it would write over another command's files)."""
    from runtime_hooks.fleet import ensure_file_descriptors

    ensure_file_descriptors(max(args.fleet))  # refused before the first server starts
    report = compare_fleets(args.fleet, args.scenario, args.policy, args.requests_per_device,
                            args.seed, args.fallback_after, args.replay)  # fmt: skip
    out = Path(args.json) if args.json else args.out / "fleet_sim2real.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0
