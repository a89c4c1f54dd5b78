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
``--out``; docs/benchmarks-history.md reports them. Not part of the product: nothing imports this.

    .venv/bin/python -m experiments.masked_ppo [--timesteps N] [--out DIR]
"""

from __future__ import annotations

import json

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
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.monitor import Monitor

    from agents.heuristics import Edgent
    from experiments.common import (
        best_normalizer,
        compare_on_test,
        evaluation_env,
        parser,
        shipped_ppo,
        train_variant,
        training_env,
    )

    cli = parser(__doc__, "runs/masked")
    cli.add_argument(
        "--budget-deadlines", type=float, default=LATENCY_CAP, help="mask above this many deadlines"
    )
    args = cli.parse_args(argv)

    def make():
        env = training_env()
        return Monitor(Masked(env, LatencyMask(env.unwrapped.system, args.budget_deadlines)))

    env, families = evaluation_env()
    # One mask for validation and test: the same scenario, profile and catalog as training.
    mask = LatencyMask(env.system, args.budget_deadlines)

    def policy_for(model, norm):
        return MaskedPolicy(model, norm, mask)

    best_file, report = train_variant(
        MaskablePPO, make, policy_for, args.out, args.seed, args.timesteps
    )
    masked = policy_for(MaskablePPO.load(best_file, device="cpu"), best_normalizer(args.out))
    policies = {
        "ppo_masked": masked,
        "ppo": shipped_ppo(env),
        "edgent": Edgent(env.system, Predictor(env.system)),
    }
    report["budget_deadlines"] = args.budget_deadlines
    compare_on_test(env, families, policies, "ppo_masked", report)
    report["mean_allowed_actions"] = masked.allowed / max(masked.calls, 1)
    print(f"the mask left {report['mean_allowed_actions']:.1f} of 152 actions on average")
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
