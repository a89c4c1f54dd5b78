"""Ray: sweeps on Ray Tune (agents.sweep) and the cloud tail on Ray Serve
(runtime_hooks.server --backend ray). The sweeps and the server start Ray on this
machine, as a user without a cluster would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from agents.sweep_spec import SweepError, load_sweep, to_toml

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

# A sweep of tiny runs: two envs, short episodes, a validation every 512 decisions.
TINY = """
[ppo]
total_timesteps = 1024
n_envs = 2
n_steps = 256
batch_size = 128
n_epochs = 2
episode_requests = 64

[eval]
freq = 512
episodes_per_family = 1
checkpoint_freq = 512
"""


def sweep_file(tmp_path: Path, head: str, space: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(f"[sweep]\n{head}\n{TINY}\n[space]\n{space}\n")
    return path


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module's sweeps and servers, joined with --address as a
    cluster made by `ray start --head` would be (each test starting and stopping its own
    took about 10 s). The module runs on one worker (xdist_group), so one Ray at a time;
    test_a_ray_server_that_cannot_start_is_one_line still starts Ray itself."""
    import ray

    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                       logging_level="WARNING")  # fmt: skip
    yield context.address_info["gcs_address"]
    ray.shutdown()


def run_sweep(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agents.sweep", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


# -- the sweep file ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "head, space, message",
    [
        ("trials = 2", '"ppo.learnin_rate" = { loguniform = [1e-4, 1e-3] }',
         "unknown key 'ppo.learnin_rate'; did you mean 'ppo.learning_rate'"),
        ("trials = 2", '"ppo.gamma" = { normal = [0.9, 0.1] }',
         "unknown distribution 'normal'"),
        ("trials = 2", "ppo.n_steps = { uniform = [64, 128] }", "not a real number"),
        ("trials = 2", "ppo.n_envs = { int = [0, 4] }", "[ppo].n_envs: 0 out of range"),
        ("trials = 2", "ppo.learning_rate = { loguniform = [0, 1e-3] }", "needs low > 0"),
        ("trials = 2", "ppo.gamma = { uniform = [0.9] }", "takes [low, high]"),
        ("trials = 2", "seed = { choice = [1, 1] }", "lists a value twice"),
        ('trials = 2\nsearch = "optuna"', "seed = { grid = [0, 1] }",
         'grid needs search = "random"'),
        ("trails = 2", "seed = { int = [0, 3] }", "unknown key 'trails'; did you mean 'trials'"),
        ('trials = 2\nsearch = "bayes"', "seed = { int = [0, 3] }",
         "[sweep].search: must be one of"),
        ("trials = 2", 'scenario = { choice = ["missing.toml"] }', "missing.toml"),
        ("", "seed = { int = [0, 3] }", "[sweep].trials: missing"),
    ],
)  # fmt: skip
def test_a_bad_sweep_file_names_the_key(tmp_path, head, space, message):
    with pytest.raises(SweepError, match=None) as err:
        load_sweep(sweep_file(tmp_path, head, space))
    assert message in str(err.value) and "sweep.toml" in str(err.value)


def test_a_trials_settings_are_a_config_train_py_reads(tmp_path):
    """Each trial's --config file is the fixed settings with the sampled values over
    them, read back by train.py's own loader (lists travel as JSON through Optuna)."""
    from agents.hyperparams import load_hyperparams

    space = (
        "ppo.net_arch = { choice = [[32, 32], [64]] }\n"
        "ppo.gamma = { uniform = [0.8, 0.95] }\nseed = { int = [3, 9] }"
    )
    spec = load_sweep(sweep_file(tmp_path, 'trials = 1\nsearch = "optuna"', space))
    drawn = {"ppo.net_arch": spec.space[0].encode([64]), "ppo.gamma": 0.85, "seed": 7}
    assert drawn["ppo.net_arch"] == "[64]"
    path = tmp_path / "trial.toml"
    path.write_text(to_toml(spec.trial_tables(drawn)))
    hp = load_hyperparams(path)
    assert hp.ppo.net_arch == [64] and hp.ppo.gamma == 0.85 and hp.ppo.total_timesteps == 1024
    assert spec.trial_run(drawn) == (None, 7)
    assert spec.budget() == (1024, 512)


