"""A bandwidth trace: piecewise-constant link capacity over time, plus a round-trip time.

``finish_time(t, n)`` answers "starting at time t, when have n bytes crossed?" by
integrating the capacity from ``t``, wrapping around at the end of the trace
(``traces.queries``, the same functions the simulator's kernel compiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from settings.tables import InputError
from traces import queries

# The longest trace file accepted, in seconds (11.6 days; the longest real trace here
# is 6,654 s). Times, byte counts and the device's shaped link all count from a trace's
# start in float64; far longer spans (a timestamp gap of 1e9 s) would only stretch
# one held rate over an unmeasured stretch, and near 2**53 s lose whole seconds. (A
# trace made in Python may be longer: the planner's constant link lasts 1e12 s.)
MAX_TRACE_SPAN_S = 1_000_000.0


def span_problem(start_s: float, t_s: float, previous_s: float) -> str | None:
    """Why the sample at ``t_s`` makes a trace too long, or ``None``."""
    if t_s - start_s <= MAX_TRACE_SPAN_S:
        return None
    return (
        f"time {t_s:g} s is {t_s - start_s:.4g} s after the first sample (a gap of "
        f"{t_s - previous_s:.4g} s after the previous one); a trace may span at most "
        f"{MAX_TRACE_SPAN_S:,.0f} s (split the file where it was not measured)"
    )


class TraceError(InputError):
    """A trace file or array is malformed; the message names the file and line.
    ``reason``: the message without the trace's name, for a loader to put the file's
    path in its place."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason


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
        problem = self._problem()
        if problem is not None:
            raise TraceError(f"trace {self.name!r}: {problem}", problem)
        ends = list(self.starts_s[1:]) + [self.duration_s]
        cum, total = [], 0.0
        for s, e, r in zip(self.starts_s, ends, self.rates_bps, strict=True):
            cum.append(total)
            total += (e - s) * r / 8.0
        cum.append(total)
        if total * 8.0 / self.duration_s < 1.0:
            problem = "mean capacity below 1 bit/s; nothing useful can cross"
            raise TraceError(f"trace {self.name!r}: {problem}", problem)
        object.__setattr__(self, "_cum", cum)
        object.__setattr__(self, "_starts", list(self.starts_s) + [self.duration_s])
        object.__setattr__(self, "_rates", list(self.rates_bps))

    def _problem(self) -> str | None:
        """What is wrong with the segments, the rates or the RTT, or ``None``."""
        starts, rates = self.starts_s, self.rates_bps
        if len(starts) == 0 or len(starts) != len(rates):
            return "needs as many segment starts as rates (>0)"
        if starts[0] != 0.0:
            return f"first segment must start at 0, not {starts[0]}"
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)) or not (
            self.duration_s > starts[-1]
        ):
            return "segment starts must increase and end before duration"
        if any(not math.isfinite(r) or r < 0 for r in rates):
            return "rates must be finite and >= 0"
        if not any(r > 0 for r in rates):
            return "capacity is zero everywhere; nothing could ever cross"
        if not (math.isfinite(self.rtt_s) and self.rtt_s >= 0):
            return f"rtt must be finite and >= 0, got {self.rtt_s}"
        return None

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
    def n_segments(self) -> int:
        return len(self._rates)

    @property
    def mean_bps(self) -> float:
        return self.total_bytes * 8.0 / self.duration_s

    def rate_at(self, t: float) -> float:
        """Capacity (bit/s) at time ``t`` (wrapped)."""
        return queries.rate_at(self._starts, self._rates, self.n_segments, self.duration_s, t)

    def bytes_between(self, t0: float, t1: float) -> float:
        """Bytes that can cross between ``t0`` and ``t1`` (``t1 >= t0``), wrapping."""
        return queries.bytes_between(
            self._starts, self._cum, self._rates, self.n_segments, self.duration_s, t0, t1
        )

    def finish_time(self, t: float, nbytes: float) -> float:
        """Earliest time at which ``nbytes`` sent from time ``t`` have crossed
        (transmission only; add ``rtt_s`` for the answer to come back)."""
        return queries.finish_time(
            self._starts, self._cum, self._rates, self.n_segments, self.duration_s, t, nbytes
        )

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
