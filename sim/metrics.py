"""What every report says about a set of requests, defined once.

A set of requests is **records**: a dict of equal-length numpy arrays, one entry per
answered request, with the fields of ``RECORD_FIELDS``. The simulator's rollouts
(``agents.rollout``, ``agents.fleet_rollout``), the real device loop and the real fleet
(``records_of_results``) all produce them, and ``summarise`` turns any of them into the
figures the tables, the plots and BENCHMARKS.md print. A figure defined twice is a bug
waiting to disagree, so each one is defined here:

* ``accuracy``: share of correct answers among the labelled ones (a real device may
  answer images it has no label for: those are ``unlabelled`` and left out);
* ``offload_fraction``: share of answered requests the device sent to the cloud,
  whether the cloud answered or the device fell back to a local answer;
  ``cloud_answered_fraction`` counts the cloud's answers alone, ``fallback_fraction``
  the fallbacks (``fallbacks`` by reason);
* ``early_exit_fraction``: share answered by an early exit on the device;
* ``deadline_miss_rate``: share answered after the deadline;
* latency percentiles over every answer; ``server_queue_*`` over the cloud's answers;
* ``energy_mj`` and ``cost_usd_per_million`` per answered request; ``leakage`` its mean;
* ``reward_mean`` with a 95% interval over episodes (the independent units; requests
  within one are not), and ``reward_calibrated`` (see ``summarise``);
* ``lost``: requests that got no answer at all (``requests`` minus ``answered``);
* ``cut_share``: the share of requests decided at each cut; ``gap_closed``: the share
  of the gap from the best heuristic to a reference that a policy closes.

A figure whose fields the records lack is left out of the summary rather than guessed.
"""

from __future__ import annotations

import math

import numpy as np

RECORD_FIELDS = {
    "latency_s": "arrival to answer",
    "deadline_miss": "answered after the deadline",
    "correct": "the answer was right (False where unlabelled)",
    "labelled": "the request had a label (default: all)",
    "offloaded": "the device sent it to the cloud (a fallback included)",
    "cloud_answered": "the cloud's answer was used (default: offloaded)",
    "fallback": "why a sent request was answered locally, '' when it was not",
    "early_exit": "an early exit answered on the device (not the final classifier)",
    "energy_j": "device energy",
    "money_usd": "cloud and data money",
    "carbon_g": "grams of CO2e of the device's and the cloud's energy",
    "leakage": "leakage of what was sent",
    "sent_bytes": "bytes sent",
    "queue_s": "the server's queueing time",
    "reward": "the scenario's reward",
    "accuracy_expected": "calibrated accuracy of the answer's exit and confidence",
    "episode": "the episode it belongs to",
}


def mean_ci95(per_episode: np.ndarray) -> tuple[float, float]:
    """Mean and 95% confidence half-width of per-episode values (0 for one episode)."""
    n = len(per_episode)
    ci = 1.96 * per_episode.std(ddof=1) / np.sqrt(n) if n > 1 else 0.0
    return float(per_episode.mean()), float(ci)


def episode_means(records: dict, field: str = "reward") -> np.ndarray:
    """Mean of ``field`` in each episode, in the order of their ``episode`` numbers."""
    episodes = records["episode"]
    return np.array([records[field][episodes == e].mean() for e in np.unique(episodes)])


