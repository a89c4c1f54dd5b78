"""Hostile input to the real command lines, run as subprocesses: each case exits with the
expected code, names the culprit in one line, prints no traceback, and deletes or
rewrites nothing."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_HYPERPARAMS as TINY

from agents.run_files import main as run_files_main
from agents.run_files import seal
from profiles.profile_io import load_profile

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = (ROOT / "envs" / "default_scenario.toml").read_text()


def run(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes: what 'nothing deleted or
    rewritten' is checked against."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_refused(out: subprocess.CompletedProcess, *names: str, code: int = 2) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == code, text
    assert "Traceback" not in text, text
    for name in names:
        assert name in out.stderr, out.stderr


def scenario_with(tmp_path: Path, old: str, new: str, name: str = "s.toml") -> Path:
    assert old in SCENARIO, old
    path = tmp_path / name
    path.write_text(SCENARIO.replace(old, new, 1))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder holding one tiny trained run (``keep``), and a folder beside it
    that no command may touch."""
    base = tmp_path_factory.mktemp("cli")
    runs = base / "runs"
    runs.mkdir()
    (base / "outside").mkdir()
    (base / "outside" / "precious.txt").write_text("do not delete")
    cfg = base / "tiny.toml"
    cfg.write_text(TINY)
    out = run(
        "train.py",
        "--name",
        "keep",
        "--runs-dir",
        str(runs),
        "--config",
        str(cfg),
        "--timesteps",
        "2048",
        "--trace-source",
        "builtin",
        "--no-progress",
    )
    assert out.returncode == 0, out.stderr
    return base


def train_args(base: Path, *extra: str) -> list[str]:
    return [
        "train.py",
        "--runs-dir",
        str(base / "runs"),
        "--config",
        str(base / "tiny.toml"),
        "--trace-source",
        "builtin",
        "--no-progress",
        *extra,
    ]


# -- train.py: nothing lost ------------------------------------------------------------
@pytest.mark.parametrize("name", ["", ".", "..", "../outside", "a/b", "../../x"])
def test_a_run_name_must_be_plain(runs, name):
    before = snapshot(runs)
    out = run(*train_args(runs, "--name", name, "--overwrite", "--timesteps", "10"))
    assert_refused(out, "--name", "plain name")
    assert snapshot(runs) == before


