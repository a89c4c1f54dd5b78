"""The on-device controller: telemetry in, action out.

It keeps what the device measures about itself (throughput of its own uploads, RTT,
battery, radio tail, last cloud use), builds the observation with the simulator's
own ``telemetry.observation.build_observation``, and asks a policy for the action.
Imports numpy and psutil only: no torch, no gymnasium, no Stable-Baselines3.

Battery: ``psutil.sensors_battery()`` when the device has a battery sensor (a laptop,
a phone running Linux); otherwise, and from the moment a sensor stops answering, the
energy model: the level drops by the energy the device loop charges for each request
(compute, radio and idle power from the scenario's catalog) out of the scenario's
capacity. ``BatteryMonitor.source`` says which is in use.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime_hooks.policy_file import NumpyPolicy
from telemetry.observation import ObservationContext, Telemetry, build_observation


def psutil_battery() -> Any:
    import psutil

    return psutil.sensors_battery()


class BatteryMonitor:
    """Battery level in [0, 1] from a sensor when there is one, else the energy model.

    ``sensor`` returns an object with ``percent`` (psutil's ``sensors_battery``) or
    ``None``; it is read at most every ``sensor_period_s`` seconds (a sysfs read is
    slow next to a decision). If it fails or returns ``None`` after having worked, the
    monitor carries on from the last level it read, with the energy model.
    """

    def __init__(
        self,
        capacity_j: float,
        initial_level: float = 1.0,
        sensor: Callable[[], Any] | None = psutil_battery,
        sensor_period_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not capacity_j > 0:
            raise ValueError(f"battery capacity must be > 0 J, got {capacity_j}")
        if not 0.0 <= initial_level <= 1.0:
            raise ValueError(f"initial battery level must be in [0, 1], got {initial_level}")
        self.capacity_j = float(capacity_j)
        self._level = float(initial_level)
        self._sensor = sensor
        self._period = sensor_period_s
        self._clock = clock
        self._read_at = -math.inf
        self.sensor_lost = False
        self.source = "model"
        if sensor is not None and self._read_sensor() is not None:
            self.source = "sensor"

    def _read_sensor(self) -> float | None:
        try:
            reading = self._sensor()
            percent = None if reading is None else float(reading.percent)
        except Exception:  # psutil raises OSError/RuntimeError when sysfs goes away
            percent = None
        if percent is None or not 0.0 <= percent <= 100.0:
            return None
        self._level = percent / 100.0
        self._read_at = self._clock()
        return self._level

    def level(self) -> float:
        due = self.source == "sensor" and self._clock() - self._read_at >= self._period
        if due and self._read_sensor() is None:
            self.source, self.sensor_lost = "model", True
            warnings.warn(
                f"battery sensor stopped answering; continuing from {self._level:.1%} "
                "with the energy model",
                RuntimeWarning,
                stacklevel=2,
            )
        return self._level

    def charge(self, energy_j: float) -> None:
        """Energy the device spent; moves the level only when the model is in use."""
        if self.source == "model":
            self._level = max(0.0, self._level - energy_j / self.capacity_j)


class Controller:
    """Decides ``(cut, threshold, level)`` for each request from the device's telemetry.

    ``policy`` is anything with ``act(observation) -> action`` (an exported
    ``NumpyPolicy``, a heuristic from ``agents``). Times are seconds on ``clock``.
    """

    def __init__(
        self,
        policy,
        context: ObservationContext,
        battery: BatteryMonitor,
        rtt_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.context = context
        self.battery = battery
        self.clock = clock
        self.telemetry = Telemetry(rtt_est_s=rtt_s, battery_level=battery.level())
        self._nvec = (context.n_cuts, context.n_thresholds, context.n_levels)
        self._rtt_measured = False
        self.overridden: tuple[int, int, int] | None = None  # see ``decide``

    @classmethod
    def from_policy_file(
        cls,
        path: str | Path,
        radio: str,
        battery: BatteryMonitor,
        rtt_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> Controller:
        """A controller for an exported policy, with the deadline, action grid and
        radio parameters it was trained for (``radio``: a catalog radio name)."""
        policy = NumpyPolicy.load(path)
        m = policy.meta
        if radio not in m.radios:
            raise ValueError(f"{path}: radio {radio!r} unknown; known: {sorted(m.radios)}")
        tail_s, tail_w = m.radios[radio]
        context = ObservationContext(m.deadline_s, *m.nvec, tail_s, tail_w, m.keep_alive_s)
        return cls(policy, context, battery, rtt_s, clock)

    # -- telemetry -------------------------------------------------------------------
    def on_upload(self, done_s: float, nbytes: float, seconds: float) -> None:
        """An upload of ``nbytes`` finished at ``done_s`` after ``seconds`` on the wire."""
        self.telemetry.record_transfer(done_s, nbytes, seconds)

    def on_rtt(self, rtt_s: float) -> None:
        """A measured round trip. The first one replaces the nominal starting value
        (RFC 6298: SRTT = R on the first measurement); later ones are smoothed."""
        if self._rtt_measured:
            self.telemetry.record_rtt(rtt_s)
        else:
            self.telemetry.rtt_est_s = rtt_s
            self._rtt_measured = True

    def on_cloud_answer(self, done_s: float, radio_tail_end_s: float) -> None:
        self.telemetry.last_cloud_use_s = done_s
        self.telemetry.radio_tail_end_s = radio_tail_end_s

    def on_energy(self, energy_j: float) -> None:
        self.battery.charge(energy_j)

    # -- decisions -------------------------------------------------------------------
    def observe(self, lateness_s: float, queue_len: int, now_s: float | None = None):
        tel = self.telemetry
        tel.battery_level = self.battery.level()
        now = self.clock() if now_s is None else now_s
        return build_observation(tel, now, lateness_s, queue_len, self.context)

    def decide(
        self,
        lateness_s: float = 0.0,
        queue_len: int = 0,
        now_s: float | None = None,
        cloud_available: bool = True,
    ) -> tuple[int, int, int]:
        """The action for the request at hand; remembered as the last action.

        While the cloud is known to be unreachable (``cloud_available=False``) no
        cloud action is taken: when the policy asks for one, the decision becomes
        "answer on the device" (cut K, the policy's threshold), the policy's own action
        is kept in ``overridden``, and the device answers with the deepest exit that
        meets the deadline. As soon as the cloud is back, the policy decides again."""
        self.overridden = None
        obs = self.observe(lateness_s, queue_len, now_s)
        action = self.policy.act(obs)
        try:
            cut, thr, level = np.asarray(action, np.int64).reshape(3).tolist()
        except ValueError:
            raise ValueError(f"policy returned {action!r}, not (cut, threshold, level)") from None
        nc, nt, nl = self._nvec
        if not (0 <= cut < nc and 0 <= thr < nt and 0 <= level < nl):
            raise ValueError(
                f"policy {getattr(self.policy, 'name', self.policy)!r} returned "
                f"action {(cut, thr, level)}, outside the grid {self._nvec}"
            )
        if not cloud_available and cut < nc - 1:
            self.overridden = (cut, thr, level)
            cut, level = nc - 1, 0
        self.telemetry.last_action = (cut, thr, level)
        return cut, thr, level