def test_an_unreachable_cluster_is_one_line_and_creates_nothing(tmp_path, ray_address):
    path = sweep_file(tmp_path, "trials = 2", "seed = { int = [0, 3] }")
    runs = tmp_path / "runs"
    done = run_sweep(path, "--name", "s", "--runs-dir", runs, "--address", "127.0.0.1:1")
    assert done.returncode == 2, done.stderr
    assert "--address 127.0.0.1:1: no Ray cluster answers there" in done.stderr
    assert "Traceback" not in done.stderr and not runs.exists()
    bad = run_sweep(path, "--name", "s", "--runs-dir", runs, "--address", "nowhere")
    assert bad.returncode == 2 and "--address: expected HOST:PORT" in bad.stderr
    big = sweep_file(tmp_path, "trials = 2\ncpus_per_trial = 512", "seed = { int = [0, 3] }")
    done = run_sweep(big, "--name", "s", "--runs-dir", runs, "--address", ray_address)
    assert done.returncode == 2 and "cpus_per_trial is 512, the Ray cluster has" in done.stderr
    assert "Traceback" not in done.stderr and not runs.exists()


# -- sweeps on local Ray -------------------------------------------------------------------
def test_a_two_trial_sweep_writes_its_json_and_the_best_run(tmp_path, ray_address):
    from agents.ppo import load_ppo

    path = sweep_file(tmp_path, 'trials = 2\nsearch = "optuna"\nscheduler = "asha"\n'
                      'trace_source = "builtin"',
                      "ppo.learning_rate = { loguniform = [1e-4, 1e-3] }")  # fmt: skip
    runs, out = tmp_path / "runs", tmp_path / "summary.json"
    done = run_sweep(path, "--name", "s", "--runs-dir", runs, "--json", out, "--no-progress",
                     "--address", ray_address)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(out.read_text())
    assert summary == json.loads((runs / "s" / "sweep.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 2 and {t["status"] for t in trials} <= {"completed", "stopped"}
    for t in trials:
        assert 1e-4 <= t["config"]["ppo.learning_rate"] <= 1e-3
        assert (runs / "s" / t["name"] / "eval_curve.csv").is_file()
        assert (runs / "s" / "configs" / f"{t['name']}.toml").is_file()
    best = summary["best"]
    assert best["validation_reward"] == max(t["validation_reward"] for t in trials)
    config = json.loads((runs / "s" / "best" / "config.json").read_text())
    assert config["sweep"]["trial"] == best["name"]
    assert load_ppo(runs / "s" / "best") is not None  # ready for evaluate.py and export
    assert (runs / "s" / "trials.png").stat().st_size > 0
    again = run_sweep(path, "--name", "s", "--runs-dir", runs, "--address", ray_address)
    assert again.returncode == 2 and "this sweep is finished" in again.stderr


def test_a_crashing_trial_is_reported_failed_and_the_sweep_goes_on(tmp_path, ray_address):
    """A fleet cannot train with reward shaping: that trial fails in its worker with
    the error train.py raises; the other trial completes and becomes the best."""
    fleet = (ROOT / "envs" / "scenarios" / "fleet.toml").read_text()
    (tmp_path / "fleet2.toml").write_text(
        fleet.replace("devices = 128", "devices = 2").replace("sizes = [32, 64, 128, 256]",
                                                              "sizes = [2]"))  # fmt: skip
    path = sweep_file(tmp_path, 'trials = 1\nscheduler = "fifo"\ntrace_source = "builtin"\n'
                      'scenario = "fleet2.toml"',
                      'ppo.reward_shaping = { grid = ["none", "tail_potential"] }')  # fmt: skip
    runs = tmp_path / "runs"
    done = run_sweep(path, "--name", "c", "--runs-dir", runs, "--no-progress", "--address",
                     ray_address)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    trials = {t["config"]["ppo.reward_shaping"]: t
              for t in json.loads((runs / "c" / "sweep.json").read_text())["trials"]}  # fmt: skip
    assert trials["none"]["status"] == "completed"
    failed = trials["tail_potential"]
    assert failed["status"] == "failed" and "reward shaping is not available" in failed["error"]
    assert json.loads((runs / "c" / "sweep.json").read_text())["best"]["name"] == trials["none"][
        "name"]  # fmt: skip
    assert f"{failed['name']} failed: ValueError: reward shaping" in done.stdout


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path, ray_address):
    """Ctrl-C after the first validations: exit 130, no summary; the same command then
    finishes the sweep, each trial continuing from its checkpoint (its curve goes on
    from where it stopped, it does not start again)."""
    import csv
    import signal
    import time

    head = 'trials = 1\nsearch = "random"\nscheduler = "fifo"\ntrace_source = "builtin"'
    path = sweep_file(tmp_path, head, "seed = { grid = [0, 1] }")
    text = path.read_text().replace("total_timesteps = 1024", "total_timesteps = 2048")
    path.write_text(text)
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "agents.sweep", str(path), "--name", "r", "--runs-dir",
            str(runs), "--no-progress", "--address", ray_address]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(runs.glob("r/trial_*/checkpoints/model_*_steps.zip"))) >= 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "the same command resumes it" in out and not (runs / "r" / "sweep.json").exists()
    assert f"--name r --runs-dir {runs}" in out  # the command printed is the one to run
    before = {d.name: len(list(csv.DictReader((d / "eval_curve.csv").open())))
              for d in runs.glob("r/trial_*")}  # fmt: skip
    assert before and all(n >= 1 for n in before.values())
    done = run_sweep(*args[3:])
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((runs / "r" / "sweep.json").read_text())
    assert [t["status"] for t in summary["trials"]] == ["completed", "completed"]
    for name in before:
        steps = [int(r["timesteps"]) for r in csv.DictReader(
            (runs / "r" / name / "eval_curve.csv").open())]  # fmt: skip
        assert steps == sorted(set(steps)) and steps[-1] >= 2048  # continued, not restarted


