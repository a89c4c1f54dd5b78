"""The observation: one builder shared by the simulator and the device runtime.

It uses only what a device can know about itself: the throughput of its own recent
transfers and how old the newest one is, its RTT estimate, its battery level, how
late the current request already is and how many wait behind it, its last action,
how long the radio stays in its high-power tail, how long since it last used the
cloud (a serverless function goes cold), the deadline, and which radio it is using
(its tail time and tail power: a device knows whether it is on WiFi or cellular, and
the two make offloading cost very different energy).

Where the device keeps work local it learns nothing new about the link: the age
feature tells the policy how stale its estimate is, and the scenario's background
probes (a small transfer whenever the newest sample is older than
``probe.interval_s``, its energy and data charged) keep the estimate from going
blind.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

N_TPUT_SAMPLES = 5
RTT_ALPHA = 0.125  # weight of the newest RTT sample in the smoothed RTT (RFC 6298)
NO_SAMPLE_LOG10_MBPS = -3.0  # the throughput features before any transfer (1 kbit/s)
NO_SAMPLE_AGE_S = 1e4  # the age of the newest sample when there is none
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
    "radio_tail_log10_s",
    "radio_tail_power_w",
)
OBS_DIM = len(OBS_NAMES)
OBS_LOW, OBS_HIGH = -10.0, 10.0


def _log_mbps(bps: float) -> float:
    """A throughput feature: log10 Mbit/s, floored at 1 kbit/s."""
    return math.log10((bps if bps > 1e3 else 1e3) / 1e6)


def smoothed(average, sample, weight: float):
    """An exponentially weighted running average after one more ``sample`` (floats or
    arrays): every running average of the telemetry (the RTT, a fleet's server
    queueing time) is this one."""
    return (1 - weight) * average + weight * sample


@dataclass
class Telemetry:
    """What the device has measured so far. Times are on the device's own clock."""

    tput: deque = field(default_factory=lambda: deque(maxlen=N_TPUT_SAMPLES))  # (t, bps)
    rtt_est_s: float = 0.1
    battery_level: float = 1.0
    last_action: tuple[int, int, int] = (0, 0, 0)
    last_cloud_use_s: float = -math.inf
    radio_tail_end_s: float = -math.inf
    # Derived from ``tput`` when a sample arrives, so that building an observation is
    # cheap: log10 Mbit/s of the samples, and the harmonic-mean estimate.
    _logs: deque = field(default_factory=lambda: deque(maxlen=N_TPUT_SAMPLES), repr=False)
    _inverse: deque = field(default_factory=lambda: deque(maxlen=N_TPUT_SAMPLES), repr=False)
    _estimate_bps: float = field(default=0.0, repr=False)

    def record_transfer(self, done_s: float, nbytes: float, seconds: float) -> None:
        """A finished upload of ``nbytes`` that took ``seconds`` on the wire."""
        if seconds > 0 and nbytes > 0:
            bps = nbytes * 8.0 / seconds
            self.tput.append((done_s, bps))
            self._logs.append(_log_mbps(bps))
            self._inverse.append(1.0 / (bps if bps > 1.0 else 1.0))
            self._estimate_bps = len(self._inverse) / sum(self._inverse)

    def record_rtt(self, rtt_s: float) -> None:
        """RFC 6298-style smoothed RTT."""
        self.rtt_est_s = smoothed(self.rtt_est_s, rtt_s, RTT_ALPHA)

    def relative_to(self, t0: float) -> Telemetry:
        """A copy with every time moved to a clock whose zero is ``t0``."""
        out = copy.deepcopy(self)
        out.tput = deque(((t - t0, bps) for t, bps in self.tput), maxlen=N_TPUT_SAMPLES)
        out.last_cloud_use_s = self.last_cloud_use_s - t0
        out.radio_tail_end_s = self.radio_tail_end_s - t0
        return out

    @property
    def last_sample_s(self) -> float:
        return self.tput[-1][0] if self.tput else -math.inf

    def bandwidth_estimate_bps(self) -> float:
        """Harmonic mean of the recent samples (robust to one lucky transfer, as in
        Pensieve's and MPC's throughput predictors); 0 with no sample yet."""
        return self._estimate_bps


@dataclass(frozen=True)
class ObservationContext:
    """What stays fixed for a device in a scenario: its deadline, the action grid,
    its radio (tail time and power) and the cloud's keep-alive window."""

    deadline_s: float
    n_cuts: int
    n_thresholds: int
    n_levels: int
    tail_s: float
    tail_w: float
    keep_alive_s: float

    def __post_init__(self) -> None:
        # Constants of every observation, computed once (frozen: set through object).
        put = object.__setattr__
        put(self, "_cut_scale", 1.0 / ((self.n_cuts - 1) or 1))
        put(self, "_thr_scale", 1.0 / ((self.n_thresholds - 1) or 1))
        put(self, "_lvl_scale", 1.0 / ((self.n_levels - 1) or 1))
        put(self, "_log_deadline", math.log10(self.deadline_s))
        put(self, "_log_tail", math.log10(self.tail_s if self.tail_s > 0.01 else 0.01))


def build_observation(
    tel: Telemetry, now_s: float, lateness_s: float, queue_len: int, ctx: ObservationContext
) -> np.ndarray:
    """The policy's input, float32 of shape ``(OBS_DIM,)``, every entry in [-10, 10]."""
    deadline_s, tail_s, keep_alive_s = ctx.deadline_s, ctx.tail_s, ctx.keep_alive_s
    logs = tel._logs
    n = len(logs)
    last = logs[-1] if n else NO_SAMPLE_LOG10_MBPS
    prev = logs[-2] if n > 1 else last
    prev2 = logs[-3] if n > 2 else prev
    age = now_s - tel.tput[-1][0] if n else NO_SAMPLE_AGE_S
    cut, thr, lvl = tel.last_action
    tail_left = tel.radio_tail_end_s - now_s
    since_cloud = (now_s - tel.last_cloud_use_s) / keep_alive_s if keep_alive_s > 0 else 2.0
    lateness = lateness_s / deadline_s
    rtt = tel.rtt_est_s / deadline_s
    return np.array(
        (
            last,
            prev,
            prev2,
            _log_mbps(tel._estimate_bps),
            math.log1p(age if age > 0.0 else 0.0),
            rtt if rtt < OBS_HIGH else OBS_HIGH,
            tel.battery_level,
            lateness if lateness < OBS_HIGH else OBS_HIGH,
            queue_len / 10.0 if queue_len < 100 else OBS_HIGH,
            cut * ctx._cut_scale,
            thr * ctx._thr_scale,
            lvl * ctx._lvl_scale,
            (tail_left / tail_s if tail_left > 0.0 else 0.0) if tail_s > 0 else 0.0,
            since_cloud if since_cloud < 2.0 else 2.0,
            ctx._log_deadline,
            ctx._log_tail,
            ctx.tail_w,
        ),
        dtype=np.float32,
    )
