"""``sim.metrics.summarise``: each reported figure defined once, fallbacks and
unlabelled answers included, and the same figure from the simulator and from a real
device's results."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sim.metrics import records_of_results, summarise


def _result(path, correct, latency_s=0.1, fallback=None, queue_s=0.0, miss=False):
    return SimpleNamespace(
        path=path,
        correct=correct,
        latency_s=latency_s,
        fallback=fallback,
        deadline_miss=miss,
        energy_j=0.01,
        sent_bytes=100 if path != "exit" else 0,
        server_queue_s=queue_s,
    )


def test_a_fallback_counts_as_an_offload_but_not_as_a_cloud_answer():
    results = [
        _result("cloud", True, queue_s=0.004),
        _result("fallback", False, fallback="timeout", miss=True),
        _result("exit", True),
        _result("local", None),  # no label: left out of the accuracy
    ]
    s = summarise(records_of_results(results), requests=5)
    assert s["offload_fraction"] == 0.5
    assert s["cloud_answered_fraction"] == 0.25 and s["cloud_answers"] == 1
    assert s["fallback_fraction"] == 0.25 and s["fallbacks"] == {"timeout": 1}
    assert s["early_exit_fraction"] == 0.25
    assert s["accuracy"] == pytest.approx(2 / 3) and s["unlabelled"] == 1
    assert s["answered"] == 4 and s["lost"] == 1
    assert s["deadline_miss_rate"] == 0.25
    assert s["server_queue_p95_ms"] == pytest.approx(4.0)  # the cloud's answers only


def test_the_simulator_and_a_real_device_give_the_same_figures_for_the_same_requests():
    latency = np.array([0.05, 0.12, 0.3])
    sim = {
        "latency_s": latency,
        "correct": np.array([True, False, True]),
        "offloaded": np.array([True, True, False]),
        "deadline_miss": latency > 0.2,
    }
    real = [
        _result("cloud", True, 0.05),
        _result("cloud", False, 0.12),
        _result("local", True, 0.3, miss=True),
    ]
    a, b = summarise(sim), summarise(records_of_results(real))
    for key in ("accuracy", "offload_fraction", "deadline_miss_rate", "latency_p95_ms"):
        assert a[key] == pytest.approx(b[key]), key


def test_rewards_have_an_interval_over_episodes_and_a_calibrated_twin():
    rec = {
        "latency_s": np.full(4, 0.1),
        "reward": np.array([1.0, 0.0, 0.5, 0.5]),
        "episode": np.array([0, 0, 1, 1]),
        "correct": np.array([1, 0, 1, 0]),
        "accuracy_expected": np.full(4, 0.5),
    }
    s = summarise(rec, accuracy_weight=1.0)
    assert s["reward_mean"] == pytest.approx(0.5) and s["reward_ci95"] == pytest.approx(0.0)
    # Credited at 0.5 instead of 1/0: rewards 0.5, 0.5, 0.0, 1.0.
    assert s["reward_calibrated"] == pytest.approx(0.5)
    assert s["episodes"] == 2


def test_nothing_answered_is_all_lost_not_an_error():
    s = summarise(records_of_results([]), requests=3)
    assert s["answered"] == 0 and s["lost"] == 3 and s["accuracy"] is None
    assert s["offload_fraction"] == 0.0


def test_the_gap_closed_needs_a_gap():
    """A reference a rounding error above the baseline gives no share (it once printed
    -3,710,368%), a real one does."""
    import math

    from sim.metrics import gap_closed

    assert math.isnan(gap_closed(0.9, 0.9993, 0.9993 + 1e-7))
    assert gap_closed(0.45, 0.40, 0.50) == pytest.approx(0.5)
