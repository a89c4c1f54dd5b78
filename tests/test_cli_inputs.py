"""Bad command-line input refused in one line before any work, called in-process (the
argument handling is the point; tests/test_cli_errors.py keeps real subprocess runs)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import evaluate
import train
from evaluate import gap_sentence
from runtime_hooks import server


def refused(capsys, rc: int, *names: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith("error: "), err
    for name in names:
        assert name in err, err
    return err


def train_main(*flags: str) -> int:
    return train.main([*flags, "--timesteps", "10", "--trace-source", "builtin", "--no-progress"])


# -- train.py and the file system ------------------------------------------------------
def test_a_runs_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep")
    refused(capsys, train_main("--runs-dir", str(tmp_path / "afile")), "--runs-dir", "is a file")
    assert (tmp_path / "afile").read_text() == "keep"


def test_a_run_name_too_long_for_a_file_system_is_refused(tmp_path, capsys):
    rc = train_main("--runs-dir", str(tmp_path), "--name", "x" * 300)
    refused(capsys, rc, "--name", "at most 200 bytes", "got 300")
    assert not any(tmp_path.iterdir())


def test_overwrite_never_deletes_through_a_symbolic_link(tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious.txt").write_text("do not delete")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "lnk").symlink_to(target)
    rc = train_main("--runs-dir", str(tmp_path / "runs"), "--name", "lnk", "--overwrite")
    refused(capsys, rc, "lnk", "symbolic link", str(target))
    assert (target / "precious.txt").read_text() == "do not delete"


def test_a_runs_dir_that_cannot_be_written_is_one_line(capsys):
    rc = train_main("--runs-dir", "/proc/splitctl-runs")
    refused(capsys, rc, "/proc/splitctl-runs/default", "cannot be written")


# -- evaluate.py -------------------------------------------------------------------------
def test_evaluate_refuses_a_policy_run_it_would_ignore(capsys):
    rc = evaluate.main(["--policy", "runs/default", "--policies", "edgent"])
    refused(capsys, rc, "--policy runs/default", "ppo is not among --policies")


@pytest.mark.parametrize(
    "share, words",
    [
        (0.775, "PPO closes 77.5% of the gap from the best heuristic to the planner"),
        (-1.595, "PPO is below the best heuristic, so it closes none of the gap to the planner"),
        (math.nan, "the planner does not beat the best heuristic here"),
    ],
)
def test_the_gap_closed_is_said_in_words(share, words):
    assert words in gap_sentence(share, "the planner")


# -- the server --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, names",
    [
        (["--device", "tpu"], ["--device", "cpu, cuda or cuda:N", "'tpu'"]),
        (["--device", "cuda:x"], ["--device", "'cuda:x'"]),
        (["--max-batch", "100000"], ["--max-batch", "at most 4,096", "memory"]),
        (["--workers", "100000"], ["--workers", "at most 256"]),
        (["--threads", "0"], ["--threads", ">= 1"]),
    ],
)
def test_the_server_refuses_what_it_cannot_serve(capsys, flags, names):
    refused(capsys, server.main(["--port", "0", *flags]), *names)


def test_the_server_refuses_cuda_where_there_is_none(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    refused(capsys, server.main(["--port", "0", "--device", "cuda"]), "0 CUDA device")


# -- a scenario's model, data and profile, together ---------------------------------------
SCENARIO = (Path(__file__).resolve().parents[1] / "envs" / "default_scenario.toml").read_text()


def scenario_naming(tmp_path: Path, lines: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.replace('profile = "builtin"', lines, 1))
    return path


@pytest.mark.parametrize(
    "lines, names",
    [
        ('model = "no_such_module:build"', ["model 'no_such_module:build'", "does not import"]),
        ('data = "profiles.dataset:no_such_loader"', ["no_such_loader"]),
        # A real model, with the built-in profile of another one.
        ('model = "profiles.zoo.mobilenet:build"', ["was measured on model", "mobilenet"]),
        ('profile = "missing.npz"', ["[scenario].profile", "missing.npz", "does not exist"]),
    ],
)
def test_train_and_evaluate_check_model_data_and_profile_first(tmp_path, capsys, lines, names):
    path = scenario_naming(tmp_path, lines)
    rc = train_main("--runs-dir", str(tmp_path / "runs"), "--scenario", str(path))
    refused(capsys, rc, str(path), *names)
    assert not (tmp_path / "runs").exists()
    rc = evaluate.main(
        ["--policies", "edgent", "--scenario", str(path), "--out", str(tmp_path / "e")]
    )
    refused(capsys, rc, str(path), *names)


def test_a_relative_profile_path_is_taken_from_the_scenario_file(tmp_path, monkeypatch):
    import shutil

    from sim import load_scenario

    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "profiles/data/profile_fmnist.npz", folder)
    path = scenario_naming(folder, 'profile = "profile_fmnist.npz"')
    monkeypatch.chdir(tmp_path)  # another working folder: the same file is meant
    assert load_scenario(path).profile == str(folder / "profile_fmnist.npz")
