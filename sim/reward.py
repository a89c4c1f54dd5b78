"""The reward of one request, or of many at once, from what it did.

Per request, with the scenario's weights (``sim.scenario.RewardWeights``)::

    r = accuracy * credit - latency * min(L / D, 4) - deadline_miss * [L > D]
        - energy * (1 + energy_battery_gain * (1 - battery)) * E / E_ref
        - money * C / C_ref - leakage * leak

``credit`` is whether the answer was right (or its calibrated expectation, for
training), ``L`` the latency from arrival to answer, ``D`` the deadline, ``E`` the
device energy, ``E_ref`` the battery's capacity over ``requests_per_charge``, ``C`` the
money, ``C_ref`` ``money_ref_usd``, ``leak`` the measured leakage of what was sent. Each
term is 1 at its reference, so the weights compare directly.
"""

from __future__ import annotations

import numpy as np

LATENCY_RATIO_CAP = 4.0  # a late answer costs at most four deadlines of latency


class Reward:
    """A scenario's reward function: ``reward(credit, latency_s, energy_j, money_usd,
    leakage, battery_level)``, for floats (one request) or numpy arrays (a fleet's
    requests, elementwise)."""

    def __init__(self, weights, deadline_s: float, energy_ref_j: float, money_ref_usd: float):
        w = weights
        self.accuracy, self.latency, self.deadline_miss = w.accuracy, w.latency, w.deadline_miss
        self.energy, self.energy_battery_gain = w.energy, w.energy_battery_gain
        self.money, self.leakage = w.money, w.leakage
        self.inv_deadline = 1.0 / deadline_s
        self.inv_energy_ref = 1.0 / energy_ref_j
        self.inv_money_ref = 1.0 / money_ref_usd

    def __call__(self, credit, latency_s, energy_j, money_usd, leakage, battery_level):
        ratio = latency_s * self.inv_deadline
        if isinstance(ratio, np.ndarray):
            capped = np.minimum(ratio, LATENCY_RATIO_CAP)
            missed = np.where(ratio > 1.0, self.deadline_miss, 0.0)
        else:  # one request: plain floats, the hot path of Offload-v0
            capped = ratio if ratio < LATENCY_RATIO_CAP else LATENCY_RATIO_CAP
            missed = self.deadline_miss if ratio > 1.0 else 0.0
        return (
            self.accuracy * credit
            - self.latency * capped
            - missed
            - self.energy * (1.0 + self.energy_battery_gain * (1.0 - battery_level))
            * energy_j * self.inv_energy_ref
            - self.money * money_usd * self.inv_money_ref
            - self.leakage * leakage
        )  # fmt: skip

    def energy_only(self, energy_j, battery_level):
        """The reward's energy term alone (negative): what spending ``energy_j`` costs."""
        return self(0.0, 0.0, energy_j, 0.0, 0.0, battery_level)
