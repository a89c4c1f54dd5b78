"""What a device can predict about an action from its own profile, before it acts.

Heuristics from the literature decide with a model of the system: Neurosurgeon's
per-layer latency/energy regressions, Edgent's and SPINN's profiled exit statistics.
Here that model is the measured profile itself, on the ``val`` split (never the test
samples): for every (cut, threshold, level) the expected device time, the probability
that the request leaves the device, the expected bytes when it does, the expected
accuracy and leakage. Combined with a bandwidth and RTT estimate it predicts latency
and energy, with the terms of ``sim.physics`` in expectation. Levels a cut does not
offer (where a learned bottleneck adds levels at some cuts only) predict infinite
latency and energy, so that no rule picks them. Where the scenario offers model
variants, every action is predicted under every variant, from the variant's own
measured blocks, exits and answers: a rule that picks the best row picks the variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agents.base import action as base_action
from sim import physics
from sim.exits import early_exit_conf, first_exits
from sim.system import System


@dataclass(frozen=True)
class ActionStats:
    """Per action, indexed ``(row, threshold, level)``: row ``v * (K + 1) + cut`` is
    ``cut`` under model variant ``v`` (one variant: the row is the cut)."""

    device_s: np.ndarray  # (V*C, T, L) expected device time
    p_offload: np.ndarray  # (V*C, T, L) probability the request is sent
    bytes_sent: np.ndarray  # (V*C, T, L) expected bytes when sent
    accuracy: np.ndarray  # (V*C, T, L) expected accuracy
    leakage: np.ndarray  # (V*C, T, L) expected leakage
    cloud_s: np.ndarray  # (V*C,) cloud time of the tail (warm; 0 at cut K)


class Predictor:
    """Expected outcomes of every action, from the profile's validation samples; where
    the scenario offers model variants, of every action under every variant (each from
    the variant's own blocks, exits and answers), so that a rule choosing among rows
    chooses the variant too (``action``)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.n_cuts = system.n_cuts
        self.n_variants = system.n_variants
        parts = [_stats(vs) for vs in system.variant_systems]
        self.stats = ActionStats(
            *[
                np.concatenate([getattr(p, f) for p in parts])
                for f in ActionStats.__dataclass_fields__
            ]
        )

    def action(self, row: int, threshold: int, level: int) -> np.ndarray:
        """The environment's action for a row of ``stats``: three components, or four
        (the variant) where the scenario offers several."""
        variant, cut = divmod(int(row), self.n_cuts)
        if self.n_variants == 1:
            return base_action(cut, threshold, level)
        return np.array([cut, threshold, level, variant], dtype=np.int64)

    def latency_s(self, bandwidth_bps: float, rtt_s: float) -> np.ndarray:
        """Expected latency of every action (C, T, L) under a bandwidth estimate."""
        st = self.stats
        cloud = st.cloud_s[:, None, None]
        return physics.expected_latency_s(
            st.device_s, st.p_offload, st.bytes_sent, cloud, bandwidth_bps, rtt_s
        )

    def energy_j(
        self, bandwidth_bps: float, rtt_s: float, radio, tail_share_s: float
    ) -> np.ndarray:
        """Expected device energy of every action: compute, transmit, and the part of
        the radio tail the request is expected to keep alive (``tail_share_s``)."""
        st, s = self.stats, self.system
        cloud = st.cloud_s[:, None, None]
        return physics.expected_energy_j(
            s, radio, st.device_s, st.p_offload, st.bytes_sent, cloud, bandwidth_bps,
            rtt_s, tail_share_s,
        )  # fmt: skip


def _stats(s: System) -> ActionStats:
    """Expected outcomes of every (cut, threshold, level) on ``s``'s variant."""
    split = s.profile.splits["val"]
    k, n_thr, n_lvl = s.k, s.n_thresholds, s.n_levels
    early_conf = early_exit_conf(split, s.has_exit)  # (K-1, N), -1 where no exit
    exit_ok = split.exit_correct
    shape = (k + 1, n_thr, n_lvl)
    device_s, p_off = np.zeros(shape), np.zeros(shape)
    nbytes, acc, leak = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    # Device time when the exit after block b answers (index 0: unused).
    exit_time = np.array([0.0] + [physics.device_seconds(s, k, True, b, 0) for b in range(1, k)])
    for t, threshold in enumerate(s.thresholds):
        early = threshold <= 1.0
        first = first_exits(early_conf, threshold)  # 0 where no early exit fires
        for cut in range(k + 1):
            stop = np.where(first <= cut, first, 0)  # ``formulas.answering_exit``
            exited = stop > 0
            local_ok = exit_ok[np.maximum(stop - 1, 0), np.arange(len(stop))]
            dev_exit = exit_time[stop]
            if cut == k:
                full = physics.device_seconds(s, k, early, 0, 0)
                device_s[cut, t, :] = np.where(exited, dev_exit, full).mean()
                acc[cut, t, :] = np.where(exited, local_ok, exit_ok[k - 1]).mean()
                continue
            for lvl in range(n_lvl):
                if lvl >= s.levels_by_cut[cut]:  # not a level of this cut: never chosen
                    device_s[cut, t, lvl], p_off[cut, t, lvl] = np.inf, 1.0
                    nbytes[cut, t, lvl], acc[cut, t, lvl] = np.inf, -np.inf
                    continue
                dev_off = physics.device_seconds(s, cut, early, 0, lvl)
                device_s[cut, t, lvl] = np.where(exited, dev_exit, dev_off).mean()
                p = 1.0 - exited.mean()
                p_off[cut, t, lvl] = p
                sent = split.sent_bytes[cut, lvl][~exited]
                nbytes[cut, t, lvl] = sent.mean() if len(sent) else 0.0
                ok = np.where(exited, local_ok, split.final_correct[cut, lvl])
                acc[cut, t, lvl] = ok.mean()
                leak[cut, t, lvl] = p * s.profile.leakage[cut, lvl]
    cloud = np.array([*s.cloud_tail_s, 0.0])
    return ActionStats(device_s, p_off, nbytes, acc, leak, cloud)