# -- the cloud tail on Ray Serve ---------------------------------------------------------------
def test_ray_serve_answers_the_device_loop_as_the_in_process_backend(tmp_path, ray_address):
    """Real device loops (two devices: the full model and the tail from cut 2) against
    the server with each backend: the same requests get the same answers."""
    from agents.base import FixedPolicy
    from runtime_hooks.fleet import fleet_traces, fleet_workload, run_fleet
    from runtime_hooks.sim2real import start_server, stop_server
    from sim.scenario import load_scenario

    scenario_path = ROOT / "envs" / "scenarios" / "fleet.toml"
    scenario = load_scenario(scenario_path)
    work = fleet_workload(scenario, fleet_traces(None), 2, 16, seed=0)
    policies = [FixedPolicy(0, 6, 0), FixedPolicy(2, 6, 0)]
    answers = {}
    ray_backend = ["--backend", "ray", "--replicas", "1", "--ray-address", ray_address]
    for backend in (["--backend", "inprocess"], ray_backend):
        proc, address = start_server("--scenario", str(scenario_path), *backend, timeout_s=180)
        try:
            summary = run_fleet(address, work, scenario, policies, fallback_after_s=30.0,
                                lead_s=1.0)  # fmt: skip
        finally:
            stop_server(proc)
        assert summary["answered"] == 16 and summary["lost"] == 0, summary
        assert summary["cloud_answers"] == 16 and summary["errors"] == []
        answers[backend[1]] = [(r.path, r.prediction, round(float(r.confidence), 4))
                               for device in summary["results"] for r in device]  # fmt: skip
    assert answers["ray"] == answers["inprocess"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--replicas", "2"], "--replicas: only with --backend ray"),
        (["--backend", "ray", "--replicas", "3:1"], "need 1 <= MIN <= MAX <= 64"),
        (["--backend", "ray", "--replicas", "0"], "need 1 <= MIN <= MAX <= 64"),
        (["--backend", "ray", "--replicas", "a:b"], "expected N or MIN:MAX"),
        (["--backend", "ray", "--workers", "2"], "scale with --replicas"),
        (["--backend", "ray", "--ray-address", "nowhere"], "expected HOST:PORT"),
    ],
)
def test_server_backend_flags_are_checked_first(flags, message):
    from runtime_hooks.server import ServerArgs
    from settings.cli import UsageError, parse

    with pytest.raises(UsageError) as err:
        parse(ServerArgs, flags, "server")
    assert message in str(err.value)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ray-address", "127.0.0.1:1"], "--ray-address 127.0.0.1:1: no Ray cluster answers"),
        (["--replicas", "64"], "--replicas 64: 64 replicas of 1 CPU (--threads) each need 64 "
                               "CPUs, the Ray cluster has"),
    ],
)  # fmt: skip
def test_a_ray_server_that_cannot_start_is_one_line(flags, message):
    done = subprocess.run(
        [sys.executable, "-m", "runtime_hooks.server", "--port", "0", "--backend", "ray", *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr


def test_the_default_paths_do_not_import_ray():
    """Ray is imported by a sweep and by the Ray backend only: the server, the device
    loop, train.py and evaluate.py start as fast without it."""
    code = ("import sys, runtime_hooks.server, runtime_hooks.device, train, evaluate, "
            "agents.sweep; print('ray' in sys.modules or 'optuna' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "False"
