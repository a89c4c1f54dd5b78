"""Hostile input to the sweeps, sim-to-real, the fleet and the device (issue 29, items 6,
7, 8, 10, 12 and 17): each case is one ``error: ...`` line naming the flag at fault and
what would be accepted, exit code 2, no traceback, and nothing started or written.

The commands run in this process (``main(argv)``): the point is the arguments, and the
work they would start is replaced by a tripwire that fails the test if it is reached."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import refused, tripwire

ROOT = Path(__file__).resolve().parent.parent
TRACE = sorted((ROOT / "traces" / "builtin" / "fcc").iterdir())[1]
SWEEP = """[sweep]
trials = 1
search = "random"
[space]
"ppo.learning_rate" = { loguniform = [1e-4, 1e-3] }
"""


# -- 6: a sweep's --address that never answers ---------------------------------------------
@pytest.fixture
def silent_port():
    """A port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def chatty_port():
    """A port that answers every connection, but not as a Ray cluster would."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def answer() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            time.sleep(1.0)

    threading.Thread(target=answer, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def sweep_args(tmp_path: Path, *flags: str) -> list[str]:
    path = tmp_path / "s.toml"
    path.write_text(SWEEP)
    return [str(path), "--name", "s", "--runs-dir", str(tmp_path / "runs"), *flags]


def test_a_sweep_gives_up_on_an_address_that_never_answers(tmp_path, silent_port, capsys):
    from agents import sweep

    t = time.monotonic()
    argv = sweep_args(tmp_path, "--address", f"127.0.0.1:{silent_port}", "--connect-timeout", "0.5")
    err = refused(sweep.main, argv, capsys, f"--address 127.0.0.1:{silent_port}", "0.5 s")
    assert "--connect-timeout" in err
    assert time.monotonic() - t < 10
    assert not (tmp_path / "runs").exists()


def test_a_sweep_refuses_an_address_that_is_not_a_ray_cluster(tmp_path, chatty_port, capsys):
    from agents import sweep

    argv = sweep_args(tmp_path, "--address", f"127.0.0.1:{chatty_port}", "--connect-timeout", "5")
    refused(sweep.main, argv, capsys, "not a Ray cluster", "HTTP/1.1")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1e9"])
def test_a_sweep_checks_its_connect_timeout(tmp_path, value, capsys):
    from agents import sweep

    argv = sweep_args(tmp_path, "--address", "127.0.0.1:1", "--connect-timeout", value)
    refused(sweep.main, argv, capsys, "--connect-timeout")


# -- 7: the scenario sweep checks every argument ----------------------------------------------
@pytest.mark.parametrize(
    "flags, names",
    [
        (["--requests", "0"], ["--requests", ">= 1"]),
        (["--requests", "10000000"], ["--requests", "at most 100,000"]),
        (["--episodes-per-family", "0"], ["--episodes-per-family"]),
        (["--episodes-per-family", "1000", "--requests", "1000"], ["1,000,000", "100,000"]),
        (["--seed", "-1"], ["--seed", "0..4294967295"]),
        (["--scenario", "nowhere.toml"], ["--scenario", "nowhere.toml"]),
        (["--json", "/"], ["--json", "directory"]),
    ],
)
def test_the_scenario_sweep_checks_its_arguments(flags, names, monkeypatch, capsys):
    from agents import scenario_sweep

    monkeypatch.setattr(scenario_sweep, "sweep", tripwire)
    refused(scenario_sweep.main, flags, capsys, *names)


def test_the_scenario_sweep_refuses_an_unknown_trace_source(monkeypatch, capsys):
    from agents import scenario_sweep

    monkeypatch.setattr(scenario_sweep, "sweep", tripwire)
    with pytest.raises(SystemExit) as exit_:
        scenario_sweep.main(["--source", "nowhere"])
    assert exit_.value.code == 2 and "--source" in capsys.readouterr().err


# -- 8, 12, 17: sim-to-real ----------------------------------------------------------------
@pytest.fixture
def no_server(monkeypatch):
    """sim2real may not start its server (nor the fleet comparison its fleets)."""
    from runtime_hooks import fleet_compare, sim2real

    monkeypatch.setattr(sim2real, "start_server", tripwire)
    monkeypatch.setattr(fleet_compare, "compare_fleets", tripwire)


@pytest.mark.parametrize(
    "flags, names",
    [
        (["--trace", str(TRACE), "--requests", "0"], ["--requests", ">= 1"]),
        (["--trace", str(TRACE), "--requests", "10000000"], ["--requests", "at most 10,000"]),
        (["--fleet", "8,abc"], ["--fleet", "'abc'", "integers separated by commas"]),
        (["--fleet", "0"], ["--fleet", ">= 1"]),
        (["--fleet", "8,,32"], ["--fleet", "an empty item"]),
        (["--fleet", "5000"], ["--fleet", "at most 1,024"]),
        (["--fleet", "1000", "--requests-per-device", "1000"], ["--requests-per-device"]),
        (["--trace", str(TRACE), "--offset", "-10"], ["--offset", ">= 0"]),
        (["--trace", str(TRACE), "--offset", "1e9"], ["--offset", "past the end", "s long"]),
        (["--trace", str(TRACE), "--fallback-after", "nan"], ["--fallback-after", "finite"]),
        (["--trace", str(TRACE), "--fallback-after", "-1"], ["--fallback-after", "> 0"]),
        (["--trace", str(TRACE), "--seed", "-1"], ["--seed"]),
        (["--trace", "nowhere.csv"], ["--trace", "nowhere.csv", "no such file"]),
        (["--trace", str(TRACE), "--policy", "nowhere.npz"], ["--policy", "no such file"]),
        (["--trace", str(TRACE), "--json", "x.json"], ["--json", "--fleet"]),
        (["--fleet", "8", "--trace", str(TRACE)], ["--trace", "--fleet"]),
        ([], ["--trace is required"]),
    ],
)
def test_sim2real_checks_its_arguments(flags, names, tmp_path, no_server, capsys):
    from runtime_hooks import sim2real

    out = tmp_path / "out"
    refused(sim2real.main, [*flags, "--out", str(out)], capsys, *names)
    assert not out.exists()


def test_sim2real_refuses_a_trace_with_nan_naming_its_line(tmp_path, no_server, capsys):
    from runtime_hooks import sim2real

    trace = tmp_path / "nan.txt"
    trace.write_text("0 1.0\n1 nan\n2 1.0\n")
    out = tmp_path / "out"
    refused(sim2real.main, ["--trace", str(trace), "--out", str(out)], capsys, f"{trace}:2")
    assert not out.exists()


def test_sim2real_never_writes_over_a_file_it_did_not_write(tmp_path, no_server, capsys):
    from runtime_hooks import sim2real

    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    refused(
        sim2real.main, ["--trace", str(TRACE), "--out", str(precious)], capsys, "--out", "is a file"
    )
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    (folder / "summary.json").write_text('{"something": "else"}')
    refused(
        sim2real.main,
        ["--trace", str(TRACE), "--out", str(folder)],
        capsys,
        "--out",
        "notes.txt",
        "an earlier sim2real's --out",
    )
    (folder / "notes.txt").unlink()
    refused(
        sim2real.main,
        ["--trace", str(TRACE), "--out", str(folder)],
        capsys,
        "--out",
        "no sim2real summary",
    )
    assert precious.read_text() == "keep"
    assert (folder / "summary.json").read_text() == '{"something": "else"}'


def test_sim2real_replaces_its_own_earlier_output(tmp_path):
    from runtime_hooks.sim2real import Sim2RealArgs
    from settings.cli import parse

    (tmp_path / "summary.json").write_text('{"latency_mape": 0.1, "mode": "closed loop"}')
    (tmp_path / "requests.csv").write_text("request\n")
    args = parse(Sim2RealArgs, ["--trace", str(TRACE), "--out", str(tmp_path)], "sim2real")
    assert args.out == tmp_path and args.requests == 60 and args.offset == 0.0


def test_sim2real_prints_its_fractions_as_percentages(capsys):
    from runtime_hooks.sim2real import print_summary

    print_summary({"latency_mape": 0.108, "action_agreement": 0.5, "sim_latency_p50_ms": 12.5})
    out = capsys.readouterr().out
    assert "latency_mape: 10.80%" in out and "action_agreement: 50.00%" in out
    assert "sim_latency_p50_ms: 12.5" in out


def test_sim2real_fleet_zero_is_one_error_line_from_the_command_line():
    """The one real run: ``--fleet 0`` printed a bare message, without ``error:``."""
    done = subprocess.run(
        [sys.executable, "-m", "runtime_hooks.sim2real", "--fleet", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --fleet: ") and "Traceback" not in done.stderr


# -- 12: the fleet ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, names",
    [
        (["--fallback-after", "nan"], ["--fallback-after", "finite"]),
        (["--fallback-after", "-1"], ["--fallback-after", "> 0"]),
        (["--fallback-after", "1e9"], ["--fallback-after", "at most 60"]),
        (["--devices", "5000", "--requests", "5000"], ["--devices", "at most 1,024"]),
        (["--requests", "10000000"], ["--requests", "at most 100,000"]),
        (["--seed", "4294967296"], ["--seed", "0..4294967295"]),
        (["--policy", "nowhere.npz"], ["--policy", "neither a policy file", "edgent"]),
        (["--trace-dir", "nowhere"], ["--trace-dir", "no such folder"]),
    ],
)
def test_the_fleet_checks_its_arguments(flags, names, monkeypatch, capsys):
    from runtime_hooks import fleet

    monkeypatch.setattr(fleet, "fleet_workload", tripwire)
    refused(fleet.main, ["--server", "127.0.0.1:9", *flags], capsys, *names)


def test_the_fleet_refuses_a_server_that_is_not_an_address(monkeypatch, capsys):
    from runtime_hooks import fleet

    monkeypatch.setattr(fleet, "fleet_workload", tripwire)
    refused(fleet.main, ["--server", "nowhere"], capsys, "--server", "HOST:PORT")


# -- 10, 17: the device ------------------------------------------------------------------------
@pytest.fixture
def no_device(monkeypatch):
    from runtime_hooks import device

    monkeypatch.setattr(device.DeviceLoop, "create", tripwire)


def test_the_device_bounds_its_requests(no_device, capsys):
    from runtime_hooks import device

    refused(
        device.main,
        ["--server", "127.0.0.1:9", "--requests", "100000000000000"],
        capsys,
        "--requests",
        "at most 1,000,000",
    )


def test_the_device_refuses_requests_whose_inputs_do_not_fit(no_device, capsys):
    from runtime_hooks import device

    refused(
        device.main,
        ["--server", "127.0.0.1:9", "--requests", "900000"],
        capsys,
        "--requests 900,000",
        "784 bytes",
        "at most 758,292",
        "GiB",
    )


def test_the_device_writes_no_log_unless_asked():
    from runtime_hooks.device import DeviceArgs
    from settings.cli import parse

    args = parse(DeviceArgs, ["--server", "127.0.0.1:9"], "device")
    assert args.log is None


def test_the_device_names_the_heuristics_for_an_unknown_policy(no_device, capsys):
    from runtime_hooks import device

    refused(
        device.main,
        ["--server", "127.0.0.1:9", "--policy", "edgnt"],
        capsys,
        "--policy: edgnt: neither a policy file",
        "edgent, spinn",
    )
