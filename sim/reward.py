"""The reward of one request, from what it did.

Per request, with the scenario's weights (``sim.scenario.RewardWeights``)::

    r = accuracy * credit - latency * min(L / D, 4) - deadline_miss * [L > D]
        - energy * (1 + energy_battery_gain * (1 - battery)) * E / E_ref
        - money * C / C_ref - leakage * leak - carbon * G / G_ref

``credit`` is whether the answer was right (or its calibrated expectation, for
training), ``L`` the latency from arrival to answer, ``D`` the deadline, ``E`` the
device energy, ``E_ref`` the battery's capacity over ``requests_per_charge``, ``C`` the
money, ``C_ref`` ``money_ref_usd``, ``leak`` the measured leakage of what was sent, ``G``
the grams of CO2e of the device's and the cloud's energy and ``G_ref`` those of
``E_ref`` at the device's grid (``formulas.request_carbon_g``). Each
term is 1 at its reference, so the weights compare directly. The formula is
``sim.formulas.reward`` (compiled into the simulator's step as it is).
"""

from __future__ import annotations

from sim import formulas


class Reward:
    """A scenario's reward function: ``reward(credit, latency_s, energy_j, money_usd,
    leakage, battery_level, carbon_g)``."""

    def __init__(
        self,
        weights,
        deadline_s: float,
        energy_ref_j: float,
        money_ref_usd: float,
        carbon_ref_g: float,
    ):
        w = weights
        self.weights = (
            w.accuracy,
            w.latency,
            w.deadline_miss,
            w.energy,
            w.energy_battery_gain,
            w.money,
            w.leakage,
            w.carbon,
            1.0 / deadline_s,
            1.0 / energy_ref_j,
            1.0 / money_ref_usd,
            1.0 / carbon_ref_g,
        )
        assert len(self.weights) == formulas.N_REWARD_CONSTANTS

    def __call__(
        self, credit, latency_s, energy_j, money_usd, leakage, battery_level, carbon_g
    ) -> float:
        return formulas.reward(
            self.weights, credit, latency_s, energy_j, money_usd, leakage, battery_level, carbon_g
        )

    def energy_only(self, energy_j: float, battery_level: float, carbon_g: float) -> float:
        """The reward's energy terms alone (negative): what spending ``energy_j`` (and
        the ``carbon_g`` it emits) costs."""
        return self(0.0, 0.0, energy_j, 0.0, 0.0, battery_level, carbon_g)
