"""The cloud tail on Ray Serve: the server's gateway forwards decoded requests to a
deployment that batches them dynamically and scales its replicas.

    python -m runtime_hooks.server --backend ray [--replicas MIN:MAX] [--ray-address A]

The gateway stays ``runtime_hooks.server``: it speaks the frame protocol, validates and
decodes every request (nothing a device sent is unpickled, nothing unchecked goes on)
and awaits the deployment's answer. Each replica builds the same ``TailRunner`` as the
gateway (``runtime_hooks.tail.load_runner``: the scenario's model, checked against its
profile) and answers with ``@serve.batch``: the requests waiting when a batch starts,
up to ``--max-batch``, grouped by route, the tail run in a worker thread. The gateway
sends whatever requests are waiting as one call (Ray's per-call cost, which dominates
a small model's tail, is then paid once per batch under load). With
``MIN < MAX`` Serve's autoscaler adds replicas while more than two calls are in flight
per replica and removes them when idle. Tensors travel between the gateway
and the replicas on Ray's object transport, inside the cluster.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass

import numpy as np

from distributed.ray_cluster import ClusterError, connect

APP = "splitctl-tail"


@dataclass(frozen=True)
class Replicas:
    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> Replicas:
        """``N`` or ``MIN:MAX`` (1 <= MIN <= MAX <= 64)."""
        match = re.fullmatch(r"(\d+)(?::(\d+))?", text.strip())
        if not match:
            raise ValueError(f"expected N or MIN:MAX, got {text!r}")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 1 <= low <= high <= 64:
            raise ValueError(f"need 1 <= MIN <= MAX <= 64, got {text!r}")
        return cls(low, high)


@dataclass(frozen=True)
class RunnerSpec:
    """What a replica needs to build the gateway's ``TailRunner``."""

    scenario: str | None
    device: str = "cpu"
    weights: str | None = None
    threads: int = 1
    emulate_cloud: bool = False
    max_batch: int = 32


class TailReplica:
    """One replica: a ``TailRunner`` behind ``@serve.batch`` (bound by ``deploy``)."""

    def __init__(self, spec: dict) -> None:
        from runtime_hooks.tail import load_runner

        self.runner = load_runner(**spec)
        self.runner.warm_up()

    async def run_batch(self, calls: list[list[tuple]]) -> list[list[tuple]]:
        """Each call is a gateway's list of ``(route, tensor)`` requests; every request
        of every call is answered ``(logits, compute seconds, batch size)``, the
        requests of all calls grouped by route into one batch each; a batch that fails
        answers its requests with its exception."""
        by_route: dict = {}
        for c, requests in enumerate(calls):
            for i, (route, tensor) in enumerate(requests):
                by_route.setdefault(route, []).append((c, i, tensor))
        answers: list[list] = [[None] * len(requests) for requests in calls]
        for route, group in by_route.items():
            batch = np.stack([tensor for _, _, tensor in group])
            try:
                logits, seconds = await asyncio.to_thread(self.runner.run, route, batch)
            except Exception as exc:  # as in-process: this route's requests fail, not all
                for c, i, _ in group:
                    answers[c][i] = exc
                continue
            for (c, i, _), row in zip(group, logits, strict=True):
                answers[c][i] = (row, seconds, len(group))
        return answers


