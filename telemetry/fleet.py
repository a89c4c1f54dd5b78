"""A fleet's telemetry: ``Telemetry`` for N devices at once, as numpy arrays.

Each device of ``OffloadFleet-v0`` keeps what one device keeps
(``telemetry.observation.Telemetry``: its recent upload throughputs, its smoothed RTT,
its last action, its radio's tail and its last use of the cloud) plus what its own
answers told it about the shared cloud: the server-side queueing time they reported,
smoothed. ``observations`` builds every device's observation with the same features
and the same running averages (``smoothed``) as ``build_observation``; the fleet's
N = 1 test and the golden episodes hold the two to the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from telemetry.observation import (
    N_TPUT_SAMPLES,
    NO_SAMPLE_AGE_S,
    NO_SAMPLE_LOG10_MBPS,
    OBS_DIM,
    OBS_HIGH,
    RTT_ALPHA,
    Telemetry,
    smoothed,
)

FLEET_OBS_DIM = OBS_DIM + 1
QUEUE_EWMA = 0.3  # weight of the newest answer in the smoothed server queueing time


@dataclass(frozen=True)
class FleetContext:
    """``ObservationContext`` for a fleet: the same constants, each device's radio
    (``tail_s``, ``tail_w``) as arrays."""

    deadline_s: float
    n_cuts: int
    n_thresholds: int
    n_levels: int
    keep_alive_s: float
    tail_s: np.ndarray
    tail_w: np.ndarray


class FleetTelemetry:
    """What each of ``n`` devices has measured (times on the fleet's clock)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rtt_est = np.zeros(n)
        self.last_action = np.zeros((n, 3), dtype=np.int64)
        self.radio_tail_end = np.full(n, -math.inf)
        self.cloud_last_use = np.full(n, -math.inf)
        self.server_queue = np.zeros(n)
        self.tput_time = np.full((n, N_TPUT_SAMPLES), -math.inf)
        self.tput_log = np.full((n, N_TPUT_SAMPLES), NO_SAMPLE_LOG10_MBPS)
        self.tput_inv = np.zeros((n, N_TPUT_SAMPLES))
        self.tput_count = np.zeros(n, dtype=np.int64)

    def start(self, d: int, tel: Telemetry, start_s: float) -> None:
        """Device ``d`` starts an episode at fleet time ``start_s`` knowing ``tel``
        (its times relative to the episode's start)."""
        self.radio_tail_end[d] = tel.radio_tail_end_s + start_s
        self.cloud_last_use[d] = tel.last_cloud_use_s + start_s
        self.rtt_est[d] = tel.rtt_est_s
        self.last_action[d] = tel.last_action
        self.tput_time[d] = -math.inf
        self.tput_log[d] = NO_SAMPLE_LOG10_MBPS
        self.tput_inv[d] = 0.0
        self.tput_count[d] = 0
        self.server_queue[d] = 0.0
        for t, bps in tel.tput:
            self.record_transfers(np.array([d]), np.array([t + start_s]), np.array([bps]))

    def record_transfers(self, devices: np.ndarray, done_s: np.ndarray, bps: np.ndarray) -> None:
        """A throughput sample of ``bps`` finished at ``done_s`` on each of ``devices``
        (``Telemetry.record_transfer``)."""
        for buf in (self.tput_time, self.tput_log, self.tput_inv):
            buf[devices, :-1] = buf[devices, 1:]
        self.tput_time[devices, -1] = done_s
        self.tput_log[devices, -1] = np.log10(np.where(bps > 1e3, bps, 1e3) / 1e6)
        self.tput_inv[devices, -1] = 1.0 / np.where(bps > 1.0, bps, 1.0)
        self.tput_count[devices] += 1

    def record_answers(self, devices: np.ndarray, rtt_s: np.ndarray, queue_s: np.ndarray) -> None:
        """Answers came back to ``devices``: their RTT and the server's queueing time."""
        self.rtt_est[devices] = smoothed(self.rtt_est[devices], rtt_s, RTT_ALPHA)
        self.server_queue[devices] = smoothed(self.server_queue[devices], queue_s, QUEUE_EWMA)

    def observations(
        self, now, lateness_s, queue_len, battery_level, ctx: FleetContext
    ) -> np.ndarray:
        """Every device's observation, ``(n, FLEET_OBS_DIM)`` float32: the features of
        ``build_observation``, then the smoothed server queueing time over the
        deadline."""
        count = np.minimum(self.tput_count, N_TPUT_SAMPLES)
        logs = self.tput_log
        last = np.where(count > 0, logs[:, -1], NO_SAMPLE_LOG10_MBPS)
        prev = np.where(count > 1, logs[:, -2], last)
        prev2 = np.where(count > 2, logs[:, -3], prev)
        inv_sum = self.tput_inv.sum(1)
        estimate = np.where(count > 0, count / np.where(inv_sum > 0, inv_sum, 1.0), 0.0)
        hmean = np.log10(np.where(estimate > 1e3, estimate, 1e3) / 1e6)
        age = np.where(count > 0, now - self.tput_time[:, -1], NO_SAMPLE_AGE_S)
        deadline, keep_alive = ctx.deadline_s, ctx.keep_alive_s
        tail_left = self.radio_tail_end - now
        tail_s = ctx.tail_s
        safe_tail = np.where(tail_s > 0, tail_s, 1.0)
        tail_frac = np.where((tail_s > 0) & (tail_left > 0), tail_left / safe_tail, 0.0)
        if keep_alive > 0:
            since = np.minimum((now - self.cloud_last_use) / keep_alive, 2.0)
        else:
            since = np.full(self.n, 2.0)
        obs = np.empty((self.n, FLEET_OBS_DIM), dtype=np.float64)
        obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3] = last, prev, prev2, hmean
        obs[:, 4] = np.log1p(np.maximum(age, 0.0))
        obs[:, 5] = np.minimum(self.rtt_est / deadline, OBS_HIGH)
        obs[:, 6] = battery_level
        obs[:, 7] = np.minimum(lateness_s / deadline, OBS_HIGH)
        obs[:, 8] = np.where(queue_len < 100, queue_len / 10.0, OBS_HIGH)
        obs[:, 9] = self.last_action[:, 0] / ((ctx.n_cuts - 1) or 1)
        obs[:, 10] = self.last_action[:, 1] / ((ctx.n_thresholds - 1) or 1)
        obs[:, 11] = self.last_action[:, 2] / ((ctx.n_levels - 1) or 1)
        obs[:, 12] = tail_frac
        obs[:, 13] = since
        obs[:, 14] = math.log10(deadline)
        obs[:, 15] = np.log10(np.where(tail_s > 0.01, tail_s, 0.01))
        obs[:, 16] = ctx.tail_w
        obs[:, 17] = np.minimum(self.server_queue / deadline, OBS_HIGH)
        return obs.astype(np.float32)
