"""A run is never damaged by the commands that continue or load it: a resume trains on
the run's own scenario and hyperparameters and refuses flags that would change them,
and every file a run wrote is checked against its recorded SHA-256 before it is
unpickled. Commands are called in-process (their argument handling is the point)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_HYPERPARAMS as TINY

import evaluate
import train
from agents.run_files import RECORD
from agents.run_files import main as run_files_main
from runtime_hooks import export

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = (ROOT / "envs" / "default_scenario.toml").read_text()
GRID = "grid = [0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01]"


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny run ``custom`` trained on a scenario of its own: another threshold grid,
    so that the built-in scenario's action space differs from the run's."""
    base = tmp_path_factory.mktemp("safety")
    (base / "tiny.toml").write_text(TINY)
    assert GRID in SCENARIO
    (base / "own.toml").write_text(SCENARIO.replace(GRID, "grid = [0.6, 0.9, 1.01]"))
    (base / "other.toml").write_text(SCENARIO)
    rc = train.main(
        train_args(
            base,
            "custom",
            "--scenario",
            str(base / "own.toml"),
            "--timesteps",
            "2048",
            "--config",
            str(base / "tiny.toml"),
        )
    )
    assert rc == 0
    return base


def train_args(base: Path, name: str, *extra: str) -> list[str]:
    return [
        "--runs-dir",
        str(base / "runs"),
        "--name",
        name,
        "--trace-source",
        "builtin",
        "--no-progress",
        *extra,
    ]


def copy_run(base: Path, name: str) -> Path:
    target = base / "runs" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base / "runs" / "custom", target)
    return target


def refused(capsys, rc: int, *names: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for name in names:
        assert name in err, err
    return err


def test_resume_trains_on_the_runs_own_scenario_and_config(base):
    run = copy_run(base, "resumed")
    before = json.loads((run / "config.json").read_text())
    assert train.main(train_args(base, "resumed", "--resume", "--timesteps", "3072")) == 0
    after = json.loads((run / "config.json").read_text())
    assert after["scenario"] == before["scenario"] and after["nvec"] == before["nvec"]
    assert after["config"]["ppo"]["n_envs"] == 2  # the run's own, not the shipped 8
    assert after["total_timesteps"] == 3072
    assert run_files_main([str(run)]) == 0  # the record follows what the run wrote


@pytest.mark.parametrize(
    "flags, names",
    [
        (["--scenario", "other.toml"], ["other.toml", "own.toml", "own scenario"]),
        (["--n-envs", "4"], ["[ppo].n_envs (run: 2, asked: 4)"]),
        (["--trace-source", "synthetic"], ["--trace-source synthetic", "'builtin'"]),
        (["--seed", "5"], ["--seed 5", "seed 0"]),
    ],
)
def test_a_resume_that_would_change_the_run_is_refused(base, capsys, flags, names):
    run = copy_run(base, "guarded")
    flags = [str(base / f) if f.endswith(".toml") else f for f in flags]
    before = snapshot(run)
    rc = train.main(train_args(base, "guarded", "--resume", "--timesteps", "3072", *flags))
    refused(capsys, rc, *names)
    assert snapshot(run) == before


def test_a_changed_scenario_file_is_not_resumed(base, capsys, tmp_path):
    run = copy_run(base, "moved")
    own = tmp_path / "own.toml"
    own.write_text((base / "own.toml").read_text())
    config = json.loads((run / "config.json").read_text())
    config["scenario"] = str(own)
    (run / "config.json").write_text(json.dumps(config))
    run_files_main([str(run), "--record"])
    own.write_text(own.read_text().replace("rate_hz = 2.0", "rate_hz = 3.0"))
    before = snapshot(run)
    rc = train.main(train_args(base, "moved", "--resume", "--timesteps", "3072"))
    refused(capsys, rc, str(own), "changed since")
    assert snapshot(run) == before


def test_resume_and_overwrite_together_are_refused(base, capsys):
    before = snapshot(base / "runs")
    rc = train.main(train_args(base, "custom", "--resume", "--overwrite"))
    refused(capsys, rc, "--resume and --overwrite")
    assert snapshot(base / "runs") == before


def test_every_file_a_run_wrote_is_recorded(base):
    run = base / "runs" / "custom"
    record = json.loads((run / RECORD).read_text())
    written = {
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.is_file() and p.name != RECORD and p.relative_to(run).parts[0] != "tb"
    }
    assert set(record) == written
    assert {"model.zip", "best_model.zip", "vecnormalize.pkl", "config.json"} <= written


def test_a_changed_model_file_is_refused_before_loading(base, capsys, tmp_path):
    run = copy_run(base, "tampered")
    model = run / "best_model.zip"
    model.write_bytes(model.read_bytes() + b"\0")
    rc = evaluate.main(
        [
            "--policy",
            str(run),
            "--policies",
            "ppo",
            "--episodes",
            "1",
            "--trace-source",
            "builtin",
            "--out",
            str(tmp_path / "e"),
            "--no-plots",
        ]
    )
    refused(capsys, rc, str(model), "SHA-256 differs")
    rc = export.main([str(run), "--out", str(tmp_path / "p.npz"), "--check", "0"])
    refused(capsys, rc, str(model), "SHA-256 differs")
    assert not (tmp_path / "p.npz").exists()


def test_a_run_without_a_record_is_refused_with_the_way_to_record_it(base, capsys, tmp_path):
    run = copy_run(base, "unrecorded")
    (run / RECORD).unlink()
    rc = export.main([str(run), "--out", str(tmp_path / "p.npz"), "--check", "0"])
    refused(capsys, rc, f"no {RECORD}", f"python -m agents.run_files {run} --record")


def test_a_policy_file_exported_into_the_run_joins_its_record(base):
    run = copy_run(base, "exported")
    assert export.main([str(run), "--out", str(run / "policy.npz"), "--check", "0"]) == 0
    assert "policy.npz" in json.loads((run / RECORD).read_text())
    assert run_files_main([str(run)]) == 0


def test_a_changed_checkpoint_is_skipped_for_the_previous_one(base, capsys):
    run = copy_run(base, "ckpt")
    (run / "model.zip").unlink()
    (run / "vecnormalize.pkl").unlink()
    newest = sorted((run / "checkpoints").glob("model_*_steps.zip"))[-1]
    newest.write_bytes(newest.read_bytes()[::-1])
    run_files_main([str(run), "--record"])  # the record no longer lists the removed files
    newest.write_bytes(newest.read_bytes()[::-1])  # ... and now holds another hash for it
    with pytest.warns(RuntimeWarning, match="SHA-256 differs") as warned:
        assert train.main(train_args(base, "ckpt", "--resume", "--timesteps", "3072")) == 0
    assert newest.name in str(warned[0].message)
    assert "from model_1024_steps.zip at 1024 steps" in capsys.readouterr().out
