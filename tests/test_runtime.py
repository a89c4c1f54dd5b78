"""Runtime hooks: export, controller, device loop end to end, faults, sim-to-real."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agents.base import FixedPolicy
from runtime_hooks.controller import BatteryMonitor, Controller
from runtime_hooks.device_loop import DeviceLoop
from runtime_hooks.device_records import summarise
from runtime_hooks.policy_file import NumpyPolicy, PolicyFileError
from runtime_hooks.relay import RelayThread, ShapedLink, ShapingRelay
from telemetry.observation import ObservationContext, Telemetry, build_observation
from traces.trace import Trace

# The tests marked realtime assert wall-clock deadlines: make test runs them after the
# others, without a second worker competing for the cores.

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_RUN = ROOT / "runs" / "default"
SHIPPED_POLICY = SHIPPED_RUN / "policy.npz"
OFFLOAD = FixedPolicy(2, 6, 3)  # cut 2, no early exit, int8+zlib: always asks the cloud
DEADLINE_S = 0.2


@pytest.fixture(scope="module")
def test_images():
    from profiles.dataset import load_official

    test = load_official("test")
    return test.images[:40], test.labels[:40]


def make_loop(server, policy=OFFLOAD, **kwargs) -> DeviceLoop:
    kwargs.setdefault("emulate_device", False)
    kwargs.setdefault("retry_s", (0.05, 0.2))
    return DeviceLoop.create(server, policy, battery_sensor=None, **kwargs)


def check_every_request_answered_once(results, n: int) -> None:
    ids = [r.request_id for r in results]
    assert len(results) == n and len(set(ids)) == n
    assert all(0 <= r.prediction < 10 for r in results)


# -- export --------------------------------------------------------------------------
@pytest.mark.slow
def test_export_matches_sb3_on_10000_env_observations(tmp_path):
    from runtime_hooks.export import agreement, env_observations, export_run

    policy, ppo, env = export_run(SHIPPED_RUN)
    loaded = NumpyPolicy.load(policy.save(tmp_path / "p.npz"))
    obs = env_observations(env, 10_000, seed=3)
    assert len(np.unique(obs, axis=0)) > 5_000  # varied, not one state repeated
    assert agreement(loaded, ppo, obs).share == 1.0


def test_agreement_forgives_only_ties_within_float32_rounding():
    """A differing pick is a tie when both networks' logits of the two picks lie within
    TIE_TOLERANCE (numpy and torch multiply in another order); a clear preference of
    either network for another action is a disagreement, so an export whose logits
    collapsed (all equal) does not pass as a run of ties."""
    from runtime_hooks.export import TIE_TOLERANCE, agreement
    from runtime_hooks.policy_file import PolicyMeta

    meta = PolicyMeta(
        nvec=(2, 1, 1),
        thresholds=(0.5,),
        deadline_s=0.1,
        keep_alive_s=1.0,
        radios={},
        obs_dim=3,
        activation="tanh",
        profile_model_hash="x",
        source="test",
    )
    table = np.asarray([[0, 0, 0], [1, 0, 0]])

    def exported(bias: tuple[float, float]) -> NumpyPolicy:
        head = (np.zeros((2, 3)), np.asarray(bias))
        return NumpyPolicy([], head, np.zeros(3), np.ones(3), 10.0, 0.0, table, meta)

    class PicksSecond:
        def __init__(self, logits: tuple[float, float]) -> None:
            self._logits = np.asarray(logits)

        def act(self, observation):
            return np.asarray([1, 0, 0])

        def logits(self, observation):
            return self._logits

    obs = np.zeros((5, 3), np.float32)
    tiny = TIE_TOLERANCE / 10
    near = agreement(exported((tiny, 0.0)), PicksSecond((0.0, tiny)), obs)
    assert (near.same, near.ties, near.faithful) == (0, 5, True)
    far = agreement(exported((1.0, 0.0)), PicksSecond((0.0, 1.0)), obs)
    assert (far.same, far.ties, far.faithful) == (0, 0, False)
    collapsed = agreement(exported((0.0, 0.0)), PicksSecond((0.0, 2.0)), obs)
    assert (collapsed.ties, collapsed.faithful) == (0, False)
    same = agreement(exported((0.0, 1.0)), PicksSecond((0.0, 1.0)), obs)
    assert (same.share, same.faithful) == (1.0, True) and "ties" not in same.sentence()


def test_export_cli_writes_a_loadable_file(tmp_path):
    out = tmp_path / "policy.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "runtime_hooks.export", str(SHIPPED_RUN), "--out", str(out),
         "--check", "500"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "100.00% of 500" in proc.stdout
    assert NumpyPolicy.load(out).meta.nvec == (6, 7, 8)
    bad = subprocess.run(
        [sys.executable, "-m", "runtime_hooks.export", str(tmp_path / "nope"), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "run directory not found" in bad.stderr


def test_policy_file_errors_name_the_problem(tmp_path):
    with pytest.raises(PolicyFileError, match="not found"):
        NumpyPolicy.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(PolicyFileError, match="not a readable policy file"):
        NumpyPolicy.load(tmp_path / "junk.npz")
    with np.load(SHIPPED_POLICY) as z:
        arrays = {k: z[k] for k in z.files}
    broken = dict(arrays, layer1_w=arrays["layer1_w"][:, :5])
    np.savez(tmp_path / "shape.npz", **broken)
    with pytest.raises(PolicyFileError, match="layer1_w"):
        NumpyPolicy.load(tmp_path / "shape.npz")
    np.savez(tmp_path / "nometa.npz", **{k: v for k, v in arrays.items() if k != "meta"})
    with pytest.raises(PolicyFileError, match="'meta' is missing"):
        NumpyPolicy.load(tmp_path / "nometa.npz")
    policy = NumpyPolicy.load(SHIPPED_POLICY)
    with pytest.raises(PolicyFileError, match="actions"):
        policy.check_compatible((6, 4, 5), policy.meta.thresholds, 17)
    with pytest.raises(PolicyFileError, match="thresholds"):
        policy.check_compatible((6, 7, 8), (0.1,) * 7, 17)


def test_device_refuses_a_policy_of_another_scenario(tmp_path):
    from sim import load_scenario

    text = (ROOT / "envs" / "default_scenario.toml").read_text()
    other = tmp_path / "other.toml"
    other.write_text(
        text.replace("grid = [0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01]", "grid = [0.5, 0.9, 1.01]")
    )
    with pytest.raises(PolicyFileError, match="trained for actions"):
        DeviceLoop.create(None, SHIPPED_POLICY, load_scenario(other), battery_sensor=None)


# -- controller ----------------------------------------------------------------------
def test_controller_builds_the_simulators_observation():
    policy = NumpyPolicy.load(SHIPPED_POLICY)
    clock = [100.0]
    ctl = Controller.from_policy_file(
        SHIPPED_POLICY, "lte", BatteryMonitor(1000.0, 0.6, sensor=None), clock=lambda: clock[0]
    )
    ctl.on_rtt(0.08)
    ctl.on_upload(99.5, 20_000, 0.1)
    tel = Telemetry(rtt_est_s=0.08, battery_level=0.6)  # a first RTT sample replaces
    tel.record_transfer(99.5, 20_000, 0.1)
    m = policy.meta
    ctx = ObservationContext(m.deadline_s, *m.nvec, *m.radios["lte"], m.keep_alive_s)
    obs = build_observation(tel, 100.0, 0.03, 2, ctx)
    np.testing.assert_array_equal(ctl.observe(0.03, 2), obs)
    action = ctl.decide(lateness_s=0.03, queue_len=2)
    assert action == tuple(int(v) for v in policy.act(obs))
    assert ctl.telemetry.last_action == action
    ctl.on_rtt(0.16)  # later samples are smoothed (RFC 6298, alpha 1/8)
    assert ctl.telemetry.rtt_est_s == pytest.approx(0.08 + (0.16 - 0.08) / 8)


def test_controller_refuses_an_out_of_range_action():
    ctx = ObservationContext(0.2, 6, 7, 5, 1.0, 0.5, 600.0)
    ctl = Controller(FixedPolicy(6, 0, 0), ctx, BatteryMonitor(10.0, sensor=None))
    with pytest.raises(ValueError, match="outside the grid"):
        ctl.decide()


class FakeSensor:
    def __init__(self, readings):
        self.readings = list(readings)

    def __call__(self):
        value = self.readings.pop(0) if self.readings else None
        if isinstance(value, Exception):
            raise value
        return None if value is None else type("Reading", (), {"percent": value})()


def test_battery_from_sensor_then_model_when_the_sensor_is_lost():
    clock = [0.0]
    monitor = BatteryMonitor(
        100.0, sensor=FakeSensor([80.0, 75.0, None]), sensor_period_s=1.0, clock=lambda: clock[0]
    )
    assert monitor.source == "sensor" and monitor.level() == pytest.approx(0.80)
    monitor.charge(50.0)  # the sensor, not the model, tells the level
    clock[0] = 1.0
    assert monitor.level() == pytest.approx(0.75)
    clock[0] = 2.0
    with pytest.warns(RuntimeWarning, match="stopped answering"):
        assert monitor.level() == pytest.approx(0.75)
    assert monitor.source == "model" and monitor.sensor_lost
    monitor.charge(25.0)
    assert monitor.level() == pytest.approx(0.50)
    broken = BatteryMonitor(100.0, 0.4, sensor=FakeSensor([OSError("sysfs gone")]))
    assert broken.source == "model" and broken.level() == pytest.approx(0.4)


def test_controller_imports_neither_torch_nor_sb3():
    code = (
        "import sys; from runtime_hooks.controller import Controller, BatteryMonitor; "
        f"c = Controller.from_policy_file({str(SHIPPED_POLICY)!r}, 'lte', BatteryMonitor(1.0)); "
        "c.decide(); print(sorted(m for m in ('torch', 'stable_baselines3', 'gymnasium') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- the shaped link -----------------------------------------------------------------
def test_shaped_link_integrates_the_trace_like_the_simulator():
    trace = Trace("t", "x", (0.0, 1.0, 2.0), (8e6, 0.0, 8e6), 3.0, 0.04)
    link = ShapedLink(trace, one_way_s=0.02)
    # 1 MB at 8 Mbit/s: 1 s of capacity, then the outage, then 0 more -> done at 1.0.
    assert link.delivery(0.0, 1_000_000) == pytest.approx(1.02)
    # Queued behind it and crossing the outage: starts at 1.0, waits to 2.0, 0.5 s more.
    assert link.delivery(0.5, 500_000) == pytest.approx(2.52)
    assert link.free_s == pytest.approx(trace.finish_time(1.0, 500_000))


# -- end to end on loopback ----------------------------------------------------------
def test_device_loop_offloads_through_a_shaped_relay(cloud_server, test_images):
    images, labels = test_images
    trace = Trace("const", "x", (0.0,), (4e6,), 100.0, 0.03)
    with RelayThread(ShapingRelay(cloud_server, trace)) as relay:
        loop = make_loop(("127.0.0.1", relay.port))
        results = loop.run(images[:15], labels[:15], progress=False)
        loop.close()
    check_every_request_answered_once(results, 15)
    assert all(r.path == "cloud" and r.sent_bytes > 0 for r in results)
    # Every answer crossed the shaped link: at least the RTT and the bytes at 4 Mbit/s.
    for r in results:
        assert r.network_s >= 0.03 + r.sent_bytes * 8 / 4e6 - 1e-3
    summary = summarise(results, 15)
    assert summary["lost"] == 0 and summary["offload_fraction"] == 1.0
    assert summary["accuracy"] >= 0.7


def test_device_cli_with_the_shipped_policy(cloud_server, tmp_path):
    host, port = cloud_server
    trace = sorted((ROOT / "traces" / "builtin" / "fcc").iterdir())[0]
    out = subprocess.run(
        [sys.executable, "-m", "runtime_hooks.device", "--server", f"{host}:{port}",
         "--requests", "12", "--rate", "0", "--host-speed", "--trace", str(trace),
         "--json", str(tmp_path / "s.json"), "--log", str(tmp_path / "log.jsonl")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    for key in ("requests", "answered", "lost", "accuracy", "latency_p50_ms",
                "latency_p95_ms", "offload_fraction"):  # fmt: skip
        assert key in summary
    assert summary["requests"] == summary["answered"] == 12 and summary["lost"] == 0
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {"cut", "latency_s", "sent_bytes", "exit_block",
                                  "correct", "energy_j"} <= set(lines[0])  # fmt: skip


def test_device_cli_runs_a_heuristic_by_name(cloud_server, tmp_path):
    """``--policy edgent``: the literature's rule, built for the scenario, on the device."""
    from runtime_hooks import device

    host, port = cloud_server
    argv = ["--server", f"{host}:{port}", "--policy", "edgent", "--requests", "12", "--rate",
            "0", "--host-speed", "--json", str(tmp_path / "s.json")]  # fmt: skip
    assert device.main(argv) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["requests"] == summary["answered"] == 12 and summary["lost"] == 0
    assert summary["policy"] == "edgent"


