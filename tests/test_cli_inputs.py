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


# -- nothing is written into a training run but by train.py (and its own export) ---------
@pytest.fixture
def a_run(tmp_path) -> Path:
    """A copy of the shipped run (its files and their record)."""
    import shutil

    run = tmp_path / "runs" / "copy"
    shutil.copytree(Path(__file__).resolve().parents[1] / "runs" / "default", run)
    return run


def test_outputs_inside_a_training_run_are_refused(a_run, capsys):
    from runtime_hooks import device, fleet

    before = {p.name: p.read_bytes() for p in a_run.iterdir() if p.is_file()}
    config = str(a_run / "config.json")
    commands = [
        (device.main, ["--server", "127.0.0.1:9", "--json", config]),
        (device.main, ["--server", "127.0.0.1:9", "--log", str(a_run / "eval_curve.csv")]),
        (fleet.main, ["--server", "127.0.0.1:9", "--json", config]),
        (evaluate.main, ["--policies", "edgent", "--json", config]),
        (evaluate.main, ["--policies", "edgent", "--out", str(a_run / "eval")]),
    ]
    for main, argv in commands:
        refused(capsys, main(argv), "inside the training run", str(a_run))
    assert before == {p.name: p.read_bytes() for p in a_run.iterdir() if p.is_file()}


def test_export_writes_into_its_own_run_only(a_run, tmp_path, capsys):
    from runtime_hooks import export

    other = tmp_path / "runs" / "other"
    other.mkdir()
    (other / "files.sha256.json").write_text("{}")
    rc = export.main([str(a_run), "--out", str(other / "policy.npz"), "--check", "0"])
    refused(capsys, rc, f"inside the training run {other}", f"not {a_run}")
    (tmp_path / "afile").write_text("x")
    rc = export.main([str(a_run), "--out", str(tmp_path / "afile" / "p.npz"), "--check", "0"])
    refused(capsys, rc, f"{tmp_path / 'afile'} is a file", "p.npz cannot be created")
    assert not (other / "policy.npz").exists()


def test_export_refuses_a_fleet_run_naming_why(capsys, tmp_path):
    from runtime_hooks import export

    rc = export.main(["runs/fleet", "--out", str(tmp_path / "p.npz"), "--check", "0"])
    refused(capsys, rc, "runs/fleet: trained for a fleet of", "single-device")


def test_seeds_whose_folders_exist_are_refused_before_the_first_trains(tmp_path, capsys):
    (tmp_path / "x-seed1").mkdir()
    rc = train_main("--runs-dir", str(tmp_path), "--name", "x", "--seeds", "0,1")
    refused(capsys, rc, "x-seed1 exists (seed 1 of --seeds 0,1)")
    assert not (tmp_path / "x-seed0").exists()


def test_a_sweep_never_replaces_a_training_run(a_run, tmp_path, capsys):
    from agents import sweep

    spec = tmp_path / "s.toml"
    spec.write_text("[sweep]\ntrials = 1\n[space]\nseed = { int = [0, 3] }\n")
    argv = [str(spec), "--name", "copy", "--runs-dir", str(a_run.parent), "--overwrite"]
    refused(capsys, sweep.main(argv), f"{a_run} is a training run", "pick another --name")
    rc = sweep.main([str(spec), "--name", "s", "--runs-dir", str(a_run / "config.json")])
    refused(capsys, rc, "--runs-dir", "is a file")
    assert (a_run / "model.zip").is_file()


@pytest.mark.parametrize(
    "flags, names",
    [
        (["--n-envs", "100000"], ["--n-envs: must be at most 1,024", "[ppo].n_envs"]),
        (["--timesteps", "100000000000"], ["--timesteps", "[ppo].total_timesteps"]),
        (["--eval-freq", "100000000000"], ["--eval-freq", "[eval].freq"]),
    ],
)
def test_train_flags_are_bounded_naming_the_flag(flags, names, capsys, tmp_path):
    refused(capsys, train.main(["--runs-dir", str(tmp_path), *flags]), *names)


