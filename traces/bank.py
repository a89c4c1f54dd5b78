"""Many traces queried at once: ``Trace``'s queries over numpy arrays, for a fleet.

``TraceBank`` stacks traces into padded arrays (one row per trace) so that a fleet's N
devices, each on its own trace, ask "when have these bytes crossed?" in one call.
Every query gives what ``Trace`` gives for the same arguments (the fleet's N = 1 test
holds the two to the same floats): periods wrap, outages (zero capacity) hold a
transfer until the link returns.
"""

from __future__ import annotations

import numpy as np

from traces.trace import Trace


class TraceBank:
    def __init__(self, traces: list[Trace] | tuple[Trace, ...]) -> None:
        if not traces:
            raise ValueError("TraceBank needs at least one trace")
        self.traces = tuple(traces)
        width = max(len(t._rates) for t in traces)
        n = len(traces)
        self.duration = np.array([t.duration_s for t in traces])
        self.total = np.array([t._cum[-1] for t in traces])
        self.rtt = np.array([t.rtt_s for t in traces])
        # Row r: segment starts (then +inf padding), cumulative bytes at each start (then
        # the total), rates (then 0). Rows are offset by a stride larger than any value
        # so one ``searchsorted`` over the flattened array finds each row's segment.
        starts = np.full((n, width + 1), np.inf)
        cum = np.empty((n, width + 1))
        rates = np.zeros((n, width))
        for r, t in enumerate(traces):
            m = len(t._rates)
            starts[r, : m + 1] = t._starts
            cum[r, : m + 1] = t._cum
            cum[r, m + 1 :] = t._cum[-1]
            rates[r, :m] = t._rates
        self.width = width
        self._starts = starts
        self._cum = cum
        self._rates = rates
        self._row = np.arange(n)
        span_t = float(self.duration.max()) * 4.0 + 1.0
        span_b = float(self.total.max()) * 4.0 + 1.0
        self._t_stride, self._b_stride = span_t, span_b
        finite = np.where(np.isfinite(starts), starts, self.duration[:, None] * 2.0 + 1.0)
        self._flat_starts = (finite + (self._row * span_t)[:, None]).ravel()
        self._flat_cum = (cum + (self._row * span_b)[:, None]).ravel()

    def __len__(self) -> int:
        return len(self.traces)

    # -- queries, row ``rows[j]`` for element ``j`` -----------------------------------------
    def _segment(self, rows: np.ndarray, tm: np.ndarray) -> np.ndarray:
        """Index of the segment holding time ``tm`` (within one period) in each row:
        ``bisect_right(starts, tm) - 1``."""
        key = tm + rows * self._t_stride
        return np.searchsorted(self._flat_starts, key, side="right") - rows * (self.width + 1) - 1

    def _bytes_at(self, rows: np.ndarray, tm: np.ndarray) -> np.ndarray:
        i = self._segment(rows, tm)
        return self._cum[rows, i] + (tm - self._starts[rows, i]) * self._rates[rows, i] / 8.0

    def rate_at(self, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Capacity (bit/s) at time ``t`` (wrapped)."""
        return self._rates[rows, self._segment(rows, np.mod(t, self.duration[rows]))]

    def bytes_between(self, rows: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
        d = self.duration[rows]
        p0, p1 = np.floor(t0 / d), np.floor(t1 / d)
        b0 = self._bytes_at(rows, t0 - p0 * d)
        b1 = self._bytes_at(rows, t1 - p1 * d)
        return (p1 - p0) * self.total[rows] + b1 - b0

    def finish_time(self, rows: np.ndarray, t: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Earliest time at which ``nbytes`` sent from ``t`` have crossed (``t`` where
        nothing is sent), as ``Trace.finish_time``."""
        d, total = self.duration[rows], self.total[rows]
        period = np.floor(t / d)
        target = self._bytes_at(rows, t - period * d) + nbytes
        wraps = np.floor(target / total)
        rem = target - wraps * total
        key = rem + rows * self._b_stride
        j = np.searchsorted(self._flat_cum, key, side="left") - rows * (self.width + 1)
        j = np.clip(j, 1, self.width)
        exact = self._cum[rows, j] == rem
        i = j - 1
        rate = self._rates[rows, i]
        safe = np.where(rate > 0, rate, 1.0)
        inside = self._starts[rows, i] + (rem - self._cum[rows, i]) * 8.0 / safe
        tm = np.where(exact, self._starts[rows, j], inside)
        out = (period + wraps) * d + np.where(rem <= 0.0, 0.0, tm)
        return np.where(nbytes > 0, out, t)