# -- faults --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.realtime
def test_server_down_falls_back_in_time_then_reconnects(test_images):
    from runtime_hooks.sim2real import start_server, stop_server

    images, labels = test_images
    port = free_port()
    loop = make_loop(("127.0.0.1", port))
    down = loop.run(images[:5], labels[:5], progress=False)
    assert all(r.path == "fallback" and r.fallback == "server_down" for r in down)
    assert all(r.latency_s < DEADLINE_S for r in down)
    # The server comes up on that port: the device reconnects and offloads again.
    proc, _ = start_server("--port", str(port))
    try:
        time.sleep(0.3)  # past the reconnect backoff
        up = loop.run(images[5:10], labels[5:10], progress=False)
    finally:
        stop_server(proc)
        loop.close()
    assert all(r.path == "cloud" for r in up)
    check_every_request_answered_once(down + up, 10)


@pytest.mark.realtime
def test_while_the_server_is_down_the_device_answers_as_deep_as_the_deadline_allows(
    test_images,
):
    """Killed mid-run, then back: no cloud action is taken while it is down, the device
    answers with the deepest exit that meets the deadline (exit 2 on the default
    micro-controller, not block 1's), and the policy offloads again once it is back."""
    from runtime_hooks.sim2real import start_server, stop_server

    images, labels = test_images
    notices = []
    proc, address = start_server()
    send_image = FixedPolicy(0, 6, 0)  # cut 0, raw image, no exits: block 1's exit is at hand
    loop = make_loop(address, send_image, emulate_device=True, notify=notices.append)
    try:
        up = loop.run(images[:3], labels[:3], arrivals_s=np.arange(3) * 0.25, progress=False)
        proc.kill()
        proc.wait()
        down = loop.run(images[3:9], labels[3:9], arrivals_s=np.arange(6) * 0.25, progress=False)
        assert loop.link.known_down and loop.controller.overridden == (0, 6, 0)
        proc, _ = start_server("--port", str(address[1]))
        end = time.monotonic() + 10
        while loop.link._ready.empty() and time.monotonic() < end:
            time.sleep(0.05)
        back = loop.run(images[9:12], labels[9:12], arrivals_s=np.arange(3) * 0.25,
                        progress=False)  # fmt: skip
    finally:
        stop_server(proc)
        loop.close()
    check_every_request_answered_once(up + down + back, 12)
    assert [r.path for r in up] == ["cloud"] * 3 and [r.path for r in back] == ["cloud"] * 3
    assert down[0].fallback == "connection_lost"  # how the device learnt it
    assert all(r.fallback == "server_down" and r.sent_bytes == 0 for r in down[1:])
    assert all(r.path == "fallback" and r.exit_block == 2 for r in down[1:])
    assert all(r.latency_s < DEADLINE_S + 0.02 for r in down)
    assert any("cannot reach the server" in n for n in notices)
    assert any("answers again" in n for n in notices)


