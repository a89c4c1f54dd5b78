"""A cloud shared by a fleet: workers with a queue and dynamic batching (IaaS), or a
concurrency limit with per-instance keep-alive, cold starts and throttling (FaaS).

A single device has the cloud to itself (``OffloadEnv``: every request is served at
once, alone; a FaaS instance goes cold when the device's own keep-alive ran out). A
fleet's devices meet in one serving tier, and the time a request waits there is what
couples them. ``SharedCloud.serve`` takes requests in the order they reach the cloud
and returns, for each, its queueing time, its service time and whether it found a cold
instance.

**IaaS** (``workers`` W, ``max_batch`` B): as ``runtime_hooks.server --workers W
--max-batch B`` does, an idle worker takes a request at once; while every worker is
busy, requests wait and the first worker to free takes up to B of them in one batch
(each cut's group run in turn). A batch of ``b`` requests at cut ``c`` takes the real
server's measured host time (``profiles.measure_cloud``) divided by the cloud's
``speedup``, plus its ``overhead_s`` once per group. A request's answer time is fixed
when it joins a batch; a later request joining the same batch lengthens that worker's
busy time (so the next batch starts later) but not the answers already given, an error
of one sample's marginal cost in a batch (a few per cent of the batch: see
BENCHMARKS.md).

**FaaS** (``concurrency`` C, 0 for no limit): each instance serves one request at a
time. A request takes an idle instance that is still warm (used within the cloud's
``keep_alive_s``), else starts one (a cold start, ``cold_start_s``); when C instances
are busy it is throttled and retried every ``throttle_retry_s`` until one is idle
(AWS Lambda answers 429 beyond its concurrency limit; clients retry with backoff).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from settings.tables import check_fields, custom, integer, number


@dataclass(frozen=True)
class Capacity:
    """The serving tier's size: the scenario's ``[capacity]`` table.

    ``workers = 0`` and ``concurrency = 0`` (the default): no limit, which is what one
    device with the cloud to itself sees."""

    workers: int = integer(0, low=0, high=100_000, doc="IaaS workers; 0: no queue")
    max_batch: int = integer(8, low=1, high=4096, doc="IaaS: most requests in one batch")
    concurrency: int = integer(0, low=0, high=1_000_000, doc="FaaS instances; 0: no limit")
    throttle_retry_s: float = number(
        0.1, low=0.0, low_inclusive=False, high=3600.0,
        doc="FaaS: a throttled request retries after this",
    )  # fmt: skip
    batch_times: str = custom(
        lambda v, w: _batch_times_path(v, w), "builtin",
        doc="profiles.measure_cloud JSON (IaaS with workers); builtin: the shipped one",
    )  # fmt: skip

    def __post_init__(self) -> None:
        from envs.scenario import ScenarioError

        check_fields(self, "capacity", ScenarioError)

    @property
    def unlimited(self) -> bool:
        return self.workers == 0 and self.concurrency == 0


def _batch_times_path(value, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a path or 'builtin', got {value!r}")
    return value


class SharedCloud:
    """The state of one shared serving tier during an episode (simulated seconds)."""

    def __init__(self, system, capacity: Capacity, batch_seconds: np.ndarray | None = None):
        """``batch_seconds[cut, b]``: service seconds of a batch of ``b`` at ``cut``
        (``b = 0..max_batch``), already divided by the speedup and with the overhead
        added; needed for IaaS with workers. Without it, batch 1 is the system's
        ``cloud_tail_s`` and a batch of b takes b times as long."""
        self.capacity = capacity
        self.faas = system.is_faas
        self.cold_start_s = system.cloud.cold_start_s
        self.keep_alive_s = system.cloud.keep_alive_s
        if batch_seconds is None:
            b = np.arange(capacity.max_batch + 1)
            batch_seconds = np.outer(np.asarray(system.cloud_tail_s), b)
        self.batch_seconds = np.asarray(batch_seconds, dtype=float)
        self.reset()

    def reset(self) -> None:
        cap = self.capacity
        # IaaS: per worker, when it is next idle, and the batch it runs last (its start
        # and its members per cut), which requests may still join before it starts.
        self.worker_free = [0.0] * cap.workers
        self.batch_start = [-math.inf] * cap.workers
        self.batch_counts: list[dict[int, int]] = [{} for _ in range(cap.workers)]
        # FaaS: idle instances by when they last finished (a min-heap of -time, so the
        # most recently used comes first), busy ones by when they finish.
        self.idle: list[float] = []
        self.busy: list[float] = []
        self.busy_batches = 0  # statistics
        self.served = 0

    # -- one request -------------------------------------------------------------------
    def serve(self, arrive_s: float, cut: int) -> tuple[float, float, bool]:
        """``(queue_s, service_s, cold)`` of a request reaching the cloud at
        ``arrive_s``. Call in order of arrival (see the module's note on fleets)."""
        self.served += 1
        if self.faas:
            return self._serve_faas(arrive_s, cut)
        if self.capacity.workers == 0:
            return 0.0, float(self.batch_seconds[cut, 1]), False
        return self._serve_iaas(arrive_s, cut)

    def _batch_service(self, counts: dict[int, int]) -> float:
        return float(sum(self.batch_seconds[c, n] for c, n in counts.items()))

    def _serve_iaas(self, arrive_s: float, cut: int) -> tuple[float, float, bool]:
        free, start, counts = self.worker_free, self.batch_start, self.batch_counts
        w = min(range(len(free)), key=free.__getitem__)
        if free[w] <= arrive_s:  # an idle worker takes it at once, alone
            service = float(self.batch_seconds[cut, 1])
            free[w], start[w], counts[w] = arrive_s + service, arrive_s, {cut: 1}
            self.busy_batches += 1
            return 0.0, service, False
        # Every worker is busy. Join a batch that has not started yet and has room (the
        # earliest to start), else open one on the worker that frees first.
        cap = self.capacity.max_batch
        joinable = [v for v in range(len(free)) if start[v] > arrive_s
                    and sum(counts[v].values()) < cap]  # fmt: skip
        if joinable:
            v = min(joinable, key=start.__getitem__)
            c = counts[v]
            c[cut] = c.get(cut, 0) + 1
            service = self._batch_service(c)
            free[v] = start[v] + service
            return start[v] - arrive_s, service, False
        begin = free[w]
        service = float(self.batch_seconds[cut, 1])
        free[w], start[w], counts[w] = begin + service, begin, {cut: 1}
        self.busy_batches += 1
        return begin - arrive_s, service, False

    def _serve_faas(self, arrive_s: float, cut: int) -> tuple[float, float, bool]:
        idle, busy = self.idle, self.busy
        while busy and busy[0] <= arrive_s:  # instances that finished by now are idle
            heapq.heappush(idle, -heapq.heappop(busy))
        begin = arrive_s
        limit = self.capacity.concurrency
        if limit and not idle and len(busy) >= limit:
            # Throttled: retried every throttle_retry_s until an instance is idle.
            retry = self.capacity.throttle_retry_s
            first_free = heapq.heappop(busy)
            begin = arrive_s + math.ceil((first_free - arrive_s) / retry) * retry
            heapq.heappush(idle, -first_free)
            while busy and busy[0] <= begin:
                heapq.heappush(idle, -heapq.heappop(busy))
        cold = True
        while idle:  # the most recently used idle instance; expired ones are gone
            last = -heapq.heappop(idle)
            if begin - last <= self.keep_alive_s:
                cold = False
                break
        service = float(self.batch_seconds[cut, 1]) + (self.cold_start_s if cold else 0.0)
        heapq.heappush(busy, begin + service)
        return begin - arrive_s, service, cold

    # -- many requests -----------------------------------------------------------------
    def serve_many(self, arrive_s: np.ndarray, cut: np.ndarray):
        """``serve`` for requests in any order: taken in order of arrival (ties in the
        given order). Returns arrays ``(queue_s, service_s, cold)`` in the given order."""
        n = len(arrive_s)
        queue, service = np.zeros(n), np.zeros(n)
        cold = np.zeros(n, dtype=bool)
        for i in np.argsort(arrive_s, kind="stable").tolist():
            queue[i], service[i], cold[i] = self.serve(float(arrive_s[i]), int(cut[i]))
        return queue, service, cold