def test_a_bad_config_deletes_nothing_before_failing(runs, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ppo]\nn_envs = [")
    before = snapshot(runs)
    out = run(
        "train.py",
        "--runs-dir",
        str(runs / "runs"),
        "--name",
        "keep",
        "--overwrite",
        "--config",
        str(bad),
    )
    assert_refused(out, str(bad), "not valid TOML")
    assert snapshot(runs) == before


def test_resume_past_the_asked_steps_says_done_and_changes_nothing(runs):
    before = snapshot(runs)
    out = run(*train_args(runs, "--name", "keep", "--resume", "--timesteps", "100"))
    assert out.returncode == 0, out.stderr
    assert "already done" in out.stdout and "Traceback" not in out.stderr
    assert snapshot(runs) == before


def test_resume_of_a_missing_run_creates_nothing(runs):
    out = run(*train_args(runs, "--name", "ghost", "--resume"))
    assert_refused(out, "ghost", "no such run to resume")
    assert not (runs / "runs" / "ghost").exists()


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous(runs):
    import shutil

    copy = runs / "runs" / "trunc"
    shutil.copytree(runs / "runs" / "keep", copy)
    (copy / "model.zip").unlink()  # resume from the checkpoints only
    newest = copy / "checkpoints" / "model_2048_steps.zip"
    newest.write_bytes(newest.read_bytes()[:500])
    out = run(*train_args(runs, "--name", "trunc", "--resume", "--timesteps", "3072"))
    assert out.returncode == 0, out.stderr
    assert "warning:" in out.stderr and "model_2048_steps.zip" in out.stderr
    assert "from model_1024_steps.zip at 1024 steps" in out.stdout
    assert "Traceback" not in out.stderr
    # The validation at 2048 came after the checkpoint it resumed from: trained again,
    # it is on the curve once.
    assert "validations after step 1024 dropped" in out.stdout
    steps = [
        int(line.split(",")[0]) for line in (copy / "eval_curve.csv").read_text().splitlines()[1:]
    ]
    assert steps == sorted(set(steps)) and steps[-1] == 3072


# Where a Ctrl-C lands: the [eval] and checkpoint frequencies make validations or
# checkpoint writes fill most of the time after the "training" line.
CTRL_C_MOMENTS = {
    "rollout": {},
    "validation": {"freq": "256", "episodes_per_family": "6"},
    "checkpoint": {"checkpoint_freq": "128"},
}


def tiny_with(values: dict[str, str]) -> str:
    """TINY with some of its ``key = value`` lines given other values."""
    lines = []
    for line in TINY.splitlines():
        key = line.split(" = ")[0]
        lines.append(f"{key} = {values[key]}" if key in values else line)
    return "\n".join(lines) + "\n"


def as_a_terminal_starts_it() -> None:
    """A terminal's foreground job has SIGINT's default disposition, which Python turns
    into KeyboardInterrupt. A test run in the background (a CI runner, `make test &`)
    inherits SIGINT ignored, and Python keeps ignoring it: reset it in the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_training(
    runs: Path, name: str, values: dict, whole_group: bool, delay: float, sig=signal.SIGINT
):
    """Start train.py, wait for its "training" line (or ``delay`` seconds from the
    start when ``delay`` is negative), press Ctrl-C (``sig``): to the process alone, or
    as a terminal does, to its whole process group. Returns (code, stderr, seconds to
    exit)."""
    import os

    cfg = runs / f"{name}.toml"
    cfg.write_text(tiny_with(values))
    args = [a if a != str(runs / "tiny.toml") else str(cfg) for a in train_args(runs)]
    cmd = [sys.executable, *args, "--name", name, "--timesteps", "500000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=as_a_terminal_starts_it)  # fmt: skip
    try:
        if delay < 0:
            time.sleep(-delay)
        else:
            for line in proc.stdout:
                if line.startswith("training "):
                    break
            time.sleep(delay)
        pressed = time.monotonic()
        if whole_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err, time.monotonic() - pressed
    finally:
        proc.kill()


@pytest.mark.parametrize(
    "moment, whole_group",
    # A terminal signals the whole foreground group: at every moment. The process
    # alone (what `kill -INT PID` does) once.
    [(moment, True) for moment in sorted(CTRL_C_MOMENTS)] + [("rollout", False)],
    ids=lambda v: v if isinstance(v, str) else ("group" if v else "process"),
)
def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(runs, moment, whole_group):
    name = f"int-{moment}-{whole_group:d}"
    code, err, seconds = interrupt_training(runs, name, CTRL_C_MOMENTS[moment], whole_group, 2.0)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "checkpoint saved" in err and f"--name {name} --resume" in err
    assert seconds < 60, seconds  # a bound for a loaded machine; about 1-2 s alone
    run_dir = runs / "runs" / name
    assert list((run_dir / "checkpoints").glob("model_*_steps.zip"))
    assert run_files_main([str(run_dir)]) == 0  # the record matches what was written


def test_sigterm_stops_training_as_ctrl_c_does(runs):
    """What `kill`, `timeout` and CI runners send: a checkpoint and how to resume."""
    code, err, _ = interrupt_training(runs, "int-term", {}, False, 2.0, signal.SIGTERM)
    assert code == 130, err
    assert "checkpoint saved" in err and "--name int-term --resume" in err
    assert "Traceback" not in err


def test_ctrl_c_before_training_writes_nothing(runs):
    code, err, _ = interrupt_training(runs, "int-start", {}, True, -1.0)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert not (runs / "runs" / "int-start").exists()


# -- train.py and evaluate.py: one line, exit 2 -----------------------------------------
SCENARIO_CASES = [
    ("deadline_s = 0.2", "deadline_s = -0.2", "[workload].deadline_s"),
    ("deadline_s = 0.2", "deadline_s = nan", "[workload].deadline_s: nan is not finite"),
    ("[scenario]", "[scenerio]", "unknown key 'scenerio'; did you mean 'scenario'?"),
    ('device = "mcu"', 'device = "toaster"', "[scenario].device: 'toaster' is not in the catalog"),
    ('hsdpa = "3g"', 'hsdpa = "4g"', "[radio].hsdpa: '4g' is not in the catalog"),
    ("rate_hz = 2.0", "rate_hz = = 2", "not valid TOML"),
    ('name = "default"', 'name = "default"\ndevise = "x"', "did you mean 'device'?"),
    ("grid = [", "grids = [", "[thresholds]: unknown key 'grids'; did you mean 'grid'?"),
    ("episode_requests = 400", "episode_requests = 2.7", "expected an integer, got 2.7"),
]


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
@pytest.mark.parametrize("old, new, message", SCENARIO_CASES)
def test_a_bad_scenario_is_one_line_naming_the_field(runs, tmp_path, script, old, new, message):
    path = scenario_with(tmp_path, old, new)
    if script == "train.py":
        args = ["--runs-dir", str(runs / "runs"), "--name", "fresh"]
    else:
        args = ["--policies", "edgent"]
    out = run(script, *args, "--scenario", str(path), "--trace-source", "builtin")
    assert_refused(out, str(path), message)
    assert not (runs / "runs" / "fresh").exists()


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_a_missing_scenario_or_a_binary_catalog(tmp_path, script):
    extra = ["--policies", "edgent"] if script == "evaluate.py" else ["--runs-dir", str(tmp_path)]
    out = run(script, *extra, "--scenario", str(tmp_path / "none.toml"))
    assert_refused(out, "none.toml", "scenario file not found")
    catalog = tmp_path / "catalog.toml"
    catalog.write_bytes(bytes(range(256)) * 8)
    path = scenario_with(tmp_path, 'catalog = "builtin"', f'catalog = "{catalog}"')
    out = run(script, *extra, "--scenario", str(path))
    assert_refused(out, "catalog.toml", "not a text file")
    path = tmp_path / "nosection.toml"
    path.write_text("[workload]\nrate_hz = 1.0\n")
    out = run(script, *extra, "--scenario", str(path))
    assert_refused(out, "[scenario] table is missing")


@pytest.mark.parametrize(
    "body, message",
    [
        ('[ppo]\ngamma = "x"', "[ppo].gamma: expected a number, got 'x'"),
        ("[ppo]\nn_envs = 0", "[ppo].n_envs: 0 out of range"),
        ('[ppo]\nnet_arch = "abc"', "[ppo].net_arch: expected a list of layer widths"),
        ("[ppo]\ngama = 0.9", "[ppo]: unknown key 'gama'; did you mean 'gamma'?"),
        ('[ppo]\nreward_shaping = "magic"', "[ppo].reward_shaping: must be one of"),
        ("[evaluation]\nfreq = 1", "unknown key 'evaluation'"),
    ],
)
def test_a_config_with_a_wrong_type_names_the_key(tmp_path, body, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    out = run("train.py", "--runs-dir", str(tmp_path / "runs"), "--config", str(cfg))
    assert_refused(out, str(cfg), message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--timesteps", "0"], "--timesteps: must be >= 1, got 0"),
        (["--timesteps", "-5"], "--timesteps: must be >= 1, got -5"),
        (["--n-envs", "0"], "--n-envs: must be >= 1, got 0"),
        (["--seed", "-1"], "--seed: must be in 0..4294967295, got -1"),
        (["--eval-freq", "0"], "--eval-freq: must be >= 1, got 0"),
        (["--seeds", "1,x"], "--seeds: must be integers"),
        (["--trace-source", "bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_train_flags_are_checked_first(tmp_path, flags, message):
    out = run("train.py", "--runs-dir", str(tmp_path / "runs"), "--name", "n", *flags)
    assert_refused(out, message)
    assert not (tmp_path / "runs").exists()


def test_a_run_whose_config_is_not_json(runs, tmp_path):
    import shutil

    bad = runs / "runs" / "badjson"
    shutil.copytree(runs / "runs" / "keep", bad)
    (bad / "config.json").write_text("{not json")
    seal(bad)  # recorded so: refused for what it is, not for a changed hash
    before = snapshot(bad)
    out = run("evaluate.py", "--policy", str(bad), "--policies", "ppo", "--episodes", "1")
    assert_refused(out, "config.json", "not a readable JSON file")
    out = run(*train_args(runs, "--name", "badjson", "--resume", "--timesteps", "4096"))
    assert_refused(out, "config.json", "not a readable JSON file")
    assert snapshot(bad) == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--episodes", "0"], "--episodes: must be >= 1, got 0"),
        (["--requests", "-5"], "--requests: must be >= 1, got -5"),
        (["--requests", "0"], "--requests: must be >= 1, got 0"),
        (["--policies", ","], "--policies: names no policy"),
        (["--policies", "edgnt"], "did you mean 'edgent'?"),
        (["--seed", "-1"], "--seed: must be in 0..4294967295, got -1"),
        (["--trace-source", "bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_evaluate_flags_are_checked_first(flags, message):
    out = run("evaluate.py", *flags, timeout=60)
    assert_refused(out, message)


def test_evaluate_refuses_bad_outputs_before_it_runs(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    t0 = time.monotonic()
    out = run("evaluate.py", "--policies", "edgent", "--json", str(tmp_path))
    assert_refused(out, "--json", "is a directory")
    out = run("evaluate.py", "--policies", "edgent", "--out", str(a_file))
    assert_refused(out, "--out", "is a file")
    out = run("evaluate.py", "--policies", "edgent", "--json", str(a_file / "x.json"))
    assert_refused(out, "--json", "cannot be created")
    assert time.monotonic() - t0 < 60  # refused up front, not after an evaluation
    assert a_file.read_text() == "x"


def test_evaluate_lists_each_bad_trace_and_why(tmp_path):
    (tmp_path / "a.txt").write_text("0 1\n1 nan\n")
    (tmp_path / "b.log").write_text("x y\n")
    out = run("evaluate.py", "--policies", "edgent", "--traces", str(tmp_path))
    assert_refused(
        out, "no usable trace files; 2 bad", "a.txt:2: NaN or infinity", "b.log:1: not a number"
    )


def test_evaluate_no_plots_does_not_claim_plots(tmp_path):
    out = run(
        "evaluate.py",
        "--policies",
        "edgent",
        "--episodes",
        "1",
        "--requests",
        "10",
        "--trace-source",
        "builtin",
        "--no-plots",
        "--out",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert "wrote " in out.stdout and "and plots" not in out.stdout
    assert not list(tmp_path.glob("*.png"))


# -- the server --------------------------------------------------------------------------
def test_server_refuses_a_busy_port_a_bad_port_and_bad_weights(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run("-m", "runtime_hooks.server", "--port", str(port), timeout=120)
        assert_refused(out, f"127.0.0.1:{port}", "in use")
    assert_refused(run("-m", "runtime_hooks.server", "--port", "70000"), "--port", "70000")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not weights at all")
    out = run("-m", "runtime_hooks.server", "--weights", str(weights), timeout=120)
    assert_refused(out, str(weights), "not a readable weights file")
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_server_shuts_down_cleanly_with_connections_open(sig):
    from profiles import codecs
    from profiles.dataset import load_official
    from runtime_hooks import protocol as P
    from runtime_hooks.sim2real import start_server

    proc, address = start_server("--delay-ms", "300")
    image = load_official("test").images[0]
    idle = [socket.create_connection(address) for _ in range(3)]
    busy = socket.create_connection(address)
    reader = P.handshake(busy, load_profile().model_hash)
    busy.sendall(P.request_frame(7, 0, 0, "raw", (28, 28), codecs.encode("raw", image)))
    time.sleep(0.1)  # the request is in flight (answers are held 300 ms)
    proc.send_signal(sig)
    header, _ = reader.read(5.0)
    assert header.kind == P.ANSWER and header.request_id == 7  # answered, not dropped
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "CancelledError" not in output
    assert "served 1 answers" in output
    for s in (*idle, busy):
        s.close()


# -- the device loop -----------------------------------------------------------------------
def test_device_validates_before_it_writes_its_log(tmp_path):
    log = tmp_path / "requests.jsonl"
    log.write_text("earlier run\n")
    for flags, message in (
        (["--requests", "0"], "--requests: must be >= 1, got 0"),
        (["--rate", "-1"], "--rate: must be a finite number >= 0"),
        (["--battery", "1.5"], "--battery: must be in [0, 1]"),
        (["--server", "127.0.0.1:99999"], "port 99999 is outside 1..65535"),
        (["--server", "localhost"], "address must be HOST:PORT"),
        (["--policy", str(tmp_path / "none.npz")], "none.npz"),
        (["--trace", str(tmp_path / "none.txt")], "--trace"),
    ):
        out = run(
            "-m",
            "runtime_hooks.device",
            "--server",
            "127.0.0.1:1",
            "--log",
            str(log),
            *flags,
            timeout=120,
        )
        assert_refused(out, message)
        assert log.read_text() == "earlier run\n"


@pytest.mark.parametrize("server", ["127.0.0.1:1", "no-such-host.invalid:9300"])
def test_device_warns_of_an_unreachable_server_and_counts_it(tmp_path, server):
    out = run(
        "-m",
        "runtime_hooks.device",
        "--server",
        server,
        "--requests",
        "4",
        "--rate",
        "0",
        "--host-speed",
        "--log",
        str(tmp_path / "l.jsonl"),
        "--json",
        str(tmp_path / "s.json"),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"warning: cannot reach the server at {server}" in out.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["fallbacks"] == {"server_down": 4} and summary["answered"] == 4
    assert summary["server"]["reached"] is False


# -- issue 29: refused before any work, naming the value ---------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,1", "names seed 1 twice"),
        ("0,,1", "empty item"),
        (",", "names no seed"),
        ("0,x", "must be integers"),
    ],
)
def test_seed_lists_with_repeats_or_gaps_are_refused_before_training(text, message):
    from agents.train_run import seed_list

    with pytest.raises(ValueError, match=message):
        seed_list(text)


def test_a_run_name_with_a_newline_is_refused():
    from settings.cli import plain_name

    with pytest.raises(ValueError, match="control character"):
        plain_name("run\nname")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (["--out", "runs/default/best_model.zip"], "name ends in .npz"),
        (["--out", "runs/default"], "is a folder"),
        (["--out", "{tmp}/x.npz", "--check", "-1"], r"--check: .*got -1"),
        (["--out", "{tmp}/x.npz", "--check", "99999999"], r"0\.\.1,000,000"),
        (["--bundle", "runs/default"], "no bundle manifest"),
        (["--out", "{tmp}/not_a_policy.npz"], "not a policy file"),
    ],
)
def test_export_never_writes_over_a_runs_files_and_checks_its_numbers(
    target, message, tmp_path, capsys
):
    from runtime_hooks.export import main as export

    np.savez(tmp_path / "not_a_policy.npz", x=np.zeros(2))
    before = {p: p.read_bytes() for p in (ROOT / "runs" / "default").iterdir() if p.is_file()}
    argv = [str(ROOT / "runs" / "default")]
    argv += [str(ROOT / a) if a.startswith("runs/") else a.format(tmp=tmp_path) for a in target]
    try:
        code = export(argv)
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    after = {p: p.read_bytes() for p in (ROOT / "runs" / "default").iterdir() if p.is_file()}
    assert after == before  # nothing of the run was touched