def test_controller_takes_no_cloud_action_while_the_cloud_is_down():
    ctx = ObservationContext(0.2, 6, 7, 5, 1.0, 0.5, 60.0)
    ctl = Controller(FixedPolicy(0, 3, 2), ctx, BatteryMonitor(100.0, sensor=None))
    assert ctl.decide(cloud_available=False) == (5, 3, 0) and ctl.overridden == (0, 3, 2)
    assert ctl.telemetry.last_action == (5, 3, 0)
    assert ctl.decide() == (0, 3, 2) and ctl.overridden is None  # back to the policy
    local = Controller(FixedPolicy(5, 1, 0), ctx, BatteryMonitor(100.0, sensor=None))
    assert local.decide(cloud_available=False) == (5, 1, 0) and local.overridden is None


@pytest.mark.realtime
def test_slow_server_falls_back_before_the_deadline_and_drops_late_answers(test_images):
    from runtime_hooks.sim2real import start_server, stop_server

    images, labels = test_images
    proc, address = start_server("--delay-ms", "400")
    try:
        loop = make_loop(address)
        results = loop.run(images[:6], labels[:6], arrivals_s=np.arange(6) * 0.25, progress=False)
        loop.close()
    finally:
        stop_server(proc)
    check_every_request_answered_once(results, 6)
    assert all(r.fallback == "timeout" for r in results)
    assert all(r.latency_s < DEADLINE_S + 0.02 for r in results)
    assert loop.stale_answers >= 1  # answers that came after their request fell back


