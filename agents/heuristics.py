"""The rules the literature deploys, each deciding from what the device observes.

Every heuristic sees only the observation (its bandwidth estimate, RTT estimate,
battery, lateness) plus the static knowledge such systems are built with: the
measured profile through ``Predictor`` (expected device time, bytes, accuracy per
action on the validation samples) and the device/radio/cloud specs. Where the
scenario offers model variants, the rules that search the predicted outcomes
(Neurosurgeon, Edgent, SPINN) search every variant's too, by the same criterion; the
fixed rules (edge only, cloud only) run the scenario's first variant.
"""

from __future__ import annotations

import numpy as np

from agents.base import ObservationView, action
from agents.predictor import Predictor
from sim.system import System


def _argbest(values: np.ndarray, mask: np.ndarray | None = None, maximise: bool = False):
    v = np.where(mask, values, np.inf if not maximise else -np.inf) if mask is not None else values
    idx = np.unravel_index(np.argmax(v) if maximise else np.argmin(v), v.shape)
    return tuple(int(i) for i in idx)


class EdgeOnly:
    """Everything on the device. With ``threshold`` (an index into the grid), early exits
    answer when confident enough (BranchyNet-style, Teerapittayanon et al. 2016)."""

    def __init__(self, system: System, threshold: int | None = None) -> None:
        never = system.n_thresholds - 1
        self._action = action(system.k, never if threshold is None else threshold, 0)
        self.name = "edge_only" if threshold is None else "edge_only_exits"

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self._action.copy()


class CloudOnly:
    """Send the input to the cloud. ``best_codec``: the smallest input codec whose
    profiled accuracy stays within 0.5 points of the raw image's."""

    def __init__(self, system: System, best_codec: bool = False) -> None:
        level = 0
        if best_codec:
            val = system.profile.splits["val"]
            acc = val.final_correct[0].mean(axis=1)
            size = val.sent_bytes[0].mean(axis=1)
            ok = acc >= acc[0] - 0.005
            level = int(np.argmin(np.where(ok, size, np.inf)))
        self._action = action(0, system.n_thresholds - 1, level)
        self.name = "cloud_only_codec" if best_codec else "cloud_only"

    def act(self, observation: np.ndarray) -> np.ndarray:
        return self._action.copy()


class Neurosurgeon:
    """Kang et al., ASPLOS 2017: pick the partition point that minimises predicted
    end-to-end latency (or device energy) from per-layer profiles and the current
    bandwidth. The original has no early exits: no exits here either; among the
    partition points it also picks the codec (learned bottlenecks included) with the
    same prediction."""

    def __init__(
        self, system: System, predictor: Predictor, objective: str = "latency", radio=None
    ) -> None:
        if objective not in ("latency", "energy"):
            raise ValueError(f"objective must be latency or energy, got {objective!r}")
        if objective == "energy" and radio is None:
            raise ValueError("the energy objective needs the device's radio")
        self.system, self.predictor, self.objective = system, predictor, objective
        self.radio = radio
        self.name = "neurosurgeon" if objective == "latency" else "neurosurgeon_energy"
        self.never = system.n_thresholds - 1

    def act(self, observation: np.ndarray) -> np.ndarray:
        view = ObservationView(observation)
        if self.objective == "latency":
            cost = self.predictor.latency_s(view.bandwidth_bps, view.rtt_s)
        else:
            cost = self.predictor.energy_j(view.bandwidth_bps, view.rtt_s, self.radio, 0.0)
        cut, level = _argbest(cost[:, self.never, :])
        return self.predictor.action(cut, self.never, level)


class Edgent:
    """Li, Zhou, Chen, "Edge Intelligence: On-Demand DNN Inference with Device-Edge
    Synergy", 2018: the most accurate (exit, partition) whose predicted latency meets
    the deadline under the estimated bandwidth; the fastest one when none does. The
    codec (learned bottlenecks included) is chosen the same way, with the partition."""

    name = "edgent"

    def __init__(self, system: System, predictor: Predictor) -> None:
        self.system, self.predictor = system, predictor
        self.deadline = system.scenario.workload.deadline_s

    def act(self, observation: np.ndarray) -> np.ndarray:
        view = ObservationView(observation)
        lat = self.predictor.latency_s(view.bandwidth_bps, view.rtt_s)
        budget = self.deadline - view.lateness_s
        acc = self.predictor.stats.accuracy
        feasible = lat <= budget
        if feasible.any():
            # Most accurate; among equals, the fastest.
            score = np.where(feasible, acc - 1e-6 * lat, -np.inf)
            return self.predictor.action(*_argbest(score, maximise=True))
        return self.predictor.action(*_argbest(lat))


class Spinn:
    """Laskaridis et al., "SPINN: Synergistic Progressive Inference of Neural Networks
    over Device and Cloud", MobiCom 2020: confidence-threshold early exits on the
    device, and a scheduler that picks the split point and threshold for the estimated
    bandwidth, minimising latency subject to an accuracy floor (here: within
    ``tolerance`` of the final exit's accuracy). SPINN compresses what it sends; here
    the scheduler also picks the codec (learned bottlenecks included) under the same
    floor."""

    name = "spinn"

    def __init__(self, system: System, predictor: Predictor, tolerance: float = 0.01) -> None:
        self.system, self.predictor = system, predictor
        stats = predictor.stats
        final = float(stats.accuracy[system.k, system.n_thresholds - 1, 0])
        self.floor = final - tolerance

    def act(self, observation: np.ndarray) -> np.ndarray:
        view = ObservationView(observation)
        lat = self.predictor.latency_s(view.bandwidth_bps, view.rtt_s)
        acc = self.predictor.stats.accuracy
        ok = acc >= self.floor
        if not ok.any():
            ok = acc >= acc.max()
        return self.predictor.action(*_argbest(lat, ok))


HEURISTICS = (
    "edge_only",
    "edge_only_exits",
    "cloud_only",
    "cloud_only_codec",
    "neurosurgeon",
    "neurosurgeon_energy",
    "edgent",
    "spinn",
)


def make_heuristic(name: str, system: System, radio=None, predictor: Predictor | None = None):
    """The heuristic called ``name`` for ``system`` (``radio``: the device's, which
    ``neurosurgeon_energy`` prices; ``predictor``: one to share between several).
    The evaluation and the device loop build them here, so they run the same rules."""
    if name not in HEURISTICS:
        raise ValueError(f"no heuristic {name!r}; known: {', '.join(HEURISTICS)}")
    pred = predictor or Predictor(system)
    grid = system.thresholds
    exit_thr = grid.index(0.9) if 0.9 in grid else system.n_thresholds // 2
    makers = {
        "edge_only": lambda: EdgeOnly(system),
        "edge_only_exits": lambda: EdgeOnly(system, threshold=exit_thr),
        "cloud_only": lambda: CloudOnly(system),
        "cloud_only_codec": lambda: CloudOnly(system, best_codec=True),
        "neurosurgeon": lambda: Neurosurgeon(system, pred),
        "neurosurgeon_energy": lambda: Neurosurgeon(system, pred, "energy", radio=radio),
        "edgent": lambda: Edgent(system, pred),
        "spinn": lambda: Spinn(system, pred),
    }
    policy = makers[name]()
    policy.name = name
    return policy
