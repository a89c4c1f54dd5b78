"""A bandwidth trace: piecewise-constant link capacity over time, plus a round-trip time.

``finish_time(t, n)`` answers "starting at time t, when have n bytes crossed?" by
integrating the capacity from ``t``, wrapping around at the end of the trace. Scalar
queries use ``bisect`` over Python lists: a step of the simulator calls them a few
times, and numpy's per-call overhead would dominate at that size.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import numpy as np

from settings.tables import InputError


class TraceError(InputError):
    """A trace file or array is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Trace:
    """Capacity ``rates_bps[i]`` holds on ``[starts_s[i], starts_s[i+1])``; the last
    segment ends at ``duration_s``. Times start at 0."""

    name: str
    family: str
    starts_s: tuple[float, ...]
    rates_bps: tuple[float, ...]
    duration_s: float
    rtt_s: float = 0.0
    _cum: list[float] = field(init=False, repr=False, compare=False)  # bytes at each start

    def __post_init__(self) -> None:
        starts, rates = self.starts_s, self.rates_bps
        where = f"trace {self.name!r}"
        if len(starts) == 0 or len(starts) != len(rates):
            raise TraceError(f"{where}: needs as many segment starts as rates (>0)")
        if starts[0] != 0.0:
            raise TraceError(f"{where}: first segment must start at 0, not {starts[0]}")
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)) or not (
            self.duration_s > starts[-1]
        ):
            raise TraceError(f"{where}: segment starts must increase and end before duration")
        if any(not math.isfinite(r) or r < 0 for r in rates):
            raise TraceError(f"{where}: rates must be finite and >= 0")
        if not any(r > 0 for r in rates):
            raise TraceError(f"{where}: capacity is zero everywhere; nothing could ever cross")
        if not (math.isfinite(self.rtt_s) and self.rtt_s >= 0):
            raise TraceError(f"{where}: rtt must be finite and >= 0, got {self.rtt_s}")
        ends = list(starts[1:]) + [self.duration_s]
        cum, total = [], 0.0
        for s, e, r in zip(starts, ends, rates, strict=True):
            cum.append(total)
            total += (e - s) * r / 8.0
        cum.append(total)
        if total * 8.0 / self.duration_s < 1.0:
            raise TraceError(f"{where}: mean capacity below 1 bit/s; nothing useful can cross")
        object.__setattr__(self, "_cum", cum)
        object.__setattr__(self, "_starts", list(starts) + [self.duration_s])
        object.__setattr__(self, "_rates", list(rates))

    @classmethod
    def from_samples(
        cls, name: str, family: str, times_s, rates_bps, *, rtt_s: float = 0.0
    ) -> Trace:
        """Samples at ``times_s`` (increasing); each rate holds until the next sample,
        the last one for the median sampling interval."""
        t = np.asarray(times_s, dtype=float)
        r = np.asarray(rates_bps, dtype=float)
        if len(t) == 0:
            raise TraceError(f"trace {name!r}: no samples")
        gaps = np.diff(t)
        last = float(np.median(gaps)) if len(gaps) else 1.0
        t = t - t[0]
        return cls(name, family, tuple(t.tolist()), tuple(r.tolist()), float(t[-1] + last), rtt_s)

    # -- queries -----------------------------------------------------------------
    @property
    def total_bytes(self) -> float:
        """Bytes that cross in one pass of the trace."""
        return self._cum[-1]

    @property
    def mean_bps(self) -> float:
        return self.total_bytes * 8.0 / self.duration_s

    def rate_at(self, t: float) -> float:
        """Capacity (bit/s) at time ``t`` (wrapped)."""
        return self._rates[bisect_right(self._starts, t % self.duration_s) - 1]

    def _bytes_at(self, tm: float) -> float:
        """Bytes crossed from 0 to ``tm`` within one period."""
        i = bisect_right(self._starts, tm) - 1
        return self._cum[i] + (tm - self._starts[i]) * self._rates[i] / 8.0

    def bytes_between(self, t0: float, t1: float) -> float:
        """Bytes that can cross between ``t0`` and ``t1`` (``t1 >= t0``), wrapping."""
        d = self.duration_s
        p0, p1 = math.floor(t0 / d), math.floor(t1 / d)
        b0 = self._bytes_at(t0 - p0 * d)
        b1 = self._bytes_at(t1 - p1 * d)
        return (p1 - p0) * self.total_bytes + b1 - b0

    def finish_time(self, t: float, nbytes: float) -> float:
        """Earliest time at which ``nbytes`` sent from time ``t`` have crossed
        (transmission only; add ``rtt_s`` for the answer to come back)."""
        if nbytes <= 0:
            return t
        d, total = self.duration_s, self._cum[-1]
        period = math.floor(t / d)
        target = self._bytes_at(t - period * d) + nbytes
        wraps = math.floor(target / total)
        rem = target - wraps * total
        if rem <= 0.0:  # lands exactly on a period boundary
            return (period + wraps) * d
        j = bisect_left(self._cum, rem)
        if self._cum[j] == rem:
            tm = self._starts[j]
        else:
            i = j - 1
            tm = self._starts[i] + (rem - self._cum[i]) * 8.0 / self._rates[i]
        return (period + wraps) * d + tm

    def transfer_time(self, t: float, nbytes: float) -> float:
        return self.finish_time(t, nbytes) - t

    def scaled(self, ratio: float, cap_bps: float = math.inf, rtt_s: float | None = None) -> Trace:
        """The uplink seen by a radio: capacity times ``ratio``, capped at ``cap_bps``."""
        rates = tuple(min(r * ratio, cap_bps) for r in self.rates_bps)
        rtt = self.rtt_s if rtt_s is None else rtt_s
        return Trace(self.name, self.family, self.starts_s, rates, self.duration_s, rtt)

    def window_mean_bps(self, t: float, horizon_s: float) -> float:
        """Mean capacity over ``[t, t + horizon_s)``: what a clairvoyant would know."""
        return self.bytes_between(t, t + horizon_s) * 8.0 / horizon_s