class DropFirstConnection:
    """A TCP forwarder that cuts its first connection after ``cut_after`` bytes from
    the device (mid-frame) and passes later connections through."""

    def __init__(self, upstream, cut_after: int = 100) -> None:
        self.upstream, self.cut_after = upstream, cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                dev, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            up = socket.create_connection(self.upstream)
            limit = self.cut_after if self.accepted == 1 else None
            threading.Thread(target=self._pipe, args=(dev, up, limit), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, dev, None), daemon=True).start()

    @staticmethod
    def _pipe(src, dst, limit) -> None:
        seen = 0
        try:
            while data := src.recv(65536):
                if limit is not None and seen + len(data) > limit:
                    dst.sendall(data[: limit - seen])
                    break
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()


@pytest.mark.realtime
def test_connection_dropped_mid_frame_falls_back_and_reconnects(cloud_server, test_images):
    images, labels = test_images
    proxy = DropFirstConnection(cloud_server, cut_after=P_HEADER_AND_PROBE + 200)
    loop = make_loop(("127.0.0.1", proxy.port))
    results = loop.run(images[:8], labels[:8], arrivals_s=np.arange(8) * 0.1, progress=False)
    loop.close()
    proxy.listener.close()
    check_every_request_answered_once(results, 8)
    assert results[0].fallback == "connection_lost" and results[0].latency_s < DEADLINE_S
    assert [r.path for r in results[-3:]] == ["cloud"] * 3
    assert proxy.accepted >= 2


