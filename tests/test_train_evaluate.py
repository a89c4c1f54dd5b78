"""train.py and evaluate.py end to end, on small budgets."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_HYPERPARAMS as TINY

ROOT = Path(__file__).resolve().parent.parent


def run(*args, check=True):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=check
    )


def train(runs, cfg, timesteps: str, *extra: str, check: bool = True):
    """train.py on the tiny config and builtin traces (a later --name wins)."""
    return run(
        "train.py",
        "--name",
        "tiny",
        "--runs-dir",
        str(runs),
        "--config",
        str(cfg),
        "--timesteps",
        timesteps,
        "--trace-source",
        "builtin",
        "--no-progress",
        *extra,
        check=check,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    cfg = runs / "tiny.toml"
    cfg.write_text(TINY)
    out = train(runs, cfg, "2048")
    assert "trained 2048 steps" in out.stdout
    return runs, cfg


def test_a_run_holds_everything(tiny_run):
    runs, _ = tiny_run
    run_dir = runs / "tiny"
    for name in (
        "model.zip",
        "best_model.zip",
        "vecnormalize.json",
        "best_vecnormalize.json",
        "vecnormalize.pkl",
        "config.json",
        "eval_curve.csv",
        "eval_curve.png",
    ):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").rglob("events.out.tfevents.*"))
    assert json.loads((run_dir / "config.json").read_text())["total_timesteps"] == 2048
    steps = [int(r["timesteps"]) for r in csv.DictReader((run_dir / "eval_curve.csv").open())]
    assert steps == sorted(set(steps))  # one validation per step count, the final one too


def test_resume_continues_from_the_last_checkpoint(tiny_run):
    runs, cfg = tiny_run
    run_dir = runs / "tiny"
    before = list(csv.DictReader((run_dir / "eval_curve.csv").open()))
    out = train(runs, cfg, "4096", "--resume")
    assert "resuming" in out.stdout and "at 2048 steps" in out.stdout
    after = list(csv.DictReader((run_dir / "eval_curve.csv").open()))
    assert after[: len(before)] == before  # nothing logged is lost
    steps = [int(r["timesteps"]) for r in after]
    assert steps[-1] == 4096 and steps == sorted(steps)
    assert json.loads((run_dir / "config.json").read_text())["total_timesteps"] == 4096


def test_existing_run_needs_resume_or_overwrite(tiny_run):
    runs, cfg = tiny_run
    out = run(
        "train.py", "--name", "tiny", "--runs-dir", str(runs), "--timesteps", "10", check=False
    )
    assert out.returncode == 2 and "exists" in out.stderr


def test_short_training_beats_random(tmp_path):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.base import RandomPolicy
    from agents.ppo import ObsNormalizer, PPOPolicy
    from agents.rollout import make_specs, run_many
    from envs import OffloadEnv
    from envs.wrappers import DistinctActions, env_actions
    from traces.sets import load_families

    kwargs = {"trace_source": "builtin", "episode_requests": 50}
    venv = VecNormalize(
        make_vec_env(OffloadEnv, n_envs=4, seed=0, env_kwargs=kwargs, wrapper_class=DistinctActions)
    )
    model = PPO("MlpPolicy", venv, n_steps=256, batch_size=256, seed=0, device="cpu")
    model.learn(12_000)
    env = OffloadEnv(**kwargs, trace_split="val")
    fam = load_families("builtin", split="val")[0]
    specs = [s for f in sorted(fam) for s in make_specs(fam[f], 2, 9, (0.05, 1.0))]
    table = env_actions(env)
    ppo = run_many(env, PPOPolicy(model, ObsNormalizer.from_vecnormalize(venv), table), specs)
    rnd = run_many(env, RandomPolicy(tuple(env.action_space.nvec), 0), specs)
    assert ppo["reward"].mean() > rnd["reward"].mean() + 0.2


def test_evaluate_writes_the_documented_json(tiny_run, tmp_path):
    runs, _ = tiny_run
    out_json = tmp_path / "r.json"
    run(
        "evaluate.py",
        "--policy",
        str(runs / "tiny"),
        "--trace-source",
        "builtin",
        "--episodes",
        "1",
        "--requests",
        "30",
        "--best-fixed-episodes",
        "1",
        "--out",
        str(tmp_path / "eval"),
        "--json",
        str(out_json),
    )
    payload = json.loads(out_json.read_text())
    names = {
        "ppo",
        "oracle",
        "edge_only",
        "cloud_only",
        "neurosurgeon",
        "edgent",
        "spinn",
        "best_fixed",
        "random",
    }
    assert names <= set(payload["policies"])
    keys = {
        "reward_mean",
        "reward_ci95",
        "accuracy",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "deadline_miss_rate",
        "energy_mj",
        "cost_usd_per_million",
        "leakage",
    }
    for row in payload["policies"].values():
        assert keys <= set(row) and all(np.isfinite(row[k]) for k in keys)
    # PPO against each family's best heuristic, paired over the same episodes.
    vs = payload["ppo_vs"]
    assert set(vs) == {"overall", *payload["families"]}
    for group, row in vs.items():
        best = row["heuristic"]
        assert best not in ("ppo", "oracle", "random", "best_fixed_by_context")
        means = payload["policies"] if group == "overall" else payload["families"][group]
        expected = means["ppo"]["reward_mean"] - means[best]["reward_mean"]
        assert row["difference"] == pytest.approx(expected, abs=1e-9)
    for png in ("latency_cdf.png", "reward.png", "actions_vs_bandwidth.png", "pareto.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 10_000
    assert (tmp_path / "eval" / "summary.csv").is_file()


def test_evaluate_compares_ppo_with_the_label_blind_planner(tiny_run, tmp_path):
    """The planner is a clairvoyant reference: never the best heuristic, and PPO's paired
    difference from it is reported."""
    runs, _ = tiny_run
    out_json = tmp_path / "r.json"
    run(
        "evaluate.py", "--policy", str(runs / "tiny"), "--trace-source", "builtin",
        "--policies", "ppo,cloud_only,edgent,planner_label_blind", "--episodes", "1",
        "--requests", "24", "--no-plots", "--out", str(tmp_path / "eval"),
        "--json", str(out_json),
    )  # fmt: skip
    payload = json.loads(out_json.read_text())
    for group, row in payload["ppo_vs"].items():
        assert row["heuristic"] in ("cloud_only", "edgent")
        means = payload["policies"] if group == "overall" else payload["families"][group]
        expected = means["ppo"]["reward_mean"] - means["planner_label_blind"]["reward_mean"]
        assert row["vs_planner_label_blind"]["difference"] == pytest.approx(expected, abs=1e-9)


def test_evaluate_same_seed_same_numbers(tmp_path):
    outs = []
    for i in range(2):
        path = tmp_path / f"{i}.json"
        run(
            "evaluate.py",
            "--policies",
            "spinn,random,oracle",
            "--trace-source",
            "builtin",
            "--episodes",
            "1",
            "--requests",
            "30",
            "--seed",
            "4",
            "--no-plots",
            "--out",
            str(tmp_path / f"e{i}"),
            "--json",
            str(path),
        )
        outs.append(json.loads(path.read_text())["policies"])
    assert outs[0] == outs[1]


def test_evaluate_reads_a_directory_of_trace_files(tmp_path):
    traces = tmp_path / "mytraces"
    traces.mkdir()
    (traces / "flat").write_text("".join(f"{t} 2.0\n" for t in range(100)))
    (traces / "broken").write_text("0 1\n1 -1\n")
    out = run(
        "evaluate.py",
        "--policies",
        "cloud_only,edge_only",
        "--traces",
        str(traces),
        "--episodes",
        "1",
        "--requests",
        "20",
        "--no-plots",
        "--out",
        str(tmp_path / "e"),
    )
    assert "skipped bad trace" in out.stdout and "broken:2" in out.stdout


def test_train_with_regime_shaping_and_a_realizable_expert(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        TINY.replace("[eval]", 'reward_shaping = "regime"\nshaping_tail_share = 0.5\n[eval]')
        + '[imitation]\nsteps = 300\nexpert = "best_fixed_by_context"\nexpert_episodes = 1\n'
    )
    out = train(tmp_path, cfg, "512")  # one rollout of the two shaped envs
    assert "300 best_fixed_by_context decisions" in out.stdout
    assert "trained 512 steps" in out.stdout


def test_train_with_held_actions(tmp_path):
    cfg = tmp_path / "cfg.toml"
    held = 'action_repeat = 4\nreward_shaping = "tail_potential"\n[eval]'
    cfg.write_text(TINY.replace("[eval]", held))
    out = train(tmp_path, cfg, "512")
    assert "trained 512 steps" in out.stdout
    rows = list(csv.DictReader((tmp_path / "tiny" / "eval_curve.csv").open()))
    assert rows and all(np.isfinite(float(r["mean_reward"])) for r in rows)


def test_train_several_seeds_keeps_the_best_on_validation(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(TINY)
    out = train(tmp_path, cfg, "512", "--seeds", "3,4", "--name", "pick")
    scores = {}
    for seed in (3, 4):
        rows = list(csv.DictReader((tmp_path / f"pick-seed{seed}" / "eval_curve.csv").open()))
        scores[seed] = max(float(r["mean_reward"]) for r in rows)
    best = max(scores, key=scores.get)
    config = json.loads((tmp_path / "pick" / "config.json").read_text())
    assert config["seed"] == best and config["seed_selection"]["selected_seed"] == best
    assert (tmp_path / "pick" / "best_model.zip").is_file()
    assert not (tmp_path / "pick" / "checkpoints").exists()
    assert f"seed {best} copied to" in out.stdout
    again = train(tmp_path, cfg, "512", "--seeds", "3,4", "--name", "pick", check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    bad = train(tmp_path, cfg, "512", "--seeds", "1,two", "--name", "bad", check=False)
    assert bad.returncode == 2 and "--seeds: must be integers" in bad.stderr
    none = train(tmp_path, cfg, "512", "--seeds", ",", "--name", "bad", check=False)
    assert none.returncode == 2 and "--seeds: names no seed" in none.stderr


@pytest.mark.parametrize(
    "setting, message",
    [
        ('[ppo]\nreward_shaping = "magic"\n', "[ppo].reward_shaping: must be one of"),
        ("[ppo]\naction_repeat = 0\n", "[ppo].action_repeat: 0 out of range"),
        ('[imitation]\nsteps = 10\nexpert = "guru"\n', "[imitation].expert: must be one of"),
    ],
)
def test_train_refuses_unknown_shaping_or_expert(tmp_path, setting, message):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(setting)
    args = ["--name", "bad", "--runs-dir", str(tmp_path), "--config", str(cfg)]
    args += ["--timesteps", "256", "--trace-source", "builtin", "--no-progress"]
    out = run("train.py", *args, check=False)
    assert out.returncode == 2 and message in out.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policies", "ppo,alphago"], "unknown policy 'alphago'"),
        (["--policy", "/nonexistent/run"], "run directory not found"),
    ],
)
def test_evaluate_bad_input(args, message):
    out = run("evaluate.py", *args, "--episodes", "1", check=False)
    assert out.returncode == 2 and message in out.stderr


def test_evaluate_empty_trace_dir(tmp_path):
    out = run("evaluate.py", "--policies", "cloud_only", "--traces", str(tmp_path), check=False)
    assert out.returncode == 2 and "no trace files in this folder" in out.stderr


def test_model_for_another_action_space_is_refused(tiny_run, tmp_path):
    from agents.ppo import RunError, load_ppo

    runs, _ = tiny_run
    with pytest.raises(RunError, match=r"trained for action space \[6, 7, 8\] .* has \[6, 4, 8\]"):
        load_ppo(runs / "tiny", nvec=[6, 4, 8])
    with pytest.raises(RunError, match="config.json is missing"):
        load_ppo(tmp_path)
    with pytest.raises(RunError, match="trained on a profile of model c66085625bb287aa, this "):
        load_ppo(runs / "tiny", model_hash="0123456789abcdef")
