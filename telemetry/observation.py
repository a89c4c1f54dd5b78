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

The builder and the telemetry's updates are plain functions over numbers and arrays
(``log_mbps``, ``smoothed``, ``push_sample``, ``fill_observation``): ``Telemetry``
and ``build_observation`` call them for one device, and the simulator's compiled
step (``sim.kernel``) calls the same functions for every device it steps.
"""

from __future__ import annotations

import copy
import math
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


# The observation's constants, one vector per device (``ObservationContext.vector``).
(
    C_DEADLINE,
    C_KEEP_ALIVE,
    C_TAIL_S,
    C_TAIL_W,
    C_CUT_SCALE,
    C_THR_SCALE,
    C_LVL_SCALE,
    C_LOG_DEADLINE,
    C_LOG_TAIL,
) = range(9)
N_CONTEXT = 9


def log_mbps(bps: float) -> float:
    """A throughput feature: log10 Mbit/s, floored at 1 kbit/s."""
    return math.log10((bps if bps > 1e3 else 1e3) / 1e6)


def smoothed(average: float, sample: float, weight: float) -> float:
    """An exponentially weighted running average after one more ``sample``: every
    running average of the telemetry (the RTT, a fleet's server queueing time)."""
    return (1 - weight) * average + weight * sample


def push_sample(times, rates, logs, inverses, count: int, done_s: float, bps: float):
    """Append a throughput sample to the last ``N_TPUT_SAMPLES`` (arrays, oldest first,
    newest last). Returns ``(count, estimate_bps)``: how many samples there are and
    their harmonic mean (robust to one lucky transfer, as in Pensieve's and MPC's
    throughput predictors)."""
    n = len(times)
    for j in range(n - 1):
        times[j], rates[j], logs[j], inverses[j] = (
            times[j + 1],
            rates[j + 1],
            logs[j + 1],
            inverses[j + 1],
        )
    times[n - 1], rates[n - 1] = done_s, bps
    logs[n - 1] = log_mbps(bps)
    inverses[n - 1] = 1.0 / (bps if bps > 1.0 else 1.0)
    count = count + 1 if count < n else n
    total = 0.0
    for j in range(n - count, n):
        total += inverses[j]
    return count, count / total


def fill_observation(
    obs,
    times,
    logs,
    count: int,
    estimate_bps: float,
    rtt_est_s: float,
    battery_level: float,
    last_cut: int,
    last_thr: int,
    last_lvl: int,
    radio_tail_end_s: float,
    last_cloud_use_s: float,
    now_s: float,
    lateness_s: float,
    queue_len: int,
    ctx,
) -> None:
    """Write the policy's input (``OBS_NAMES``, every entry in [-10, 10]) into ``obs``
    from a device's telemetry (``times``/``logs``: its last samples, newest last) and
    its constants ``ctx`` (``ObservationContext.vector``)."""
    n = len(logs)
    last = logs[n - 1] if count > 0 else NO_SAMPLE_LOG10_MBPS
    prev = logs[n - 2] if count > 1 else last
    prev2 = logs[n - 3] if count > 2 else prev
    age = now_s - times[n - 1] if count > 0 else NO_SAMPLE_AGE_S
    deadline_s, keep_alive_s, tail_s = ctx[C_DEADLINE], ctx[C_KEEP_ALIVE], ctx[C_TAIL_S]
    tail_left = radio_tail_end_s - now_s
    since_cloud = (now_s - last_cloud_use_s) / keep_alive_s if keep_alive_s > 0 else 2.0
    lateness = lateness_s / deadline_s
    rtt = rtt_est_s / deadline_s
    obs[0] = last
    obs[1] = prev
    obs[2] = prev2
    obs[3] = log_mbps(estimate_bps)
    obs[4] = math.log1p(age if age > 0.0 else 0.0)
    obs[5] = rtt if rtt < OBS_HIGH else OBS_HIGH
    obs[6] = battery_level
    obs[7] = lateness if lateness < OBS_HIGH else OBS_HIGH
    obs[8] = queue_len / 10.0 if queue_len < 100 else OBS_HIGH
    obs[9] = last_cut * ctx[C_CUT_SCALE]
    obs[10] = last_thr * ctx[C_THR_SCALE]
    obs[11] = last_lvl * ctx[C_LVL_SCALE]
    obs[12] = (tail_left / tail_s if tail_left > 0.0 else 0.0) if tail_s > 0 else 0.0
    obs[13] = since_cloud if since_cloud < 2.0 else 2.0
    obs[14] = ctx[C_LOG_DEADLINE]
    obs[15] = ctx[C_LOG_TAIL]
    obs[16] = ctx[C_TAIL_W]


def _samples() -> np.ndarray:
    return np.zeros(N_TPUT_SAMPLES)


@dataclass
class Telemetry:
    """What the device has measured so far. Times are on the device's own clock."""

    rtt_est_s: float = 0.1
    battery_level: float = 1.0
    last_action: tuple[int, int, int] = (0, 0, 0)
    last_cloud_use_s: float = -math.inf
    radio_tail_end_s: float = -math.inf
    # The last ``N_TPUT_SAMPLES`` throughput samples, oldest first (``push_sample``).
    sample_times: np.ndarray = field(default_factory=_samples, repr=False)
    sample_bps: np.ndarray = field(default_factory=_samples, repr=False)
    sample_logs: np.ndarray = field(default_factory=_samples, repr=False)
    sample_inverses: np.ndarray = field(default_factory=_samples, repr=False)
    n_samples: int = 0
    estimate_bps: float = 0.0

    def record_transfer(self, done_s: float, nbytes: float, seconds: float) -> None:
        """A finished upload of ``nbytes`` that took ``seconds`` on the wire."""
        if seconds > 0 and nbytes > 0:
            self.n_samples, self.estimate_bps = push_sample(
                self.sample_times,
                self.sample_bps,
                self.sample_logs,
                self.sample_inverses,
                self.n_samples,
                done_s,
                nbytes * 8.0 / seconds,
            )

    def record_rtt(self, rtt_s: float) -> None:
        """RFC 6298-style smoothed RTT."""
        self.rtt_est_s = smoothed(self.rtt_est_s, rtt_s, RTT_ALPHA)

    @property
    def tput(self) -> list[tuple[float, float]]:
        """The recent samples as ``(done_s, bps)``, oldest first."""
        first = N_TPUT_SAMPLES - self.n_samples
        return list(
            zip(self.sample_times[first:].tolist(), self.sample_bps[first:].tolist(), strict=True)
        )

    def relative_to(self, t0: float) -> Telemetry:
        """A copy with every time moved to a clock whose zero is ``t0``."""
        out = copy.deepcopy(self)
        out.sample_times = self.sample_times - t0
        out.last_cloud_use_s = self.last_cloud_use_s - t0
        out.radio_tail_end_s = self.radio_tail_end_s - t0
        return out

    @property
    def last_sample_s(self) -> float:
        return float(self.sample_times[-1]) if self.n_samples else -math.inf

    def bandwidth_estimate_bps(self) -> float:
        """Harmonic mean of the recent samples; 0 with no sample yet."""
        return self.estimate_bps


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
        # The constants of every observation, as ``fill_observation`` reads them (frozen:
        # set through object).
        vector = np.zeros(N_CONTEXT)
        vector[C_DEADLINE], vector[C_KEEP_ALIVE] = self.deadline_s, self.keep_alive_s
        vector[C_TAIL_S], vector[C_TAIL_W] = self.tail_s, self.tail_w
        vector[C_CUT_SCALE] = 1.0 / ((self.n_cuts - 1) or 1)
        vector[C_THR_SCALE] = 1.0 / ((self.n_thresholds - 1) or 1)
        vector[C_LVL_SCALE] = 1.0 / ((self.n_levels - 1) or 1)
        vector[C_LOG_DEADLINE] = math.log10(self.deadline_s)
        vector[C_LOG_TAIL] = math.log10(self.tail_s if self.tail_s > 0.01 else 0.01)
        object.__setattr__(self, "vector", vector)


def build_observation(
    tel: Telemetry, now_s: float, lateness_s: float, queue_len: int, ctx: ObservationContext
) -> np.ndarray:
    """The policy's input, float32 of shape ``(OBS_DIM,)``, every entry in [-10, 10]."""
    obs = np.empty(OBS_DIM, dtype=np.float32)
    cut, thr, lvl = tel.last_action
    fill_observation(
        obs,
        tel.sample_times,
        tel.sample_logs,
        tel.n_samples,
        tel.estimate_bps,
        tel.rtt_est_s,
        tel.battery_level,
        cut,
        thr,
        lvl,
        tel.radio_tail_end_s,
        tel.last_cloud_use_s,
        now_s,
        lateness_s,
        queue_len,
        ctx.vector,
    )
    return obs
