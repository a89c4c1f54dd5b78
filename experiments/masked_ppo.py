"""Experiment: PPO with action masking (sb3-contrib's MaskablePPO), against the shipped PPO.

Issue 5 asks whether action masking helps PPO here. Every one of the 152 distinct
actions is valid in every state, so a mask has to come from a judgement. This one is
the device's own: an action is masked when its latency, predicted from the profile and
the observed bandwidth and RTT estimates (``agents.predictor``, as Edgent predicts),
exceeds the budget after which the latency penalty stops growing (4 deadlines, less
the request's lateness). When no action fits, none is masked. The mask is a function
of the observation alone, so the trained policy applies it itself when it acts.

Training uses ``agents/hyperparams.toml`` (held decisions, calibrated credit, the same
PPO settings and seed) and keeps the best model on the validation traces, as train.py
does; the test evaluation uses the same episodes as ``evaluate.py --episodes 10``
(seed 0), with the shipped PPO and Edgent beside it. Results are printed and written to
``--out``; BENCHMARKS.md reports them. Not part of the product: nothing imports this.

    .venv/bin/python -m experiments.masked_ppo [--timesteps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from agents.base import ObservationView
from agents.predictor import Predictor
from envs.wrappers import distinct_actions

# Default budget in deadlines: the latency term is min(L / D, 4), so past 4 deadlines a
# slower answer costs nothing more; 1 is Edgent's feasibility test.
LATENCY_CAP = 4.0


class LatencyMask:
    """The Discrete(152) mask of actions whose predicted latency fits the budget."""

    def __init__(self, system, deadlines: float = LATENCY_CAP) -> None:
        self.predictor, self.deadlines = Predictor(system), deadlines
        nvec = (system.k + 1, system.n_thresholds, system.n_levels)
        self.table = np.asarray(distinct_actions(*nvec), dtype=np.int64)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        view = ObservationView(obs)
        budget = self.deadlines * view.deadline_s - view.lateness_s
        lat = self.predictor.latency_s(view.bandwidth_bps, view.rtt_s)
        t = self.table
        ok = lat[t[:, 0], t[:, 1], t[:, 2]] <= budget
        return ok if ok.any() else np.ones_like(ok)


class Masked(gym.Wrapper):
    """Exposes ``action_masks()`` for MaskablePPO, from the last observation."""

    def __init__(self, env: gym.Env, mask: LatencyMask) -> None:
        super().__init__(env)
        self.mask, self._obs = mask, None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._obs = obs
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        return self.mask(self._obs)


class MaskedPolicy:
    """A MaskablePPO model behind the common ``act`` interface, masking as in training."""

    def __init__(self, model, normalizer, mask: LatencyMask, name: str = "ppo_masked") -> None:
        self.model, self.normalizer, self.mask, self.name = model, normalizer, mask, name
        self.allowed, self.calls = 0, 0  # how much the mask leaves, for the report

    def act(self, observation: np.ndarray) -> np.ndarray:
        allowed = self.mask(observation)
        self.allowed, self.calls = self.allowed + int(allowed.sum()), self.calls + 1
        index, _ = self.model.predict(
            self.normalizer(observation), action_masks=allowed, deterministic=True
        )
        return self.mask.table[int(index)].copy()


def main(argv: list[str] | None = None) -> int:
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from agents.heuristics import Edgent
    from agents.metrics import episode_rewards, mean_ci95, paired_difference
    from agents.ppo import ObsNormalizer, load_ppo
    from agents.rollout import make_specs, run_many
    from envs import OffloadEnv, load_scenario
    from envs.wrappers import ActionRepeat, DistinctActions
    from telemetry.observation import OBS_DIM
    from traces.sets import load_families
    from train import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=None, help="decisions (default: config)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budget-deadlines", type=float, default=LATENCY_CAP, help="mask above this many deadlines"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/masked"))
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    config = load_config(None)
    cfg, eval_cfg = config["ppo"], config["eval"]
    steps = args.timesteps or int(cfg["total_timesteps"])
    scenario = load_scenario(None)
    requests = int(cfg["episode_requests"])
    b = scenario.battery

    def make():
        env = OffloadEnv(
            scenario,
            trace_split="train",
            sample_split="val",
            episode_requests=requests,
            accuracy_credit=str(cfg["accuracy_credit"]),
        )
        env = DistinctActions(ActionRepeat(env, int(cfg["action_repeat"])))
        return Monitor(Masked(env, LatencyMask(env.unwrapped.system, args.budget_deadlines)))

    venv = DummyVecEnv([make for _ in range(int(cfg["n_envs"]))])
    venv.seed(args.seed)
    venv = VecNormalize(venv, norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=cfg["gamma"])
    model = MaskablePPO(
        "MlpPolicy",
        venv,
        n_steps=int(cfg["n_steps"]),
        batch_size=int(cfg["batch_size"]),
        n_epochs=int(cfg["n_epochs"]),
        learning_rate=float(cfg["learning_rate"]),
        gamma=float(cfg["gamma"]),
        gae_lambda=float(cfg["gae_lambda"]),
        clip_range=float(cfg["clip_range"]),
        ent_coef=float(cfg["ent_coef"]),
        vf_coef=float(cfg["vf_coef"]),
        max_grad_norm=float(cfg["max_grad_norm"]),
        policy_kwargs={"net_arch": list(cfg["net_arch"])},
        seed=args.seed,
        device="cpu",
    )

    val_env = OffloadEnv(scenario, trace_split="val", sample_split="val", episode_requests=requests)
    mask = LatencyMask(val_env.system, args.budget_deadlines)
    val_families = load_families("auto", split="val")[0]
    per_family = int(eval_cfg["episodes_per_family"])
    battery = (b.initial_min, b.initial_max)
    val_specs = [
        s
        for fam in sorted(val_families)
        for s in make_specs(val_families[fam], per_family, 777, battery)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    curve: list[tuple[int, float]] = []

    class Validation(BaseCallback):
        def validate(self) -> None:
            norm = ObsNormalizer.from_vecnormalize(venv)
            res = run_many(val_env, MaskedPolicy(self.model, norm, mask), val_specs)
            mean = mean_ci95(episode_rewards(res))[0]
            if not curve or mean > max(r for _, r in curve):
                self.model.save(args.out / "best_model.zip")
                (args.out / "best_vecnormalize.json").write_text(json.dumps(norm.to_json()))
            curve.append((self.num_timesteps, mean))
            print(f"{self.num_timesteps:>8} decisions: validation {mean:.4f}", flush=True)

        def _on_step(self) -> bool:
            if self.num_timesteps % int(eval_cfg["freq"]) < venv.num_envs:
                self.validate()
            return True

    validation = Validation()
    t0 = time.perf_counter()
    model.learn(steps, callback=validation)
    learn_s = time.perf_counter() - t0
    validation.validate()  # the final model too

    best = MaskablePPO.load(args.out / "best_model.zip", device="cpu")
    norm = ObsNormalizer.from_json(json.loads((args.out / "best_vecnormalize.json").read_text()))
    families = load_families("auto", split="test")[0]
    test_traces = [t for fam in sorted(families) for t in families[fam]]
    env = OffloadEnv(scenario, test_traces, sample_split="test", episode_requests=requests)
    ppo = load_ppo("runs/default", nvec=env.action_space.nvec.tolist(), obs_dim=OBS_DIM)
    policies = {
        "ppo_masked": MaskedPolicy(best, norm, LatencyMask(env.system, args.budget_deadlines)),
        "ppo": ppo,
        "edgent": Edgent(env.system, Predictor(env.system)),
    }
    report: dict = {
        "budget_deadlines": args.budget_deadlines,
        "learn_seconds": round(learn_s, 1),
        "decisions": steps,
        "validation": curve,
    }
    for i, fam in enumerate(sorted(families)):
        specs = make_specs(families[fam], 10, i, battery)
        res = {name: run_many(env, p, specs) for name, p in policies.items()}
        diff, ci = paired_difference(res["ppo_masked"], res["ppo"])
        report[fam] = {n: float(np.mean(r["reward"])) for n, r in res.items()}
        report[fam]["masked_minus_ppo"] = [diff, ci]
        print(fam, json.dumps(report[fam]))
    for name in policies:
        report.setdefault("overall", {})[name] = float(np.mean([report[f][name] for f in families]))
    masked = policies["ppo_masked"]
    report["mean_allowed_actions"] = masked.allowed / max(masked.calls, 1)
    print("overall", {k: round(v, 4) for k, v in report["overall"].items()})
    print(f"the mask left {report['mean_allowed_actions']:.1f} of 152 actions on average")
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
