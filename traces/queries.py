"""A trace's queries as functions of its arrays, written once for Python and numba.

A trace is three sequences: ``starts`` (segment starts, then the duration: m + 1
values, optionally padded with +inf), ``cum`` (bytes crossed by each start: m + 1
values, optionally padded with the total) and ``rates`` (bit/s of each segment: m
values, optionally padded with 0). ``Trace`` calls these functions on its lists;
``sim.kernel`` compiles the same functions with numba and calls them on a row of the
trace bank's arrays, so the simulator's environments and every Python caller
integrate a trace with one piece of code. Only what numba compiles is used here: no
objects, a binary search of our own instead of ``bisect``.
"""

from __future__ import annotations

import math


def bisect_right(a, x: float, lo: int, hi: int) -> int:
    """The index after the last element of ``a[lo:hi]`` (sorted) at or below ``x``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def bisect_left(a, x: float, lo: int, hi: int) -> int:
    """The index of the first element of ``a[lo:hi]`` (sorted) at or above ``x``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def bytes_at(starts, cum, rates, n_segments: int, tm: float) -> float:
    """Bytes crossed from 0 to ``tm`` within one period (``0 <= tm < duration``)."""
    i = bisect_right(starts, tm, 0, n_segments + 1) - 1
    return cum[i] + (tm - starts[i]) * rates[i] / 8.0


def rate_at(starts, rates, n_segments: int, duration: float, t: float) -> float:
    """Capacity (bit/s) at time ``t`` (wrapped)."""
    return rates[bisect_right(starts, t % duration, 0, n_segments + 1) - 1]


def bytes_between(starts, cum, rates, n_segments: int, duration: float, t0: float, t1: float):
    """Bytes that can cross between ``t0`` and ``t1`` (``t1 >= t0``), wrapping."""
    p0, p1 = math.floor(t0 / duration), math.floor(t1 / duration)
    b0 = bytes_at(starts, cum, rates, n_segments, t0 - p0 * duration)
    b1 = bytes_at(starts, cum, rates, n_segments, t1 - p1 * duration)
    return (p1 - p0) * cum[n_segments] + b1 - b0


def finish_time(starts, cum, rates, n_segments: int, duration: float, t: float, nbytes: float):
    """Earliest time at which ``nbytes`` sent from time ``t`` have crossed
    (transmission only), integrating the capacity from ``t`` and wrapping at the end of
    the trace; outages (zero capacity) hold the transfer until the link returns."""
    if nbytes <= 0:
        return t
    total = cum[n_segments]
    period = math.floor(t / duration)
    target = bytes_at(starts, cum, rates, n_segments, t - period * duration) + nbytes
    wraps = math.floor(target / total)
    rem = target - wraps * total
    if rem <= 0.0:  # lands exactly on a period boundary
        return (period + wraps) * duration
    j = bisect_left(cum, rem, 0, n_segments + 1)
    if cum[j] == rem:
        tm = starts[j]
    else:
        i = j - 1
        tm = starts[i] + (rem - cum[i]) * 8.0 / rates[i]
    return (period + wraps) * duration + tm
