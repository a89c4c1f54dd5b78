"""The observation: one builder shared by the simulator and the device runtime.

It uses only what a device can know about itself: the throughput of its own recent
transfers and how old the newest one is, its RTT estimate, its battery level, how
late the current request already is and how many wait behind it, its last action,
how long the radio stays in its high-power tail, how long since it last used the
cloud (a serverless function goes cold), and the deadline.

Where the device keeps work local it learns nothing new about the link: the age
feature tells the policy how stale its estimate is, and the scenario's background
probes (a small transfer whenever the newest sample is older than
``probe.interval_s``, its energy and data charged) keep the estimate from going
blind.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

N_TPUT_SAMPLES = 5
OBS_NAMES = (
    "tput_last_log10_mbps",
    "tput_prev_log10_mbps",
    "tput_prev2_log10_mbps",
    "tput_hmean_log10_mbps",
    "tput_age_log1p_s",
    "rtt_over_deadline",
    "battery_level",
    "lateness_over_deadline",
    "queue_len_over_10",
    "last_cut_frac",
    "last_threshold_frac",
    "last_level_frac",
    "radio_tail_left_frac",
    "since_cloud_over_keepalive",
    "deadline_log10_s",
)
OBS_DIM = len(OBS_NAMES)
OBS_LOW, OBS_HIGH = -10.0, 10.0


def _log_mbps(bps: float) -> float:
    return math.log10(max(bps, 1e3) / 1e6)


@dataclass
class Telemetry:
    """What the device has measured so far. Times are on the device's own clock."""

    tput: deque = field(default_factory=lambda: deque(maxlen=N_TPUT_SAMPLES))  # (t, bps)
    rtt_est_s: float = 0.1
    battery_level: float = 1.0
    last_action: tuple[int, int, int] = (0, 0, 0)
    last_cloud_use_s: float = -math.inf
    radio_tail_end_s: float = -math.inf

    def record_transfer(self, done_s: float, nbytes: float, seconds: float) -> None:
        """A finished upload of ``nbytes`` that took ``seconds`` on the wire."""
        if seconds > 0 and nbytes > 0:
            self.tput.append((done_s, nbytes * 8.0 / seconds))

    def record_rtt(self, rtt_s: float, alpha: float = 0.125) -> None:
        """RFC 6298-style smoothed RTT."""
        self.rtt_est_s = (1 - alpha) * self.rtt_est_s + alpha * rtt_s

    @property
    def last_sample_s(self) -> float:
        return self.tput[-1][0] if self.tput else -math.inf

    def bandwidth_estimate_bps(self) -> float:
        """Harmonic mean of the recent samples (robust to one lucky transfer, as in
        Pensieve's and MPC's throughput predictors); 0 with no sample yet."""
        if not self.tput:
            return 0.0
        return len(self.tput) / sum(1.0 / max(bps, 1.0) for _, bps in self.tput)


def build_observation(
    tel: Telemetry,
    now_s: float,
    *,
    lateness_s: float,
    queue_len: int,
    deadline_s: float,
    n_cuts: int,
    n_thresholds: int,
    n_levels: int,
    tail_s: float,
    keep_alive_s: float,
) -> np.ndarray:
    """The policy's input, float32 of shape ``(OBS_DIM,)``, every entry in [-10, 10]."""
    samples = [bps for _, bps in tel.tput]
    last = samples[-1] if samples else 0.0
    prev = samples[-2] if len(samples) > 1 else last
    prev2 = samples[-3] if len(samples) > 2 else prev
    age = now_s - tel.last_sample_s if samples else 1e4
    cut, thr, lvl = tel.last_action
    tail_left = max(0.0, tel.radio_tail_end_s - now_s)
    since_cloud = now_s - tel.last_cloud_use_s
    values = (
        _log_mbps(last),
        _log_mbps(prev),
        _log_mbps(prev2),
        _log_mbps(tel.bandwidth_estimate_bps()),
        math.log1p(max(age, 0.0)),
        tel.rtt_est_s / deadline_s,
        tel.battery_level,
        lateness_s / deadline_s,
        queue_len / 10.0,
        cut / max(n_cuts - 1, 1),
        thr / max(n_thresholds - 1, 1),
        lvl / max(n_levels - 1, 1),
        tail_left / tail_s if tail_s > 0 else 0.0,
        min(since_cloud / keep_alive_s, 2.0) if keep_alive_s > 0 else 2.0,
        math.log10(deadline_s),
    )
    obs = np.array(values, dtype=np.float32)
    np.clip(obs, OBS_LOW, OBS_HIGH, out=obs)
    return obs
