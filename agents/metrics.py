"""Summaries of evaluation results: one row per policy (and trace family)."""

from __future__ import annotations

import numpy as np

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
    "cost_usd_per_million",
    "leakage",
    "offload_fraction",
    "requests_per_charge",
    "requests",
    "episodes",
)


def mean_ci95(per_episode: np.ndarray) -> tuple[float, float]:
    """Mean and 95% confidence half-width of per-episode values (0 for one episode)."""
    n = len(per_episode)
    ci = 1.96 * per_episode.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    return float(per_episode.mean()), float(ci)


def episode_rewards(res: dict[str, np.ndarray]) -> np.ndarray:
    """Mean reward of each episode, in the order of their ``episode`` numbers."""
    return np.array([res["reward"][res["episode"] == e].mean() for e in np.unique(res["episode"])])


def summarise(
    res: dict[str, np.ndarray], battery_capacity_j: float, accuracy_weight: float = 1.0
) -> dict[str, float]:
    """Mean reward with a 95% confidence interval over episodes (episodes are the
    independent units; requests within one are not), and per-request metrics.

    ``reward_calibrated`` is the mean reward with each answer credited at the
    calibrated accuracy of its exit and confidence instead of its realized correctness.
    For a policy that cannot see labels the two agree in expectation; for the
    clairvoyant oracle the difference is what knowing each image's answer is worth."""
    episodes = np.unique(res["episode"])
    in_episode = [res["episode"] == e for e in episodes]
    per_episode = np.array([res["reward"][m].mean() for m in in_episode])
    luck = accuracy_weight * (res["correct"].astype(float) - res["accuracy_expected"])
    calibrated = np.array([(res["reward"][m] - luck[m]).mean() for m in in_episode])
    mean, ci = mean_ci95(per_episode)
    lat_ms = res["latency_s"] * 1e3
    energy = float(res["energy_j"].mean())
    return {
        "reward_mean": mean,
        "reward_ci95": ci,
        "reward_calibrated": float(calibrated.mean()),
        "accuracy": float(res["correct"].mean()),
        "latency_p50_ms": float(np.percentile(lat_ms, 50)),
        "latency_p95_ms": float(np.percentile(lat_ms, 95)),
        "latency_p99_ms": float(np.percentile(lat_ms, 99)),
        "deadline_miss_rate": float(res["deadline_miss"].mean()),
        "energy_mj": energy * 1e3,
        "cost_usd_per_million": float(res["money_usd"].mean() * 1e6),
        "leakage": float(res["leakage"].mean()),
        "offload_fraction": float(res["offloaded"].mean()),
        "requests_per_charge": float(battery_capacity_j / energy) if energy > 0 else float("inf"),
        "requests": int(len(res["reward"])),
        "episodes": int(len(episodes)),
    }


def paired_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, float]:
    """Mean and 95% confidence half-width of ``a``'s per-episode mean reward minus
    ``b``'s, episode by episode. Both must come from the same episodes (common random
    numbers), so what the episodes share (trace, start, images) cancels and the interval
    is far tighter than the two policies' own intervals suggest."""
    if not np.array_equal(np.unique(a["episode"]), np.unique(b["episode"])):
        raise ValueError("paired_difference needs results on the same episodes")
    return mean_ci95(episode_rewards(a) - episode_rewards(b))


def subset(res: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[mask] for k, v in res.items()}
