"""A flat action space for learning agents.

``OffloadEnv`` exposes ``MultiDiscrete([cuts, thresholds, levels])``. A factorised
policy head picks each component independently, and here the good moves need two at
once: going from "send the raw image" (cut 0, no exits) to "answer on the device when
block 1 is confident" (cut K, threshold 0.5) changes both cut and threshold, and each
change alone is worse than either end (cut K without exits misses the deadline; a
threshold at cut 0 does nothing). ``DistinctActions`` offers the agent one
``Discrete`` choice over the distinct (cut, threshold, level) triples instead (with
the model variant where the scenario offers several), so probability mass can move
straight from one behaviour to another.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def distinct_actions(
    n_cuts: int, n_thresholds: int, n_levels: int, n_variants: int = 1, levels_by_cut=None
) -> list[tuple[int, ...]]:
    """Actions that can behave differently: no exit exists before cut 0 (one threshold
    suffices there), and the level is irrelevant when everything runs on the device.
    ``levels_by_cut`` (cuts 0..K-1): where cuts offer different numbers of levels (a
    learned bottleneck adds levels at its cut), the levels each cut has; default all.
    With ``n_variants`` > 1 (model variants of the device's blocks) each action gains
    a fourth component, the variant; cut 0 runs no block, so it keeps the first."""
    k = n_cuts - 1
    levels = list(levels_by_cut) if levels_by_cut is not None else [n_levels] * k
    out = [(0, n_thresholds - 1, lvl) for lvl in range(levels[0])]
    out += [
        (c, t, lvl) for c in range(1, k) for t in range(n_thresholds) for lvl in range(levels[c])
    ]
    out += [(k, t, 0) for t in range(n_thresholds)]
    triples = [(int(c), int(t), int(lvl)) for c, t, lvl in out]
    if n_variants == 1:
        return triples
    return [(*a, v) for a in triples for v in range(n_variants if a[0] > 0 else 1)]


def env_actions(env) -> list[tuple[int, ...]]:
    """``distinct_actions`` of an ``OffloadEnv`` (through any wrappers)."""
    system = env.unwrapped.system
    return distinct_actions(*env.action_space.nvec, levels_by_cut=system.levels_by_cut)


class DistinctActions(gym.ActionWrapper):
    """``Discrete(n)`` over the env's distinct actions (``env_actions``)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.table = env_actions(env)
        self._arrays = [np.array(a, dtype=np.int64) for a in self.table]
        self.action_space = spaces.Discrete(len(self.table))

    def action(self, action) -> np.ndarray:
        return self._arrays[int(action)]


class ActionRepeat(gym.Wrapper):
    """Holds each action for ``k`` requests and returns the sum of their rewards.

    For training only. What separates good regimes here shows over several requests:
    one request answered on the device instead of uploaded costs almost nothing
    itself, but the device it keeps busy delays the next ones, and a radio tail or a
    warm cloud pays off only when many uploads share it. Per request, that difference
    is buried in the noise of single outcomes; a decision held for ``k`` requests sees
    it in its own reward (action repeat, as in frame skipping on Atari). The trained
    policy still decides every request when deployed or evaluated."""

    def __init__(self, env: gym.Env, k: int) -> None:
        super().__init__(env)
        if int(k) < 1:
            raise ValueError(f"action_repeat must be >= 1, got {k}")
        self.k = int(k)

    def step(self, action):
        total = 0.0
        for _ in range(self.k):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += reward
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info
