"""A serverless (FaaS) cloud's instances, compiled: what ``sim.cloud.SharedCloud``
does for FaaS, for a fleet's requests of one step in one call (numba).

Each instance keeps its busy intervals (sorted, disjoint) in a row of ``starts`` and
``ends``; ``count[i]`` of them are live, ``pruned[i]`` is when the newest forgotten one
ended. A request that reaches the cloud at ``t`` is throttled while ``concurrency``
instances are busy (retried every ``throttle_retry_s``), then takes the idle instance
that is still warm (used within ``keep_alive_s``) and was used most recently, else
starts a cold one. The rules, the scan limit and the order of the instances are
``SharedCloud``'s (``_Timeline``); the golden fleet episodes hold the two to the same
numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.compile import compiled
from traces import queries

(bisect_right,) = compiled(queries, ("bisect_right",))
GAP_SCAN = 64  # busy intervals after an arrival searched for a gap that fits it (sim.cloud)
FULL = -1  # ``serve_sorted``'s answer when an instance or the pool has no room left


@njit(cache=True, error_model="numpy")
def first_fit(starts, ends, n: int, t: float, duration: float) -> float:
    """The earliest start ``>= t`` of a free stretch of ``duration`` seconds."""
    i = bisect_right(ends, t, 0, n)
    begin = t
    stop = min(n, i + GAP_SCAN)
    while i < stop:
        if starts[i] >= begin + duration:
            return begin
        if ends[i] > begin:
            begin = ends[i]
        i += 1
    # A long backlog ahead (an overloaded cloud): behind all of it, as a FIFO would.
    return begin if i == n else max(begin, ends[n - 1])


@njit(cache=True, error_model="numpy")
def serve_sorted(
    starts,
    ends,
    count,
    pruned,
    pool,
    arrive,
    cut,
    order,
    alone,
    first,
    concurrency,
    retry_s,
    keep_alive_s,
    cold_start_s,
    queue,
    service,
    cold,
):
    """Serve requests ``order[first:]`` (indices into ``arrive``/``cut``, in order of
    arrival). ``pool[0]``: instances in use; ``pool[1]``: throttled requests so far.
    Returns the position in ``order`` it stopped at (``len(order)`` when done), or where
    an instance or the pool ran out of room (the caller grows them and goes on)."""
    for pos in range(first, len(order)):
        r = order[pos]
        t = arrive[r]
        busy_s = alone[cut[r]]
        begin = t
        m = pool[0]
        if concurrency > 0:
            while True:
                busy = 0
                for s in range(m):
                    k = bisect_right(starts[s], begin, 0, count[s]) - 1
                    if k >= 0 and ends[s, k] > begin:
                        busy += 1
                if busy < concurrency:
                    break
                begin += retry_s  # throttled (429), retried after a back-off
        best, best_last = -1, -np.inf
        for s in range(m):
            n = count[s]
            if first_fit(starts[s], ends[s], n, begin, busy_s) == begin:
                k = bisect_right(ends[s], begin, 0, n) - 1
                last = ends[s, k] if k >= 0 else pruned[s]
                if begin - last <= keep_alive_s and last > best_last:
                    best, best_last = s, last
        is_cold = best < 0
        if is_cold:
            if m == starts.shape[0]:
                return pos  # no room for another instance
            best = m
            count[best], pruned[best] = 0, -np.inf
        n = count[best]
        if n == starts.shape[1]:
            return pos  # no room for another interval
        if is_cold:
            pool[0] = m + 1
        if begin > t:
            pool[1] += 1  # throttled
        length = busy_s + (cold_start_s if is_cold else 0.0)
        k = n if n == 0 or begin >= starts[best, n - 1] else bisect_right(starts[best], begin, 0, n)
        for j in range(n, k, -1):
            starts[best, j], ends[best, j] = starts[best, j - 1], ends[best, j - 1]
        starts[best, k], ends[best, k] = begin, begin + length
        count[best] = n + 1
        queue[r], service[r], cold[r] = begin - t, length, is_cold
    return len(order)


@njit(cache=True, error_model="numpy")
def prune(starts, ends, count, pruned, pool, horizon: float, keep_alive_s: float) -> None:
    """Forget intervals that ended by ``horizon``, and instances idle since their
    keep-alive ran out (the others keep their order)."""
    kept = 0
    for s in range(pool[0]):
        n = count[s]
        gone = bisect_right(ends[s], horizon, 0, n)
        if gone:
            pruned[s] = ends[s, gone - 1]
            for j in range(gone, n):
                starts[s, j - gone], ends[s, j - gone] = starts[s, j], ends[s, j]
            n -= gone
        if n == 0 and pruned[s] < horizon - keep_alive_s:
            continue  # expired
        if kept != s:
            starts[kept, :n], ends[kept, :n] = starts[s, :n], ends[s, :n]
            pruned[kept] = pruned[s]
        count[kept] = n
        kept += 1
    pool[0] = kept


class FaasPool:
    """The instances of a FaaS cloud that a fleet shares (see the module docstring)."""

    def __init__(
        self,
        tail_s,
        concurrency: int,
        throttle_retry_s: float,
        keep_alive_s: float,
        cold_start_s: float,
        instances: int = 64,
        intervals: int = 16,
    ) -> None:
        self.alone = np.asarray(tail_s, dtype=np.float64)  # a request's time, per cut
        self.concurrency, self.retry_s = int(concurrency), float(throttle_retry_s)
        self.keep_alive_s, self.cold_start_s = float(keep_alive_s), float(cold_start_s)
        self._allocate(instances, intervals)

    def _allocate(self, instances: int, intervals: int) -> None:
        self.starts = np.zeros((instances, intervals))
        self.ends = np.zeros((instances, intervals))
        self.count = np.zeros(instances, dtype=np.int64)
        self.pruned = np.full(instances, -np.inf)
        self.pool = np.zeros(2, dtype=np.int64)  # instances in use, throttled requests

    def reset(self) -> None:
        self.count[:] = 0
        self.pool[:] = 0

    @property
    def throttled(self) -> int:
        return int(self.pool[1])

    @property
    def instances(self) -> int:
        return int(self.pool[0])

    def serve_many(self, arrive_s: np.ndarray, cut: np.ndarray):
        """``(queue_s, service_s, cold)`` of requests reaching the cloud at ``arrive_s``,
        taken in order of arrival (ties in the given order)."""
        n = len(arrive_s)
        queue, service = np.zeros(n), np.zeros(n)
        cold = np.zeros(n, dtype=np.bool_)
        arrive = np.ascontiguousarray(arrive_s, dtype=np.float64)
        cuts = np.ascontiguousarray(cut, dtype=np.int64)
        order = np.argsort(arrive, kind="stable")
        done = 0
        while True:
            done = serve_sorted(
                self.starts,
                self.ends,
                self.count,
                self.pruned,
                self.pool,
                arrive,
                cuts,
                order,
                self.alone,
                done,
                self.concurrency,
                self.retry_s,
                self.keep_alive_s,
                self.cold_start_s,
                queue,
                service,
                cold,
            )
            if done == n:
                return queue, service, cold
            self._grow()

    def _grow(self) -> None:
        """Twice the room (instances and intervals each), the state kept."""
        old = (self.starts, self.ends, self.count, self.pruned, self.pool)
        m, c = self.starts.shape
        self._allocate(m * 2, c * 2)
        self.starts[:m, :c], self.ends[:m, :c] = old[0], old[1]
        self.count[:m], self.pruned[:m], self.pool[:] = old[2], old[3], old[4]

    def prune(self, horizon: float) -> None:
        prune(
            self.starts, self.ends, self.count, self.pruned, self.pool, horizon, self.keep_alive_s
        )
