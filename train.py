"""Train a PPO controller on Offload-v0.

    python train.py [--name NAME] [--timesteps N] [--seed S] [--config FILE]
                    [--scenario FILE] [--trace-source auto|shared|builtin|synthetic]
                    [--resume] [--overwrite]

Hyperparameters live in ``agents/hyperparams.toml``; ``--config`` overrides any of
them, flags override both. Everything of a run lands in ``runs/NAME/``: the final
model and the best one on the validation traces (``model.zip``, ``best_model.zip``),
their observation normalisation as JSON (and VecNormalize's full state for resuming),
the resolved config, TensorBoard logs (``tb/``), checkpoints, and the validation curve
(``eval_curve.csv`` and ``eval_curve.png``). ``--resume`` continues from the last
checkpoint with the same step count, so TensorBoard curves continue where they stopped.

Step counts (``--timesteps``, ``total_timesteps``, the ``[eval]`` frequencies, the
curve's ``timesteps``) are PPO steps: decisions, each held for ``action_repeat``
requests in training (8 in the shipped config).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent
HYPERPARAMS = PROJECT_ROOT / "agents" / "hyperparams.toml"
SHAPINGS = ("none", "tail_potential", "regime")  # see envs/shaping.py


def load_config(path: Path | None) -> dict:
    config = tomllib.loads(HYPERPARAMS.read_text())
    if path is not None:
        try:
            override = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"error: {path}: cannot read config ({exc})") from None
        for section, values in override.items():
            if section not in config or not isinstance(values, dict):
                raise SystemExit(f"error: {path}: unknown section [{section}]")
            unknown = set(values) - set(config[section])
            if unknown:
                raise SystemExit(f"error: {path}: unknown key(s) {sorted(unknown)} in [{section}]")
            config[section].update(values)
    return config


def make_env_fn(
    scenario,
    trace_source: str,
    split: str,
    sample_split: str,
    episode_requests: int,
    accuracy_credit: str,
    shaping: str = "none",
    gamma: float = 0.9,
    tail_share: float = 1.0,
    action_repeat: int = 1,
):
    if shaping not in SHAPINGS:
        raise SystemExit(
            f"error: reward_shaping must be one of {', '.join(SHAPINGS)}, not {shaping!r}"
        )
    if action_repeat < 1:
        raise SystemExit(f"error: action_repeat must be >= 1, not {action_repeat}")

    def make():
        from stable_baselines3.common.monitor import Monitor

        from envs import OffloadEnv
        from envs.shaping import RegimePotential, TailPotential
        from envs.wrappers import ActionRepeat, DistinctActions

        env = OffloadEnv(
            scenario,
            trace_source=trace_source,
            trace_split=split,
            sample_split=sample_split,
            episode_requests=episode_requests,
            accuracy_credit=accuracy_credit,
        )
        if action_repeat > 1:
            env = ActionRepeat(env, action_repeat)
        # Shaping wraps the held decisions: its potential then moves with the learner's
        # own steps and gamma, which is what keeps the optimal policy unchanged.
        if shaping == "tail_potential":
            env = TailPotential(env, gamma)
        elif shaping == "regime":
            env = RegimePotential(env, tail_share)
        return Monitor(DistinctActions(env))

    return make


def ppo_kwargs(ppo_cfg: dict) -> dict:
    """The PPO constructor's arguments from the ``[ppo]`` table."""
    return {
        "n_steps": int(ppo_cfg["n_steps"]),
        "batch_size": int(ppo_cfg["batch_size"]),
        "n_epochs": int(ppo_cfg["n_epochs"]),
        "learning_rate": float(ppo_cfg["learning_rate"]),
        "gamma": float(ppo_cfg["gamma"]),
        "gae_lambda": float(ppo_cfg["gae_lambda"]),
        "clip_range": float(ppo_cfg["clip_range"]),
        "ent_coef": float(ppo_cfg["ent_coef"]),
        "vf_coef": float(ppo_cfg["vf_coef"]),
        "max_grad_norm": float(ppo_cfg["max_grad_norm"]),
        "policy_kwargs": {"net_arch": list(ppo_cfg["net_arch"])},
    }


def normalized(venv, norm_cfg: dict, gamma: float):
    """``venv`` behind ``VecNormalize`` as the ``[normalize]`` table says."""
    from stable_baselines3.common.vec_env import VecNormalize

    return VecNormalize(
        venv,
        norm_obs=norm_cfg["norm_obs"],
        norm_reward=norm_cfg["norm_reward"],
        clip_obs=norm_cfg["clip_obs"],
        gamma=gamma,
    )