def test_a_bad_config_is_named_before_an_existing_run(a_run, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[ppo]\nn_envs = 0\n")
    rc = train_main("--runs-dir", str(a_run.parent), "--name", "copy", "--config", str(bad))
    refused(capsys, rc, str(bad), "[ppo].n_envs")


@pytest.mark.parametrize(
    "flags, names",
    [
        (["--episodes", "1000000000"], ["--episodes: must be at most 1,000"]),
        (["--best-fixed-episodes", "1000000"], ["--best-fixed-episodes: must be at most 100"]),
        (["--requests", "1000000000000"], ["--requests", "[workload].episode_requests"]),
        (["--policy", "README.md"], ["--policy README.md: a file, not a run directory"]),
    ],
)
def test_evaluate_flags_are_bounded_and_named(flags, names, capsys):
    refused(capsys, evaluate.main(flags), *names)


def test_a_run_whose_scenario_was_moved_says_so(a_run, tmp_path, capsys):
    import json

    config = json.loads((a_run / "config.json").read_text())
    config["scenario"] = str(tmp_path / "gone.toml")
    (a_run / "config.json").write_text(json.dumps(config))
    from agents.run_files import seal

    seal(a_run)
    rc = evaluate.main(["--policy", str(a_run), "--policies", "ppo"])
    refused(capsys, rc, "gone.toml (its config.json), which no longer exists", "--scenario")


def test_the_device_names_a_radio_and_refuses_a_policy_beside_a_bundle(capsys, tmp_path):
    from runtime_hooks import device

    rc = device.main(["--server", "127.0.0.1:9", "--radio", "lt"])
    refused(capsys, rc, "--radio lt", "did you mean 'lte'?")
    rc = device.main(["--server", "127.0.0.1:9", "--bundle", str(tmp_path), "--policy", "edgent"])
    refused(capsys, rc, "--policy edgent and --bundle", "give one")


@pytest.mark.parametrize(
    "cloud, key, names",
    [
        ("faas", "workers = 4", ["[capacity].workers = 4", "serverless", "concurrency"]),
        ("iaas", "concurrency = 4", ["[capacity].concurrency = 4", "IaaS", "workers"]),
    ],
)
def test_a_capacity_key_of_the_other_kind_of_cloud_is_refused(tmp_path, cloud, key, names):
    from sim import ScenarioError, load_scenario

    text = SCENARIO.replace('cloud = "faas"', f'cloud = "{cloud}"') + f"\n[capacity]\n{key}\n"
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    for name in names:
        assert name in str(err.value)


def test_a_data_loader_that_does_not_fit_the_model_is_refused_first(tmp_path, capsys):
    (tmp_path / "mydata.py").write_text("def load():\n    return 7\n")
    path = scenario_naming(tmp_path, f'data = "{tmp_path / "mydata.py"}:load"')
    rc = train_main("--runs-dir", str(tmp_path / "runs"), "--scenario", str(path))
    refused(capsys, rc, str(path), "mydata.py:load")
    assert not (tmp_path / "runs").exists()


def test_the_scenario_sweep_leaves_out_a_group_with_no_request(tmp_path):
    """Episodes that all start above 30% battery: no 'battery < 0.3' row, no crash."""
    from agents.scenario_sweep import sweep

    path = tmp_path / "s.toml"
    assert "initial_min = 0.05" in SCENARIO
    path.write_text(SCENARIO.replace("initial_min = 0.05", "initial_min = 0.5"))
    rows = sweep(path, "builtin", 1, 5, 0)["rows"]
    groups = [row["group"] for row in rows]
    assert "battery >= 0.3" in groups and "battery < 0.3" not in groups
    assert all(row["requests"] > 0 for row in rows)


def test_measure_cloud_names_the_scenario_of_a_bad_model(tmp_path, capsys):
    from runtime_hooks import measure_cloud

    path = scenario_naming(tmp_path, 'model = "no_such_module:build"')
    rc = measure_cloud.main(["--scenario", str(path), "--out", str(tmp_path / "b.json")])
    refused(capsys, rc, str(path), "no_such_module")


def test_a_bad_batch_times_file_names_the_scenario_field(tmp_path):
    from settings.tables import InputError
    from sim import System, load_scenario
    from sim.cloud import batch_seconds

    (tmp_path / "bt.json").write_text("{}")
    iaas = SCENARIO.replace('cloud = "faas"', 'cloud = "iaas"')
    path = tmp_path / "s.toml"
    path.write_text(iaas + '\n[capacity]\nworkers = 2\nbatch_times = "bt.json"\n')
    scenario = load_scenario(path)
    with pytest.raises(InputError) as err:
        batch_seconds(System(scenario), scenario.capacity)
    assert str(path) in str(err.value) and "[capacity].batch_times" in str(err.value)
    assert "measure_cloud" in str(err.value)