def summarise(
    records: dict,
    *,
    requests: int | None = None,
    battery_capacity_j: float | None = None,
    accuracy_weight: float = 1.0,
) -> dict:
    """The figures of a set of requests (see the module's docstring for each one).

    ``requests``: how many were issued (default: as many as answered), for ``lost``.
    ``battery_capacity_j``: adds ``requests_per_charge``. ``reward_calibrated`` is the
    mean reward with each answer credited at the calibrated accuracy of its exit and
    confidence instead of its realized correctness (``accuracy_weight`` x the
    difference): for a policy that cannot see labels the two agree in expectation; for
    the clairvoyant oracle the gap is what knowing each image's answer is worth."""
    rec = {k: np.asarray(v) for k, v in records.items()}
    answered = len(rec["latency_s"])
    requests = answered if requests is None else requests
    out: dict = {"requests": int(requests), "answered": answered, "lost": requests - answered}
    if "episode" in rec:
        out["episodes"] = int(len(np.unique(rec["episode"])))
    out.update(_answers(rec, answered))
    out.update(_latency(rec))
    out.update(_costs(rec, battery_capacity_j))
    if "reward" in rec and answered:
        out.update(_reward(rec, accuracy_weight))
    return out


def _share(mask: np.ndarray, answered: int) -> float:
    return float(mask.sum() / answered) if answered else 0.0


def _answers(rec: dict, answered: int) -> dict:
    out: dict = {}
    if "correct" in rec:
        labelled = rec.get("labelled", np.ones(answered, dtype=bool)).astype(bool)
        judged = rec["correct"].astype(bool)[labelled]
        out["accuracy"] = float(judged.mean()) if judged.size else None
        out["unlabelled"] = int((~labelled).sum())
    if "offloaded" in rec:
        offloaded = rec["offloaded"].astype(bool)
        fallback = rec.get("fallback", np.full(answered, ""))
        fell_back = fallback != ""
        cloud = rec.get("cloud_answered", offloaded & ~fell_back).astype(bool)
        out["offload_fraction"] = _share(offloaded, answered)
        out["cloud_answered_fraction"] = _share(cloud, answered)
        out["cloud_answers"] = int(cloud.sum())
        out["fallback_fraction"] = _share(fell_back, answered)
        reasons, counts = np.unique(fallback[fell_back], return_counts=True)
        out["fallbacks"] = {str(r): int(c) for r, c in zip(reasons, counts, strict=True)}
        if "queue_s" in rec:
            queue_ms = rec["queue_s"][cloud] * 1e3
            out["server_queue_mean_ms"] = float(queue_ms.mean()) if queue_ms.size else 0.0
            out["server_queue_p95_ms"] = (
                float(np.percentile(queue_ms, 95)) if queue_ms.size else 0.0
            )
    if "early_exit" in rec:
        out["early_exit_fraction"] = _share(rec["early_exit"].astype(bool), answered)
    return out


def _latency(rec: dict) -> dict:
    lat_ms = rec["latency_s"] * 1e3
    out = {}
    for q in (50, 95, 99):
        out[f"latency_p{q}_ms"] = float(np.percentile(lat_ms, q)) if lat_ms.size else math.nan
    if "deadline_miss" in rec:
        misses = rec["deadline_miss"].astype(bool)
        out["deadline_miss_rate"] = float(misses.mean()) if misses.size else 0.0
    return out


def _costs(rec: dict, battery_capacity_j: float | None) -> dict:
    out = {}
    if "energy_j" in rec and rec["energy_j"].size:
        energy = float(rec["energy_j"].mean())
        out["energy_mj"] = energy * 1e3
        if battery_capacity_j is not None:
            out["requests_per_charge"] = battery_capacity_j / energy if energy > 0 else math.inf
    for field, key, scale in (
        ("money_usd", "cost_usd_per_million", 1e6),
        ("carbon_g", "carbon_mg_per_request", 1e3),
        ("leakage", "leakage", 1.0),
        ("sent_bytes", "sent_bytes_per_request", 1.0),
    ):
        if field in rec and rec[field].size:
            out[key] = float(rec[field].mean() * scale)
    return out


def _reward(rec: dict, accuracy_weight: float) -> dict:
    if "episode" not in rec:
        return {"reward_mean": float(rec["reward"].mean())}
    mean, ci = mean_ci95(episode_means(rec))
    out = {"reward_mean": mean, "reward_ci95": ci}
    if "accuracy_expected" in rec:
        luck = accuracy_weight * (rec["correct"].astype(float) - rec["accuracy_expected"])
        calibrated = {**rec, "reward": rec["reward"] - luck}
        out["reward_calibrated"] = float(episode_means(calibrated).mean())
    return out