def validation_episodes(scenario, trace_source: str, episode_requests: int, per_family: int):
    """The validation env (val traces, val images) and its fixed episodes, the same at
    every evaluation of a run and in every run (common random numbers)."""
    from agents.rollout import make_specs
    from envs import OffloadEnv
    from traces.sets import group_by_family

    val_env = OffloadEnv(
        scenario,
        trace_source=trace_source,
        trace_split="val",
        sample_split="val",
        episode_requests=episode_requests,
    )
    by_family = group_by_family(list(val_env.traces))
    battery = (scenario.battery.initial_min, scenario.battery.initial_max)
    specs = [
        s for fam in sorted(by_family) for s in make_specs(by_family[fam], per_family, 777, battery)
    ]
    return val_env, specs


def latest_checkpoint(run: Path) -> tuple[Path, Path, int] | None:
    found = []
    for path in (run / "checkpoints").glob("model_*_steps.zip"):
        steps = int(re.search(r"model_(\d+)_steps", path.name).group(1))
        norm = run / "checkpoints" / f"vecnormalize_{steps}_steps.pkl"
        if norm.is_file():
            found.append((path, norm, steps))
    return max(found, key=lambda f: f[2]) if found else None


def plot_curve(csv_path: Path, png_path: Path, requests_per_step: int = 1) -> None:
    """The validation curve against training requests (PPO steps x action repeat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    steps = [int(r["timesteps"]) * requests_per_step for r in rows]
    mean = np.array([float(r["mean_reward"]) for r in rows])
    ci = np.array([float(r["ci95"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, mean, marker="o", label="PPO (deterministic)")
    ax.fill_between(steps, mean - ci, mean + ci, alpha=0.25)
    ax.set_xlabel("training requests" if requests_per_step == 1 else
                  f"training requests (decisions held for {requests_per_step})")  # fmt: skip
    ax.set_ylabel("mean reward per request")
    ax.set_title("validation traces")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def warm_start(model, venv, scenario, args, config: dict, episode_requests: int) -> None:
    """Imitation of an expert on the training traces (see ``agents.imitation``): the
    observation statistics start from the demonstrations, the actor from their actions."""
    from agents.best_fixed import find_best_fixed_by_context
    from agents.imitation import FrozenRunningMeanStd, collect_demonstrations, pretrain_actor
    from agents.oracle import Oracle
    from envs import OffloadEnv

    cfg = config["imitation"]
    env = OffloadEnv(
        scenario, trace_source=args.trace_source, trace_split="train", sample_split="val",
        episode_requests=episode_requests,
    )  # fmt: skip
    if cfg["expert"] == "oracle":
        expert = Oracle()
    elif cfg["expert"] == "best_fixed_by_context":
        expert = find_best_fixed_by_context(
            env, list(env.traces), episodes=int(cfg["expert_episodes"]), seed=args.seed + 12345
        )
        print(f"imitation expert: {len(expert.table)} (radio, battery band) actions")
    else:
        raise SystemExit(
            f"error: [imitation] expert must be oracle or best_fixed_by_context, "
            f"not {cfg['expert']!r}"
        )
    obs, actions = collect_demonstrations(env, expert, int(cfg["steps"]), seed=args.seed)
    stats = FrozenRunningMeanStd.of(obs)
    if cfg["freeze_obs_normalization"]:
        venv.obs_rms = stats
    else:  # the same statistics, which PPO's rollouts then keep updating
        rms = venv.obs_rms
        rms.mean, rms.var, rms.count = stats.mean, stats.var, stats.count
    accuracy = pretrain_actor(
        model, venv.normalize_obs(obs), actions, int(cfg["epochs"]),
        learning_rate=float(cfg["learning_rate"]), seed=args.seed,
    )  # fmt: skip
    print(f"imitation: {len(obs)} {cfg['expert']} decisions, actor matches {accuracy:.1%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train PPO on Offload-v0.")
    parser.add_argument("--name", default="default")
    parser.add_argument("--runs-dir", type=Path, default=PROJECT_ROOT / "runs")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--scenario", default=None, help="scenario TOML (default: built-in)")
    parser.add_argument("--trace-source", default="auto")
    parser.add_argument(
        "--timesteps", type=int, default=None,
        help="PPO steps; each is a decision held for action_repeat requests",
    )  # fmt: skip
    parser.add_argument("--n-envs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--seeds", default=None,
        help="comma-separated seeds: train runs/NAME-seedS for each, then copy the one "
        "with the best validation reward to runs/NAME",
    )  # fmt: skip
    parser.add_argument("--eval-freq", type=int, default=None, help="PPO steps between validations")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds is not None:
        return train_seeds(args)
    return train_one(args)


def best_validation(curve_csv: Path) -> float:
    """The best mean reward a run's validation curve recorded (-inf before the first)."""
    rows = csv.DictReader(curve_csv.open())
    return max((float(r["mean_reward"]) for r in rows), default=-np.inf)


