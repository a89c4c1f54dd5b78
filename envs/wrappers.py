"""A flat action space for learning agents.

``OffloadEnv`` exposes ``MultiDiscrete([cuts, thresholds, levels])``. A factorised
policy head picks each component independently, and here the good moves need two at
once: going from "send the raw image" (cut 0, no exits) to "answer on the device when
block 1 is confident" (cut K, threshold 0.5) changes both cut and threshold, and each
change alone is worse than either end (cut K without exits misses the deadline; a
threshold at cut 0 does nothing). ``DistinctActions`` offers the agent one
``Discrete`` choice over the distinct (cut, threshold, level) triples instead, so
probability mass can move straight from one behaviour to another.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def distinct_actions(n_cuts: int, n_thresholds: int, n_levels: int) -> list[tuple[int, int, int]]:
    """Actions that can behave differently: no exit exists before cut 0 (one threshold
    suffices there), and the level is irrelevant when everything runs on the device."""
    k = n_cuts - 1
    out = [(0, n_thresholds - 1, lvl) for lvl in range(n_levels)]
    out += [
        (c, t, lvl) for c in range(1, k) for t in range(n_thresholds) for lvl in range(n_levels)
    ]
    out += [(k, t, 0) for t in range(n_thresholds)]
    return [(int(c), int(t), int(lvl)) for c, t, lvl in out]


class DistinctActions(gym.ActionWrapper):
    """``Discrete(n)`` over ``distinct_actions(*env.action_space.nvec)``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.table = distinct_actions(*env.action_space.nvec)
        self._arrays = [np.array(a, dtype=np.int64) for a in self.table]
        self.action_space = spaces.Discrete(len(self.table))

    def action(self, action) -> np.ndarray:
        return self._arrays[int(action)]
