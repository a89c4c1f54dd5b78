"""The exit rule: which early exit answers a sample at a confidence threshold.

Done once per threshold over a profile split's samples (not per request), and read by
the system's tables, the hybrid cloud's split choice and the heuristics' predictor.
"""

from __future__ import annotations

import numpy as np


def early_exit_conf(split, has_exit) -> np.ndarray:
    """The early exits' confidences (blocks 1..K-1 x samples), -1 at blocks without an
    exit so that no threshold makes one fire."""
    conf = np.array(split.exit_conf[:-1], dtype=np.float32)
    conf[~np.asarray(has_exit[:-1], bool)] = -1.0
    return conf


def first_exits(conf, threshold: float) -> np.ndarray:
    """For each sample, the first early exit (1-based block: 1 + the index of the first
    row of ``conf``, blocks x samples) whose confidence reaches ``threshold``; 0 where
    none does. The exit rule, done once per threshold instead of per request."""
    fires = np.asarray(conf) >= threshold
    first = np.argmax(fires, axis=0) + 1
    return np.where(fires.any(axis=0), first, 0)