def train_seeds(args: argparse.Namespace) -> int:
    """One run per seed, then the best on the validation traces becomes runs/NAME:
    seeds of the same config differ (BENCHMARKS.md), and validation tells them apart."""
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds must be integers separated by commas, not {args.seeds!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    if not seeds:
        print("error: --seeds names no seed", file=sys.stderr)
        return 2
    target = args.runs_dir / args.name
    if target.exists() and not args.overwrite:
        print(f"error: {target} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    scores = {}
    for seed in seeds:
        name = f"{args.name}-seed{seed}"
        # --resume continues the seeds that had started; the others start fresh.
        resume = args.resume and latest_checkpoint(args.runs_dir / name) is not None
        one = argparse.Namespace(**{**vars(args), "name": name, "seed": seed, "resume": resume})
        rc = train_one(one)
        if rc:
            return rc
        scores[seed] = best_validation(args.runs_dir / name / "eval_curve.csv")
    best = max(scores, key=scores.get)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(args.runs_dir / f"{args.name}-seed{best}", target,
                    ignore=shutil.ignore_patterns("checkpoints"))  # fmt: skip
    config = json.loads((target / "config.json").read_text())
    config["seed_selection"] = {"best_validation_by_seed": scores, "selected_seed": best}
    (target / "config.json").write_text(json.dumps(config, indent=2))
    listed = ", ".join(f"seed {s}: {v:.4f}" for s, v in scores.items())
    print(f"best validation reward by seed ({listed}); seed {best} copied to {target}")
    return 0


def train_one(args: argparse.Namespace) -> int:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from agents.metrics import episode_rewards, mean_ci95
    from agents.ppo import ObsNormalizer, PPOPolicy, portable_path
    from agents.rollout import run_many
    from envs import load_scenario
    from envs.wrappers import distinct_actions

    torch.set_num_threads(1)
    config = load_config(args.config)
    ppo_cfg, norm_cfg, eval_cfg = config["ppo"], config["normalize"], config["eval"]
    if args.timesteps is not None:
        ppo_cfg["total_timesteps"] = args.timesteps
    if args.n_envs is not None:
        ppo_cfg["n_envs"] = args.n_envs
    if args.eval_freq is not None:
        eval_cfg["freq"] = args.eval_freq
    scenario = load_scenario(args.scenario)
    run = args.runs_dir / args.name
    if run.exists() and not (args.resume or args.overwrite):
        print(f"error: {run} exists; pass --resume to continue it or --overwrite", file=sys.stderr)
        return 2
    if args.overwrite and run.exists() and not args.resume:
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "checkpoints").mkdir(exist_ok=True)

    n_envs, episode_requests = int(ppo_cfg["n_envs"]), int(ppo_cfg["episode_requests"])
    make = make_env_fn(
        scenario,
        args.trace_source,
        "train",
        "val",
        episode_requests,
        str(ppo_cfg["accuracy_credit"]),
        str(ppo_cfg["reward_shaping"]),
        float(ppo_cfg["gamma"]),
        float(ppo_cfg["shaping_tail_share"]),
        int(ppo_cfg["action_repeat"]),
    )
    venv = DummyVecEnv([make for _ in range(n_envs)])
    venv.seed(args.seed)

    # Validation: the val traces, the same episodes at every evaluation (CRN).
    val_env, specs = validation_episodes(
        scenario, args.trace_source, episode_requests, int(eval_cfg["episodes_per_family"])
    )

    table = distinct_actions(*val_env.action_space.nvec)
    resume = latest_checkpoint(run) if args.resume else None
    if args.resume and resume is None:
        print(f"error: {run}: no checkpoint to resume from", file=sys.stderr)
        return 2
    if resume is not None:
        model_path, norm_path, done_steps = resume
        venv = VecNormalize.load(str(norm_path), venv)
        venv.training = True
        model = PPO.load(model_path, env=venv, device="cpu", tensorboard_log=str(run / "tb"))
        print(f"resuming {run} from {model_path.name} at {done_steps} steps")
    else:
        venv = normalized(venv, norm_cfg, float(ppo_cfg["gamma"]))
        model = PPO(
            "MlpPolicy",
            venv,
            **ppo_kwargs(ppo_cfg),
            tensorboard_log=str(run / "tb"),
            seed=args.seed,
            device="cpu",
            verbose=0,
        )
        done_steps = 0
    resolved = {
        "config": config,
        "scenario": portable_path(scenario.source) if Path(scenario.source).is_file() else None,
        "seed": args.seed,
        "trace_source": args.trace_source,
        "nvec": val_env.action_space.nvec.tolist(),
        "actions": "envs.wrappers.distinct_actions(*nvec): the agent's Discrete index -> action",
        "obs_dim": int(venv.observation_space.shape[0]),
        "profile_model_hash": val_env.system.profile.model_hash,
    }
    (run / "config.json").write_text(json.dumps(resolved, indent=2))
    curve_csv = run / "eval_curve.csv"
    if resume is None or not curve_csv.exists():
        curve_csv.write_text("timesteps,mean_reward,ci95,accuracy,deadline_miss_rate\n")

    class Validation(BaseCallback):
        """Validation on fixed episodes; keeps the best model; writes checkpoints."""

        def __init__(self) -> None:
            super().__init__()
            self.next_eval = done_steps + int(eval_cfg["freq"])
            self.next_ckpt = done_steps + int(eval_cfg["checkpoint_freq"])
            self.best = best_validation(curve_csv)

        def evaluate(self, log: bool = True) -> None:
            norm = ObsNormalizer.from_vecnormalize(venv)
            res = run_many(val_env, PPOPolicy(self.model, norm, table), specs)
            mean, ci = mean_ci95(episode_rewards(res))
            if log:  # TensorBoard exists once learning has started
                self.logger.record("eval/mean_reward", mean)
                self.logger.record("eval/accuracy", float(res["correct"].mean()))
                self.logger.record("eval/deadline_miss_rate", float(res["deadline_miss"].mean()))
            with curve_csv.open("a") as fh:
                fh.write(
                    f"{self.num_timesteps},{mean:.6f},{ci:.6f},"
                    f"{res['correct'].mean():.6f},{res['deadline_miss'].mean():.6f}\n"
                )
            if mean > self.best:
                self.best = mean
                self.model.save(run / "best_model.zip")
                (run / "best_vecnormalize.json").write_text(json.dumps(norm.to_json()))

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval:
                self.next_eval += int(eval_cfg["freq"])
                self.evaluate()
            if self.num_timesteps >= self.next_ckpt:
                self.next_ckpt += int(eval_cfg["checkpoint_freq"])
                steps = self.num_timesteps
                self.model.save(run / "checkpoints" / f"model_{steps}_steps.zip")
                venv.save(str(run / "checkpoints" / f"vecnormalize_{steps}_steps.pkl"))
            return True

    validation = Validation()
    imitation_steps = int(config["imitation"]["steps"])
    if resume is None and imitation_steps > 0:
        warm_start(model, venv, scenario, args, config, episode_requests)
        validation.init_callback(model)
        validation.evaluate(log=False)  # the imitation policy may be the best model
    remaining = int(ppo_cfg["total_timesteps"]) - done_steps
    t0 = time.perf_counter()
    if remaining > 0:
        model.learn(
            total_timesteps=remaining,
            callback=CallbackList([validation]),
            progress_bar=not args.no_progress,
            reset_num_timesteps=resume is None,
            tb_log_name="PPO",
        )
    seconds = time.perf_counter() - t0
    validation.evaluate()  # the final model gets its point on the curve too
    model.save(run / "model.zip")
    venv.save(str(run / "vecnormalize.pkl"))
    (run / "vecnormalize.json").write_text(
        json.dumps(ObsNormalizer.from_vecnormalize(venv).to_json())
    )
    if not (run / "best_model.zip").exists():
        shutil.copy(run / "model.zip", run / "best_model.zip")
        shutil.copy(run / "vecnormalize.json", run / "best_vecnormalize.json")
    resolved["train_seconds_this_call"] = round(seconds, 1)
    resolved["total_timesteps"] = int(model.num_timesteps)
    (run / "config.json").write_text(json.dumps(resolved, indent=2))
    plot_curve(curve_csv, run / "eval_curve.png", int(ppo_cfg["action_repeat"]))
    print(
        f"trained {model.num_timesteps} steps in {seconds:.0f} s; best validation reward "
        f"{validation.best:.4f}; run in {run}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
