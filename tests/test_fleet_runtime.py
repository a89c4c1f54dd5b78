"""A real fleet: device loops in one process, one real server, shaped links."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.base import FixedPolicy
from runtime_hooks.fleet import (
    FLEET_SCENARIO,
    ensure_file_descriptors,
    fleet_traces,
    fleet_workload,
    run_fleet,
)
from runtime_hooks.sim2real import start_server, stop_server
from settings.tables import InputError
from sim import load_scenario

# The tests marked realtime assert wall-clock deadlines: make test runs them after the
# others, without a second worker competing for the cores.

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fleet_setup():
    scenario = load_scenario(FLEET_SCENARIO)
    traces = fleet_traces(None)
    return scenario, traces


@pytest.mark.realtime
def test_the_emulated_cloud_keeps_the_simulators_batch_times(fleet_setup):
    from envs.fleet_env import OffloadFleetEnv
    from runtime_hooks.server import load_server

    scenario, traces = fleet_setup
    fleet = OffloadFleetEnv(2, scenario, traces[:4], trace_split=None)
    server = load_server(scenario, emulate_cloud=True, max_batch=scenario.capacity.max_batch)
    np.testing.assert_allclose(server.runner.batch_seconds, fleet.cloud.batch_seconds)


@pytest.mark.realtime
def test_a_real_fleet_answers_every_request(fleet_setup):
    scenario, traces = fleet_setup
    work = fleet_workload(scenario, traces, 4, 16, seed=0)
    assert [len(w.arrivals_s) for w in work] == [4, 4, 4, 4]
    proc, address = start_server("--scenario", str(FLEET_SCENARIO), "--workers", "1",
                                 "--max-batch", "4", "--emulate-cloud")  # fmt: skip
    try:
        summary = run_fleet(address, work, scenario, FixedPolicy(0, 6, 0), fallback_after_s=30.0,
                            lead_s=1.0)  # fmt: skip
    finally:
        stop_server(proc)
    assert summary["requests"] == 16 and summary["answered"] == 16 and summary["lost"] == 0
    assert summary["cloud_answers"] == 16 and summary["errors"] == []
    assert summary["latency_p95_ms"] >= summary["latency_p50_ms"] > 0


@pytest.mark.realtime
def test_a_fleet_without_its_server_falls_back_and_counts(fleet_setup):
    import socket

    scenario, traces = fleet_setup
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = fleet_workload(scenario, traces, 3, 6, seed=1)
    summary = run_fleet(("127.0.0.1", port), work, scenario, FixedPolicy(0, 6, 0), lead_s=1.0)
    assert summary["answered"] == 6 and summary["lost"] == 0
    assert summary["cloud_answers"] == 0 and sum(summary["fallbacks"].values()) == 6


def test_fleet_bad_input_is_one_clear_line(tmp_path):
    def fleet(*args):
        return subprocess.run([sys.executable, "-m", "runtime_hooks.fleet", *args], cwd=ROOT,
                              capture_output=True, text=True)  # fmt: skip

    out = fleet("--server", "127.0.0.1:9", "--devices", "0")
    assert out.returncode == 2 and "--devices" in out.stderr and "Traceback" not in out.stderr
    out = fleet("--server", "127.0.0.1:9", "--devices", "8", "--requests", "4")
    assert out.returncode == 2 and "fewer than --devices 8" in out.stderr
    out = fleet("--devices", "2")
    assert out.returncode == 2 and "--server" in out.stderr
    with pytest.raises(InputError, match="ulimit -n"):
        ensure_file_descriptors(10**9)


@pytest.mark.realtime
def test_a_server_that_drops_mid_run_costs_no_request(fleet_setup):
    """The server is killed while the fleet runs: every request is still answered
    (by the cloud before, by a counted local fallback after), and nothing hangs."""
    import threading

    scenario, traces = fleet_setup
    work = fleet_workload(scenario, traces, 4, 80, seed=2)  # about 10 s of arrivals
    proc, address = start_server("--scenario", str(FLEET_SCENARIO), "--workers", "1",
                                 "--max-batch", "4", "--emulate-cloud")  # fmt: skip
    started = threading.Event()

    def kill_mid_run():  # 1 s of lead, then about 4 s of requests
        if started.wait(120):
            threading.Event().wait(5.0)
            proc.kill()

    killer = threading.Thread(target=kill_mid_run, daemon=True)
    killer.start()
    try:
        summary = run_fleet(address, work, scenario, FixedPolicy(0, 6, 0), lead_s=1.0,
                            started=started)  # fmt: skip
    finally:
        stop_server(proc)
    assert summary["answered"] == 80 and summary["lost"] == 0 and summary["errors"] == []
    assert 0 < summary["cloud_answers"] < 80
    assert sum(summary["fallbacks"].values()) == 80 - summary["cloud_answers"]


@pytest.mark.realtime
def test_closed_loop_fleet_sim2real_starts_each_twin_from_its_real_device():
    """The real devices decide on what they measure; each simulated twin starts from
    what its real device measured when it connected (before the first request)."""
    from runtime_hooks import fleet_compare

    seen = []
    real_simulate = fleet_compare.simulate_fleet

    def spy(*args, **kwargs):
        seen.append(args[-1] if len(args) > 6 else kwargs.get("options"))
        return real_simulate(*args, **kwargs)

    fleet_compare.simulate_fleet = spy
    try:
        report = fleet_compare.compare_fleets([2], None, None, per_device=4, seed=0)
    finally:
        fleet_compare.simulate_fleet = real_simulate
    row = report["loads"][0]
    assert row["devices"] == 2 and row["requests"] == 8 and row["real_lost"] == 0
    for side in ("real", "sim"):
        assert 0.0 <= row[f"{side}_offload_fraction"] <= 1.0
    (options,) = seen
    measured = options["telemetry_by_device"]
    assert len(measured) == 2
    # Each device connected (an RTT ping and a throughput probe) before its episode.
    assert all(t.n_samples >= 1 and t.last_sample_s < 0.0 for t in measured)
