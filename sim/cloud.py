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
server's measured host time (``runtime_hooks.measure_cloud``) divided by the cloud's
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

**A hybrid** (``workers`` VM workers, ``concurrency`` functions): ``serve_hybrid``
queues each request on the VM for its own busy seconds (no batching), then, where it
calls a function, on FaaS instances as above, arriving when its VM part ends.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

import numpy as np

from sim.capacity import Capacity

JOIN_SCAN = 8  # batches after an arrival that it may join (see ``SharedCloud``)
GAP_SCAN = 64  # busy intervals after an arrival searched for a gap that fits it


def batch_seconds(system, capacity: Capacity, max_batch: int | None = None) -> np.ndarray:
    """``[cut, b]`` seconds the cloud takes for a batch of ``b = 0..max_batch``: the
    real server's measured host times (``capacity.batch_times``, checked against the
    profile's model) divided by the cloud's ``speedup``, plus its ``overhead_s``. The
    simulator charges these and the real server's ``--emulate-cloud`` pads to them."""
    from profiles.cloud_batches import DEFAULT_OUT, load_batch_times
    from settings.tables import InputError

    system.require_single_cloud("a batch table (the server's --emulate-cloud, a fleet's queue)")
    path = DEFAULT_OUT if capacity.batch_times == "builtin" else capacity.batch_times
    try:
        times = load_batch_times(path, system.profile.model_hash, system.k)
    except InputError as exc:  # the file and the field that named it
        raise type(exc)(
            f"{system.scenario.source}: [capacity].batch_times: {exc} (a file written by "
            "python -m runtime_hooks.measure_cloud)"
        ) from None
    table = times.table(capacity.max_batch if max_batch is None else max_batch)
    table /= system.cloud.speedup
    table[:, 1:] += system.cloud.overhead_s
    return table


class _Timeline:
    """One server's (worker's or instance's) busy intervals, sorted and disjoint, with
    the requests each holds (per cut) and the end of the newest interval pruned away."""

    __slots__ = ("starts", "ends", "counts", "sizes", "pruned_end")

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.counts: list[dict[int, int]] = []
        self.sizes: list[int] = []  # requests in each interval
        self.pruned_end = -math.inf

    def first_fit(self, t: float, duration: float) -> float:
        """The earliest start ``>= t`` of a free stretch of ``duration`` seconds."""
        i = bisect_right(self.ends, t)
        begin = t
        starts, ends = self.starts, self.ends
        stop = min(len(starts), i + GAP_SCAN)
        while i < stop:
            if starts[i] >= begin + duration:
                return begin
            if ends[i] > begin:
                begin = ends[i]
            i += 1
        # A long backlog ahead (an overloaded cloud): behind all of it, as a FIFO queue
        # would serve it, rather than searching every gap in it.
        return begin if i == len(starts) else max(begin, ends[-1])

    def insert(self, begin: float, end: float, counts: dict[int, int]) -> int:
        starts = self.starts
        if not starts or begin >= starts[-1]:  # the usual case: after everything else
            starts.append(begin)
            self.ends.append(end)
            self.counts.append(counts)
            self.sizes.append(sum(counts.values()))
            return len(starts) - 1
        i = bisect_right(starts, begin)
        starts.insert(i, begin)
        self.ends.insert(i, end)
        self.counts.insert(i, counts)
        self.sizes.insert(i, sum(counts.values()))
        return i

    def prune(self, horizon: float) -> None:
        """Forget intervals that ended before ``horizon``."""
        n = bisect_right(self.ends, horizon)
        if n:
            self.pruned_end = self.ends[n - 1]
            del self.starts[:n], self.ends[:n], self.counts[:n], self.sizes[:n]


