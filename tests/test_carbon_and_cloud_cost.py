"""Carbon per request (the device's and the cloud's energy at their grids' intensity)
and the cloud tail's bill for a reserved VM, functions and their hybrid."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from sim import System, load_scenario
from sim.scenario import RewardWeights


@pytest.fixture(scope="module")
def system():
    return System(load_scenario())


def test_carbon_is_the_energy_at_the_grids_intensity(system):
    """Every request's grams are its device joules at the device's grid, plus the
    cloud's busy seconds at its power, PUE and grid when offloaded."""
    from envs import OffloadEnv

    env = OffloadEnv(load_scenario(), trace_source="builtin", episode_requests=60)
    env.reset(seed=3)
    g_per_j = system.device_grid.g_per_kwh / 3.6e6
    cloud = system.cloud
    rng = np.random.default_rng(0)
    for _ in range(60):
        action = [int(rng.integers(n)) for n in env.action_space.nvec]
        _, _, done, trunc, info = env.step(action)
        expected = info["energy_j"] * g_per_j
        if info["offloaded"]:
            busy = system.cloud_tail_s[action[0]]
            expected += busy * cloud.watts * cloud.pue * system.cloud_grid.g_per_kwh / 3.6e6
        assert info["carbon_g"] == pytest.approx(expected, rel=1e-9)
        if done or trunc:
            break


def test_a_carbon_weight_moves_the_reward_by_its_grams(system):
    """carbon * G / G_ref, G_ref the grams of the energy reference at the device's grid."""
    w = replace(load_scenario().reward, carbon=1.0)
    scenario = replace(load_scenario(), reward=w)
    weighted = System(scenario)
    args = (1.0, 0.05, 0.3, 1e-6, 0.0, 0.8)
    grams = 2e-4
    gap = system.reward(*args, grams) - weighted.reward(*args, grams)
    assert gap == pytest.approx(grams / weighted.carbon_ref_g)
    assert weighted.carbon_ref_g == pytest.approx(weighted.energy_ref_j * weighted.device_g_per_j)


def test_a_cleaner_grid_emits_less_for_the_same_requests():
    dirty = System(replace(load_scenario(), grid="india"))
    clean = System(replace(load_scenario(), grid="france"))
    assert clean.device_g_per_j < dirty.device_g_per_j
    assert clean.device_grid.source and dirty.device_grid.source


def test_the_reward_weight_defaults_to_zero():
    assert RewardWeights().carbon == 0.0


# -- the cloud tail's bill ---------------------------------------------------------------
def test_iaas_is_cheap_when_busy_and_faas_does_not_care_about_the_rate(system):
    from sim.cloud_cost import indifference_rate_hz, tail_cost

    iaas, faas = system.catalog.cloud("iaas"), system.catalog.cloud("faas")
    slow = tail_cost(system, iaas, faas, 0, 0.9, 0.01)
    fast = tail_cost(system, iaas, faas, 0, 0.9, 100.0)
    assert slow.faas == pytest.approx(fast.faas)
    assert slow.cheapest in ("faas", "hybrid") and fast.iaas < slow.iaas
    x = indifference_rate_hz(system, iaas, faas, 0)
    at = tail_cost(system, iaas, faas, 0, 0.9, x)
    assert at.iaas == pytest.approx(at.faas, rel=1e-6)  # one VM costs what the calls do


def test_the_hybrid_never_costs_more_than_the_cheaper_of_the_two(system):
    from sim.cloud_cost import tail_cost

    iaas, faas = system.catalog.cloud("iaas"), system.catalog.cloud("faas")
    for rate in (0.01, 0.3, 3.0, 30.0):
        c = tail_cost(system, iaas, faas, 0, 0.9, rate)
        assert c.hybrid <= min(c.iaas, c.faas) + 1e-12
        assert 0 <= c.split < system.k


def test_cloud_exits_answer_a_share_that_grows_with_depth(system):
    from sim.cloud_cost import leaves_by

    shares = leaves_by(system, 0, 0.9)
    assert len(shares) == system.k - 1
    assert np.all(np.diff(shares) >= 0) and shares[0] >= 0 and shares[-1] <= 1
    assert not math.isnan(shares.sum())


def test_the_cloud_report_writes_its_table_and_plot(tmp_path):
    from agents.cloud_report import main

    assert main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "cloud_costs.png").stat().st_size > 10_000
    import json

    report = json.loads((tmp_path / "cloud_costs.json").read_text())
    assert {r["cheapest"] for r in report["rows"]} <= {"iaas", "faas", "hybrid"}
