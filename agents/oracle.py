"""A clairvoyant per-request oracle.

For every request it simulates every distinct action with the simulator's own state:
the future bandwidth of the trace, the drawn sample's true exit confidences and
correctness, the queue, the radio tail, the cloud's warmth, and it knows when the
next request will arrive. It takes the action with the best score, where the score is
the request's reward with one change: an upload is charged the radio tail it burns
until the next request arrives (at most the whole tail) instead of the whole tail.
A purely greedy oracle that charged the whole tail would never start offloading when
the radio is idle, because the next uploads that share that tail lie in its future.

What it bounds: per request, given the state it arrives in, no policy's action has a
better immediate outcome (accuracy, latency, money, leakage) than the oracle's options.
What it does not bound: it is greedy and plans nothing: a transfer that delays the
queue, a tail or a warm FaaS instance it leaves to the next requests, the energy it
spends now that weighs more later: a policy that plans ahead can beat it on some
episodes. It is an upper reference, not a proof of optimality.

``LabelBlindOracle`` (``oracle_label_blind``, run it with ``evaluate.py --policies``)
is the same search with one piece of knowledge taken away: each image's true answer.
It scores an answer at the calibrated accuracy of its exit and confidence (what
``accuracy_credit="expected"`` credits), so it still knows the future bandwidth, the
arrivals and the confidence every exit will have on this image. It shows how much of
the oracle's lead rests on the labels: scored one request at a time at calibrated
accuracy, an upload rarely beats an early exit on the device once the start of an
upload regime is counted (a cold FaaS instance, an idle radio: the first upload takes
most of a second), so this search keeps the work on the device, and the queue it builds
costs the requests after it. Numbers in docs/benchmarks-history.md.
"""

from __future__ import annotations

import numpy as np

from envs.offload_env import OffloadEnv
from envs.wrappers import env_actions
from sim import physics
from sim.system import Outcome


class Oracle:
    name = "oracle"
    privileged = True

    def __init__(self) -> None:
        self._actions: list[tuple[int, int, int]] | None = None

    def act_privileged(self, env: OffloadEnv) -> np.ndarray:
        if self._actions is None:
            self._actions = env_actions(env)
        st, s = env.state, env.system
        nxt = st.arrivals[st.index + 1] if st.index + 1 < len(st.arrivals) else np.inf
        battery = max(st.battery_j, 0.0) / s.battery_capacity_j
        best, best_score = None, -np.inf
        for a in self._actions:
            out = env.simulate(*a)
            energy = out.energy_j
            if out.offloaded:  # the part of its radio tail that runs before the next request
                burned = physics.radio_tail_left_j(st.radio, out.tx_end_s, nxt)
                energy = energy - out.tail_j + burned
            carbon = physics.carbon_with_energy_g(s, out, energy)
            credit = self._credit(out)
            score = s.reward(
                credit, out.latency_s, energy, out.money_usd, out.leakage, battery, carbon
            )
            if score > best_score:
                best, best_score = a, score
        return np.array(best, dtype=np.int64)

    @staticmethod
    def _credit(out: Outcome) -> float:
        """The accuracy the score credits: what the environment credits (the realized
        answer when evaluating)."""
        return out.credit

    def act(self, observation: np.ndarray) -> np.ndarray:
        raise RuntimeError("the oracle needs the simulator: call act_privileged(env)")


class LabelBlindOracle(Oracle):
    """The clairvoyant search without the labels: answers are credited at the calibrated
    accuracy of their exit and confidence (see the module docstring)."""

    name = "oracle_label_blind"

    @staticmethod
    def _credit(out: Outcome) -> float:
        return out.expected