class SharedCloud:
    """The state of one shared serving tier during an episode (simulated seconds).

    Each server keeps a timeline of busy intervals rather than one "free at" time, so
    that requests may be offered out of time order, as a fleet's are: devices step
    together but their uploads end at different times (a 3G upload in an outage may
    reach the cloud seconds after the next step's WiFi uploads). A request that
    arrives at ``t`` takes the first free stretch at or after ``t``, as it would had
    it been offered in order, provided the work already placed after ``t`` keeps its
    place (it arrived "earlier" in the simulation); ``prune(horizon)`` forgets what
    no future request can reach."""

    def __init__(self, system, capacity: Capacity, batch_seconds: np.ndarray | None = None):
        """``batch_seconds[cut, b]``: service seconds of a batch of ``b`` at ``cut``
        (``b = 0..max_batch``), already divided by the speedup and with the overhead
        added; needed for IaaS with workers. Without it, batch 1 is the system's
        ``cloud_tail_s`` and a batch of b takes b times as long."""
        self.capacity = capacity
        self.faas = system.is_faas
        self.hybrid = getattr(system, "hybrid", None) is not None
        # A hybrid's are its functions' (``profiles.catalog``: what can go cold).
        self.cold_start_s = system.cloud.cold_start_s
        self.keep_alive_s = system.cloud.keep_alive_s
        if batch_seconds is None:
            b = np.arange(capacity.max_batch + 1)
            batch_seconds = np.outer(np.asarray(system.cloud_tail_s), b)
        self.batch_seconds = np.asarray(batch_seconds, dtype=float)
        self._table = self.batch_seconds.tolist()
        self._single = self.batch_seconds[:, 1].tolist()
        # FaaS instances come and go with the load: compiled (``sim.faas_pool``). A
        # hybrid's functions run from its split: their seconds per split.
        self._faas = None
        if self.faas or self.hybrid:
            from sim.faas_pool import FaasPool

            tail = system.hybrid.fn_tail_s if self.hybrid else self.batch_seconds[:, 1]
            self._faas = FaasPool(
                tail,
                capacity.concurrency,
                capacity.throttle_retry_s,
                self.keep_alive_s,
                self.cold_start_s,
            )
        self.reset()

    def reset(self) -> None:
        self.servers = [_Timeline() for _ in range(self.capacity.workers)]
        self.served = 0
        self._throttled = 0
        if self._faas is not None:
            self._faas.reset()

    @property
    def throttled(self) -> int:
        """Requests a FaaS cloud throttled (answered 429 and retried)."""
        return self._faas.throttled if self._faas is not None else self._throttled

    def prune(self, horizon: float) -> None:
        """No request will reach the cloud before ``horizon``: forget the past (and,
        for FaaS, instances whose keep-alive ran out by then)."""
        if self._faas is not None:
            self._faas.prune(horizon)
            if not self.hybrid:
                return
        for server in self.servers:
            server.prune(horizon)

    # -- one request -------------------------------------------------------------------
    def serve(self, arrive_s: float, cut: int) -> tuple[float, float, bool]:
        """``(queue_s, service_s, cold)`` of a request reaching the cloud at
        ``arrive_s`` (an iaas or faas cloud; a hybrid's: ``serve_hybrid``)."""
        self._one_kind()
        self.served += 1
        if self.faas:
            return self._serve_faas(arrive_s, cut)
        if self.capacity.workers == 0:
            return 0.0, self._single[cut], False
        return self._serve_iaas(arrive_s, cut)

    def _batch_service(self, counts: dict[int, int]) -> float:
        table = self._table
        return sum(table[c][n] for c, n in counts.items())

    def _serve_iaas(self, t: float, cut: int) -> tuple[float, float, bool]:
        alone = self._single[cut]
        for server in self.servers:  # the common case first: a worker with nothing ahead
            if not server.ends or server.ends[-1] <= t:
                server.insert(t, t + alone, {cut: 1})
                return 0.0, alone, False
        fits = [server.first_fit(t, alone) for server in self.servers]
        w = min(range(len(fits)), key=fits.__getitem__)
        begin = fits[w]
        if begin > t:
            # Every worker is busy at t: join a batch that has not started by t and has
            # room, the earliest such (it would have taken this request from the
            # queue), if the longer batch still ends before that worker's next one.
            cap = self.capacity.max_batch
            best = None
            for server in self.servers:
                starts, sizes, ends = server.starts, server.sizes, server.ends
                first = bisect_right(starts, t)
                stop = bisect_left(starts, begin, first)
                # The batches just after t, and the newest one before ``begin``: where a
                # batch can still have room (older ones were filled in time order).
                for i in (*range(first, min(first + JOIN_SCAN, stop)), stop - 1):
                    if i < first or (best is not None and starts[i] >= best[0]):
                        continue
                    nxt = starts[i + 1] if i + 1 < len(starts) else math.inf
                    # Room in the batch, and (a cheap test first) a gap after it.
                    if sizes[i] < cap and ends[i] < nxt:
                        grown = dict(server.counts[i])
                        grown[cut] = grown.get(cut, 0) + 1
                        service = self._batch_service(grown)
                        if starts[i] + service <= nxt:
                            best = (starts[i], server, i, grown, service)
            if best is not None:
                start, server, i, grown, service = best
                server.counts[i] = grown
                server.sizes[i] += 1
                server.ends[i] = start + service
                return start - t, service, False
        self.servers[w].insert(begin, begin + alone, {cut: 1})
        return begin - t, alone, False

    def _serve_faas(self, t: float, cut: int) -> tuple[float, float, bool]:
        queue, service, cold = self._faas.serve_many(np.array([t]), np.array([cut]))
        return float(queue[0]), float(service[0]), bool(cold[0])

    # -- many requests -----------------------------------------------------------------
    def serve_many(self, arrive_s: np.ndarray, cut: np.ndarray):
        """``serve`` for requests in any order: taken in order of arrival (ties in the
        given order). Returns arrays ``(queue_s, service_s, cold)`` in the given order
        (an iaas or faas cloud; a hybrid's: ``serve_hybrid``)."""
        self._one_kind()
        if self._faas is not None:
            self.served += len(arrive_s)
            return self._faas.serve_many(arrive_s, cut)
        n = len(arrive_s)
        queue, service = np.zeros(n), np.zeros(n)
        cold = np.zeros(n, dtype=bool)
        if self.capacity.workers == 0:  # no queue: every request served at once, alone
            service[:] = self.batch_seconds[np.asarray(cut), 1]
            self.served += n
            return queue, service, cold
        serve, times, cuts = self._serve_iaas, arrive_s.tolist(), np.asarray(cut).tolist()
        for i in np.argsort(arrive_s, kind="stable").tolist():
            queue[i], service[i], _ = serve(times[i], cuts[i])
        self.served += n
        return queue, service, cold

    def _one_kind(self) -> None:
        if self.hybrid:
            raise ValueError("a hybrid cloud serves a request's path: serve_hybrid")

    # -- a hybrid: the VM, then the functions ------------------------------------------
    def serve_hybrid(self, arrive_s, vm_s, calls, split):
        """A hybrid cloud's requests (``sim.kernel.hybrid_paths``), reaching the cloud at
        ``arrive_s`` in any order: each takes ``vm_s`` busy seconds on the VM (0: none),
        then, where ``calls``, a function from block ``split`` on, arriving when its VM
        part ends. Returns arrays ``(queue_s, service_s, cold)`` in the given order:
        the VM's queue plus the function's (throttling), the VM's seconds plus the
        function's (with its cold start), and whether the function was cold.

        The VM has ``capacity.workers`` workers (0: no queue, every request served at
        once) and serves each request alone for its own ``vm_s``: no batching (the
        requests at a worker run different blocks, to their own exits; the measured
        batch table is the whole tail's). Each worker is a ``_Timeline``: a request
        takes the first free stretch of ``vm_s`` at or after its arrival on the worker
        where it starts earliest, in order of arrival (ties in the given order). The
        functions are a ``FaasPool`` on their seconds per split (``capacity.concurrency``,
        ``throttle_retry_s``, the functions' keep-alive and cold start)."""
        arrive = np.asarray(arrive_s, dtype=float)
        vm = np.asarray(vm_s, dtype=float)
        n = len(arrive)
        queue = np.zeros(n)
        cold = np.zeros(n, dtype=bool)
        if self.capacity.workers and n:
            times, busy = arrive.tolist(), vm.tolist()
            servers = self.servers
            for i in np.argsort(arrive, kind="stable").tolist():
                t, duration = times[i], busy[i]
                if duration <= 0.0:  # the whole tail on the functions: no VM part
                    continue
                fits = [server.first_fit(t, duration) for server in servers]
                w = min(range(len(fits)), key=fits.__getitem__)
                servers[w].insert(fits[w], fits[w] + duration, {0: 1})
                queue[i] = fits[w] - t
        service = vm.copy()
        called = np.flatnonzero(np.asarray(calls, dtype=bool))
        if called.size:
            fn_queue, fn_service, fn_cold = self._faas.serve_many(
                arrive[called] + queue[called] + vm[called],
                np.asarray(split, dtype=np.int64)[called],
            )
            queue[called] += fn_queue
            service[called] += fn_service
            cold[called] = fn_cold
        self.served += n
        return queue, service, cold
