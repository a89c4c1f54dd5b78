"""Summaries of evaluation results: one row per policy (and trace family), from
``sim.metrics``."""

from __future__ import annotations

import numpy as np

from sim import metrics
from sim.metrics import episode_means, mean_ci95

__all__ = ["SUMMARY_KEYS", "mean_ci95", "paired_difference", "subset", "summarise"]

SUMMARY_KEYS = (
    "reward_mean",
    "reward_ci95",
    "reward_calibrated",
    "accuracy",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "deadline_miss_rate",
    "energy_mj",
    "carbon_mg_per_request",
    "cost_usd_per_million",
    "leakage",
    "offload_fraction",
    "requests_per_charge",
    "requests",
    "episodes",
)


def summarise(
    res: dict[str, np.ndarray], battery_capacity_j: float, accuracy_weight: float = 1.0
) -> dict[str, float]:
    """A policy's row of the evaluation table: ``sim.metrics.summarise``'s figures
    named in ``SUMMARY_KEYS``."""
    full = metrics.summarise(
        res, battery_capacity_j=battery_capacity_j, accuracy_weight=accuracy_weight
    )
    return {key: full[key] for key in SUMMARY_KEYS}


def paired_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, float]:
    """Mean and 95% confidence half-width of ``a``'s per-episode mean reward minus
    ``b``'s, episode by episode. Both must come from the same episodes (common random
    numbers), so what the episodes share (trace, start, images) cancels and the interval
    is far tighter than the two policies' own intervals suggest."""
    if not np.array_equal(np.unique(a["episode"]), np.unique(b["episode"])):
        raise ValueError("paired_difference needs results on the same episodes")
    return mean_ci95(episode_means(a) - episode_means(b))


def subset(res: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in res.items()}