# Bytes a device sends on connecting: an empty ping and a 4 KiB probe, each framed.
P_HEADER_AND_PROBE = 32 + 32 + 4096


@pytest.mark.realtime
def test_trace_outage_falls_back_then_recovers(cloud_server, test_images):
    images, labels = test_images
    # 8 Mbit/s, then nothing from 0.5 s to 2.0 s, then 8 Mbit/s again.
    trace = Trace("outage", "x", (0.0, 0.5, 2.0), (8e6, 0.0, 8e6), 60.0, 0.02)
    with RelayThread(ShapingRelay(cloud_server, trace)) as relay:
        loop = make_loop(("127.0.0.1", relay.port))
        loop.connect()
        relay.relay.start_clock()
        arrivals = np.array([0.1, 0.2, 0.8, 1.1, 1.4, 2.6, 2.9, 3.2])
        results = loop.run(images[:8], labels[:8], arrivals_s=arrivals, progress=False)
        loop.close()
    check_every_request_answered_once(results, 8)
    paths = [r.path for r in results]
    assert paths[:2] == ["cloud", "cloud"]
    assert all(r.path == "fallback" and r.latency_s < DEADLINE_S + 0.02 for r in results[2:5])
    assert paths[-1] == "cloud"


# -- sim-to-real ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realtime
def test_sim2real_reports_latency_error_and_agreement(tmp_path):
    trace = sorted((ROOT / "traces" / "builtin" / "fcc").iterdir())[1]
    out = subprocess.run(
        [sys.executable, "-m", "runtime_hooks.sim2real", "--trace", str(trace),
         "--requests", "12", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["requests"] == 12
    assert 0.0 <= summary["latency_mape"] < 1.0
    assert 0.0 < summary["action_agreement"] <= 1.0
    assert (tmp_path / "sim2real.png").stat().st_size > 10_000
    assert len((tmp_path / "requests.csv").read_text().splitlines()) == 13


# -- the kernel shaper (netem in a namespace), where the machine has it ---------------
@pytest.mark.realtime
def test_tc_shaper_runs_the_loop_or_says_why_not(tmp_path):
    from runtime_hooks.netem import unavailable_reason
    from runtime_hooks.sim2real import start_server, stop_server

    reason = unavailable_reason()
    trace = sorted((ROOT / "traces" / "builtin" / "fcc").iterdir())[0]
    proc, (_, port) = start_server("--host", "0.0.0.0")  # reachable from the namespace
    try:
        cmd = [sys.executable, "-m", "runtime_hooks.device", "--server", f"127.0.0.1:{port}",
               "--requests", "4", "--rate", "0", "--host-speed", "--trace", str(trace),
               "--shaper", "tc", "--json", str(tmp_path / "s.json"),
               "--log", str(tmp_path / "l.jsonl")]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    finally:
        stop_server(proc)
    if reason is not None:
        assert out.returncode == 2
        assert "--shaper tc" in out.stderr and "use --shaper relay" in out.stderr
        pytest.skip(f"netem shaping unavailable here: {reason}")
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["answered"] == 4 and summary["lost"] == 0


def test_sim2real_compare_and_replay():
    from runtime_hooks.device_records import RequestResult
    from runtime_hooks.sim2real import ReplayActions, compare

    replay = ReplayActions([(0, 6, 0), (3, 1, 2)])
    assert replay.act(None).tolist() == [0, 6, 0] and replay.act(None).tolist() == [3, 1, 2]
    assert replay.act(None).tolist() == [3, 1, 2]  # holds the last one past the end

    def real(cut, latency):
        return RequestResult(
            request_id=0, sample=0, arrival_s=0.0, cut=cut, threshold=6, level=0, path="cloud",
            exit_block=0, prediction=1, confidence=0.9, label=1, correct=True,
            latency_s=latency, wait_s=0.0, decide_s=0.0, device_s=0.0, network_s=0.0,
            server_s=0.0, sent_bytes=100, energy_j=0.0, fallback=None, deadline_miss=False,
        )  # fmt: skip

    sim = [
        {"latency_s": 0.10, "offloaded": True, "correct": True, "action": (0, 6, 0)},
        {"latency_s": 0.20, "offloaded": False, "correct": False, "action": (5, 0, 0)},
    ]
    out = compare(sim, [real(0, 0.11), real(4, 0.30)])
    assert out["latency_mape"] == pytest.approx((0.1 + 0.5) / 2)
    assert out["latency_mape_offloaded"] == pytest.approx(0.1)
    assert out["latency_mape_same_action"] == pytest.approx(0.1)
    assert out["action_agreement"] == 0.5
    assert out["sim_accuracy"] == 0.5 and out["real_accuracy"] == 1.0


def test_bad_inputs_name_the_value_at_fault():
    from runtime_hooks.relay import parse_address

    with pytest.raises(ValueError, match="HOST:PORT, got 'localhost'"):
        parse_address("localhost")
    assert parse_address(":9300") == ("127.0.0.1", 9300)
    with pytest.raises(ValueError, match="capacity must be > 0 J, got 0"):
        BatteryMonitor(0.0, sensor=None)
    with pytest.raises(ValueError, match=r"initial battery level must be in \[0, 1\], got 1.5"):
        BatteryMonitor(10.0, 1.5, sensor=None)
    loop = make_loop(None)
    with pytest.raises(ValueError, match=r"the model's shape \(1, 28, 28\), got \(27, 28\)"):
        loop.infer(np.zeros((27, 28), np.uint8))