def deploy(spec: RunnerSpec, replicas: Replicas):
    """Run the deployment and return its handle (Ray must be up). Refuses a minimum
    of replicas the cluster has no CPUs for (Serve would wait for them forever)."""
    import ray
    from ray import serve

    cpus = ray.cluster_resources().get("CPU", 0)
    if replicas.low * spec.threads > cpus:
        raise ClusterError(
            f"--replicas {replicas.low}: {replicas.low} replicas of {spec.threads} CPU "
            f"(--threads) each need {replicas.low * spec.threads} CPUs, the Ray cluster has "
            f"{cpus:g}"
        )

    class Replica(TailReplica):
        # A batch holds up to max_batch requests, however many calls bring them.
        @serve.batch(max_batch_size=spec.max_batch, batch_wait_timeout_s=0.0,
                     batch_size_fn=lambda calls: sum(len(c) for c in calls))  # fmt: skip
        async def __call__(self, calls: list[list[tuple]]) -> list[list[tuple]]:
            return await self.run_batch(calls)

    options = {
        "name": "tail",
        "ray_actor_options": {"num_cpus": spec.threads},
        # Room for a batch being computed and the next one gathering.
        "max_ongoing_requests": 2 * spec.max_batch,
    }
    if replicas.low == replicas.high:
        options["num_replicas"] = replicas.low
    else:
        options["autoscaling_config"] = {
            "min_replicas": replicas.low,
            "max_replicas": replicas.high,
            "target_ongoing_requests": 2,  # calls (each a batch) in flight per replica
        }
    app = serve.deployment(Replica).options(**options).bind(asdict(spec))
    serve.start(proxy_location="Disabled")
    return serve.run(app, name=APP, route_prefix=None)


@dataclass
class _Waiting:
    route: object
    tensor: np.ndarray
    future: asyncio.Future
    queued_at: float


class RayServeBackend:
    """The server's backend on Ray Serve: ``start`` joins (or starts) Ray and runs the
    deployment; ``infer`` queues a request, and a dispatcher sends whatever is waiting
    (up to ``max_batch``) as one call, with up to two calls in flight per replica, so
    Ray's per-call cost is paid once per batch under load and a lone request goes at
    once; ``shutdown`` removes the deployment."""

    name = "ray-serve"

    def __init__(self, spec: RunnerSpec, replicas: Replicas, address: str | None = None) -> None:
        self.spec = spec
        self.replicas = replicas
        self.address = address
        self.stats = None  # the gateway's, set by TailServer
        self.handle = None
        self._queue: asyncio.Queue[_Waiting] | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        # Ray's start-up blocks for seconds; it runs before the port opens.
        await asyncio.to_thread(connect, self.address, "--ray-address")
        try:
            self.handle = await asyncio.to_thread(deploy, self.spec, self.replicas)
        except BaseException:
            if self.address is None:  # Ray was started for this server
                import ray

                ray.shutdown()
            raise
        self._queue = asyncio.Queue()
        self._tasks.add(asyncio.create_task(self._dispatch()))

    async def _dispatch(self) -> None:
        queue = self._queue
        # At most two calls in flight per replica: while they run, requests gather into
        # the next call instead of each paying Ray's per-call cost.
        slots = asyncio.Semaphore(2 * self.replicas.high)
        while True:
            jobs = [await queue.get()]
            await slots.acquire()
            while len(jobs) < self.spec.max_batch and not queue.empty():
                jobs.append(queue.get_nowait())
            call = asyncio.create_task(self._call(jobs, slots))
            self._tasks.add(call)
            call.add_done_callback(self._tasks.discard)

    async def _call(self, jobs: list[_Waiting], slots: asyncio.Semaphore) -> None:
        try:
            answers = await self.handle.remote([(j.route, j.tensor) for j in jobs])
        except Exception as exc:  # this call's requests fail; the server goes on
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(exc)
            return
        finally:
            slots.release()
        now = time.perf_counter()
        for j, answer in zip(jobs, answers, strict=True):
            if j.future.done():
                continue
            if isinstance(answer, Exception):  # its route's batch failed in the replica
                j.future.set_exception(answer)
                continue
            logits, compute_s, size = answer
            self.stats.batch_sizes.append(size)
            self.stats.batches += 1.0 / size  # each request is its batch's 1/size
            j.future.set_result((max(0.0, now - j.queued_at - compute_s), compute_s, logits))

    async def infer(self, route, tensor: np.ndarray) -> tuple[float, float, np.ndarray]:
        """``(seconds beyond its batch's compute: queueing and Ray's transport, the
        batch's compute seconds, logits)``."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(route, tensor, future, time.perf_counter()))
        return await future

    async def shutdown(self) -> None:
        import ray
        from ray import serve

        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

        def stop() -> None:
            serve.delete(APP)
            if self.address is None:  # Ray was started for this server
                serve.shutdown()
                ray.shutdown()

        await asyncio.to_thread(stop)
