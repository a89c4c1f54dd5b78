"""What the experiments share: train a variant with the shipped config, keep its best
model on the validation traces, and compare it with the shipped PPO on the test
episodes of ``evaluate.py --episodes 10`` (seed 0).

Validation and selection follow train.py (the same validation episodes and frequency);
the comparison runs the same requests for every policy (common random numbers).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    """The arguments every experiment takes: --timesteps, --seed, --out."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--timesteps", type=int, default=None, help="decisions (default: config)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(default_out))
    return p


def training_env(inner: Callable | None = None):
    """One training env as train.py builds it (training traces, validation images,
    the configured accuracy credit, held decisions, the flat action space), with
    ``inner`` wrapped around the ``OffloadEnv`` itself when given."""
    from agents.hyperparams import load_hyperparams
    from envs import OffloadEnv
    from envs.wrappers import ActionRepeat, DistinctActions
    from sim import load_scenario

    cfg = load_hyperparams().ppo
    env = OffloadEnv(
        load_scenario(None),
        trace_split="train",
        sample_split="val",
        episode_requests=cfg.episode_requests,
        accuracy_credit=cfg.accuracy_credit,
    )
    if inner is not None:
        env = inner(env)
    return DistinctActions(ActionRepeat(env, cfg.action_repeat))


def train_variant(
    algo,
    make_env: Callable,
    policy_for: Callable,
    out: Path,
    seed: int,
    steps: int | None,
    wrap: Callable | None = None,
) -> tuple[Path, dict]:
    """Train ``algo`` (an SB3 class) on ``make_env`` with the shipped config; validate
    ``policy_for(model, normalizer)`` every ``[eval] freq`` decisions and at the end
    (on the validation env, seen through ``wrap`` when given), saving the best to
    ``out``. Returns the best model's file and a report (learning time, curve)."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.hyperparams import load_hyperparams
    from agents.ppo import ObsNormalizer
    from agents.rollout import run_many
    from agents.training import normalized, ppo_kwargs, validation_episodes
    from sim import load_scenario
    from sim.metrics import episode_means, mean_ci95
    from traces.sets import load_families

    torch.set_num_threads(1)
    hp = load_hyperparams()
    cfg = hp.ppo
    steps = steps or cfg.total_timesteps
    venv = DummyVecEnv([make_env for _ in range(cfg.n_envs)])
    venv.seed(seed)
    venv = normalized(venv, hp.normalize, cfg.gamma)
    model = algo("MlpPolicy", venv, **ppo_kwargs(cfg), seed=seed, device="cpu")

    val_by_family = load_families("auto", split="val")[0]
    val_env, specs = validation_episodes(
        load_scenario(None),
        [t for fam in sorted(val_by_family) for t in val_by_family[fam]],
        cfg.episode_requests,
        hp.eval.episodes_per_family,
    )
    if wrap is not None:
        val_env = wrap(val_env)
    out.mkdir(parents=True, exist_ok=True)
    curve: list[tuple[int, float]] = []

    class Validation(BaseCallback):
        def validate(self) -> None:
            norm = ObsNormalizer.from_vecnormalize(venv)
            res = run_many(val_env, policy_for(self.model, norm), specs)
            mean = mean_ci95(episode_means(res))[0]
            if not curve or mean > max(r for _, r in curve):
                self.model.save(out / "best_model.zip")
                (out / "best_vecnormalize.json").write_text(json.dumps(norm.to_json()))
            curve.append((self.num_timesteps, mean))
            print(f"{self.num_timesteps:>8} decisions: validation {mean:.4f}", flush=True)

        def _on_step(self) -> bool:
            if self.num_timesteps % hp.eval.freq < venv.num_envs:
                self.validate()
            return True

    validation = Validation()
    t0 = time.perf_counter()
    model.learn(steps, callback=validation)
    learn_s = time.perf_counter() - t0
    validation.validate()  # the final model too
    best = max(curve, key=lambda c: c[1])
    report = {"decisions": steps, "learn_seconds": round(learn_s, 1), "best_validation": best}
    report["validation"] = curve
    return out / "best_model.zip", report


def best_normalizer(out: Path):
    from agents.ppo import ObsNormalizer

    return ObsNormalizer.from_json(json.loads((out / "best_vecnormalize.json").read_text()))


def evaluation_env():
    """The evaluation's environment: every family's test traces, test images."""
    from envs import OffloadEnv
    from sim import load_scenario
    from traces.sets import load_families

    scenario = load_scenario(None)
    families = load_families("auto", split="test")[0]
    traces = [t for fam in sorted(families) for t in families[fam]]
    return OffloadEnv(scenario, traces, sample_split="test"), families


def compare_on_test(
    env, families: dict, policies: dict, variant: str, report: dict, envs: dict | None = None
) -> dict:
    """Every policy on the same test episodes; per family and overall means, and the
    variant's paired difference from the shipped ``ppo``. Printed and added to ``report``.
    ``envs`` may give a policy its own view of ``env`` (a wrapper around it)."""
    from agents.metrics import paired_difference
    from agents.rollout import run_many
    from evaluate import episode_specs

    envs = envs or {}
    b = env.system.scenario.battery
    specs = episode_specs(families, 10, 0, (b.initial_min, b.initial_max))
    for fam in sorted(families):
        res = {n: run_many(envs.get(n, env), p, specs[fam]) for n, p in policies.items()}
        report[fam] = {n: float(np.mean(r["reward"])) for n, r in res.items()}
        report[fam][f"{variant}_minus_ppo"] = list(paired_difference(res[variant], res["ppo"]))
        print(fam, json.dumps(report[fam]))
    report["overall"] = {n: float(np.mean([report[f][n] for f in families])) for n in policies}
    print("overall", {k: round(v, 4) for k, v in report["overall"].items()})
    return report


def shipped_ppo(env):
    from agents.ppo import load_ppo
    from telemetry.observation import OBS_DIM

    return load_ppo("runs/default", nvec=env.action_space.nvec.tolist(), obs_dim=OBS_DIM)


def observation_experiment(name: str, wrap: Callable, args: argparse.Namespace, **settings) -> dict:
    """PPO trained, validated and tested with its ``OffloadEnv`` seen through ``wrap``
    (an observation wrapper), against the shipped PPO on the test episodes; the report,
    with ``settings`` recorded in it, is written to ``args.out/report.json``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor

    from agents.ppo import PPOPolicy
    from envs.wrappers import env_actions

    env, families = evaluation_env()
    table = env_actions(env)

    def policy_for(model, norm):
        return PPOPolicy(model, norm, table, name=name)

    best_file, report = train_variant(
        PPO, lambda: Monitor(training_env(inner=wrap)), policy_for, args.out, args.seed,
        args.timesteps, wrap=wrap,
    )  # fmt: skip
    policies = {
        name: policy_for(PPO.load(best_file, device="cpu"), best_normalizer(args.out)),
        "ppo": shipped_ppo(env),
    }
    report.update(settings)
    compare_on_test(env, families, policies, name, report, envs={name: wrap(env)})
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return report
