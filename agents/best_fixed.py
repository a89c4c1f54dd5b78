"""The single fixed action with the best mean reward on the training traces."""

from __future__ import annotations

import numpy as np

from agents.base import FixedPolicy
from agents.rollout import make_specs, run_many
from envs.offload_env import OffloadEnv
from envs.wrappers import distinct_actions
from traces.trace import Trace


def find_best_fixed(
    env: OffloadEnv,
    train_traces: list[Trace],
    episodes: int = 16,
    seed: int = 12345,
    progress=None,
) -> tuple[FixedPolicy, dict[tuple[int, int, int], float]]:
    """Search every distinct action on episodes of the training traces (never the
    evaluation ones); returns the winner and every action's mean reward."""
    b = env.scenario.battery
    by_family: dict[str, list[Trace]] = {}
    for t in train_traces:
        by_family.setdefault(t.family, []).append(t)
    specs = [
        spec
        for fam in sorted(by_family)
        for spec in make_specs(by_family[fam], episodes, seed, (b.initial_min, b.initial_max))
    ]
    scores = {}
    actions = distinct_actions(*env.action_space.nvec)
    for act in progress(actions) if progress else actions:
        scores[act] = float(np.mean(run_many(env, FixedPolicy(*act), specs)["reward"]))
    best = max(scores, key=scores.get)
    return FixedPolicy(*best, name="best_fixed"), scores