def cut_share(records: dict, n_cuts: int) -> list[float]:
    """The share of requests decided at each cut ``0..n_cuts - 1``."""
    cuts = np.asarray(records["cut"], dtype=np.int64)
    return (np.bincount(cuts, minlength=n_cuts) / max(len(cuts), 1)).tolist()


def codec_share(records: dict, codecs_by_cut: list[list[str]]) -> dict[str, float]:
    """Of the offloaded requests, the share sent with each codec (its name at the cut
    it was sent from; a level past a cut's own means its last, as in the simulator):
    which compression, bottleneck or noise a policy uses."""
    sent = np.asarray(records["offloaded"], dtype=bool)
    cuts = np.asarray(records["cut"], dtype=np.int64)[sent]
    levels = np.asarray(records["level"], dtype=np.int64)[sent]
    names = [
        codecs_by_cut[c][min(lv, len(codecs_by_cut[c]) - 1)]
        for c, lv in zip(cuts, levels, strict=True)
    ]
    found, counts = np.unique(np.array(names, dtype=str), return_counts=True)
    return {str(n): float(c / max(sent.sum(), 1)) for n, c in zip(found, counts, strict=True)}


def variant_share(records: dict, names: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Of the requests that ran blocks on the device (cut > 0), the share under each
    model variant (``names``, in the scenario's order): which variant a policy runs."""
    on_device = np.asarray(records["cut"], dtype=np.int64) > 0
    variants = np.asarray(records["variant"], dtype=np.int64)[on_device]
    counts = np.bincount(variants, minlength=len(names))
    return {name: float(counts[v] / max(on_device.sum(), 1)) for v, name in enumerate(names)}


def intermediate_share(records: dict, k: int) -> float:
    """The share of requests offloaded at a cut strictly inside a ``k``-block model."""
    cut = np.asarray(records["cut"])
    inside = (cut > 0) & (cut < k) & np.asarray(records["offloaded"], dtype=bool)
    return float(inside.mean())


MIN_GAP = 1e-3  # reward per request: far below any difference a table shows


def gap_closed(policy: float, baseline: float, reference: float) -> float:
    """The share of the gap from ``baseline`` (the best heuristic) to ``reference`` (a
    clairvoyant or label-blind planner) that ``policy``'s reward closes; NaN where the
    reference is not ``MIN_GAP`` above the baseline (a share of a rounding error means
    nothing)."""
    gap = reference - baseline
    return (policy - baseline) / gap if gap > MIN_GAP else float("nan")


def records_of_results(results: list) -> dict:
    """Records from a real device's per-request results (``RequestResult``-like
    objects: ``path`` is ``exit``, ``local``, ``cloud`` or ``fallback``)."""

    def column(name, default=None):
        return np.array([getattr(r, name, default) for r in results])

    path = column("path")
    correct = column("correct")
    fallback = np.array([r.fallback or "" for r in results], dtype=str)
    return {
        "latency_s": column("latency_s").astype(float),
        "deadline_miss": column("deadline_miss").astype(bool),
        "correct": np.array([bool(c) for c in correct]),
        "labelled": np.array([c is not None for c in correct], dtype=bool),
        "offloaded": np.isin(path, ("cloud", "fallback")),
        "cloud_answered": path == "cloud",
        "fallback": fallback if len(results) else np.array([], dtype=str),
        "early_exit": path == "exit",
        "energy_j": column("energy_j").astype(float),
        "carbon_g": column("carbon_g", 0.0).astype(float),
        "sent_bytes": column("sent_bytes").astype(float),
        "queue_s": column("server_queue_s", 0.0).astype(float),
    }
