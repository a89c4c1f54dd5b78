"""The cloud tail on Ray Serve: the server's gateway forwards decoded requests to a
deployment that batches them dynamically and scales its replicas.

    python -m runtime_hooks.server --backend ray [--replicas MIN:MAX] [--ray-address A]

The gateway stays ``runtime_hooks.server``: it speaks the frame protocol, validates and
decodes every request (nothing a device sent is unpickled, nothing unchecked goes on)
and awaits the deployment's answer. Each replica builds the same ``TailRunner`` as the
gateway (``runtime_hooks.tail.load_runner``: the scenario's model, checked against its
profile) and answers with ``@serve.batch``: the requests waiting when a batch starts,
up to ``--max-batch``, grouped by route, the tail run in a worker thread. With
``MIN < MAX`` Serve's autoscaler adds replicas while more than a batch of requests is
in flight per replica and removes them when idle. Tensors travel between the gateway
and the replicas on Ray's object transport, inside the cluster.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass

import numpy as np

from distributed.ray_cluster import connect

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

    async def run_batch(self, requests: list[tuple]) -> list[tuple]:
        """``(route, tensor)`` requests -> ``(logits, compute seconds, batch size)``."""
        by_route: dict = {}
        for i, (route, tensor) in enumerate(requests):
            by_route.setdefault(route, []).append((i, tensor))
        answers: list = [None] * len(requests)
        for route, group in by_route.items():
            batch = np.stack([tensor for _, tensor in group])
            logits, seconds = await asyncio.to_thread(self.runner.run, route, batch)
            for (i, _), row in zip(group, logits, strict=True):
                answers[i] = (row, seconds, len(group))
        return answers


def deploy(spec: RunnerSpec, replicas: Replicas):
    """Run the deployment and return its handle (Ray must be up)."""
    from ray import serve

    class Replica(TailReplica):
        @serve.batch(max_batch_size=spec.max_batch, batch_wait_timeout_s=0.0)
        async def __call__(self, requests: list[tuple]) -> list[tuple]:
            return await self.run_batch(requests)

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
            "target_ongoing_requests": spec.max_batch,
        }
    app = serve.deployment(Replica).options(**options).bind(asdict(spec))
    serve.start(proxy_location="Disabled")
    return serve.run(app, name=APP, route_prefix=None)


class RayServeBackend:
    """The server's backend on Ray Serve: ``start`` joins (or starts) Ray and runs the
    deployment, ``infer`` awaits a replica's answer, ``shutdown`` removes it."""

    name = "ray-serve"

    def __init__(self, spec: RunnerSpec, replicas: Replicas, address: str | None = None) -> None:
        self.spec = spec
        self.replicas = replicas
        self.address = address
        self.stats = None  # the gateway's, set by TailServer
        self.handle = None

    async def start(self) -> None:
        # Ray's start-up blocks for seconds; it runs before the port opens.
        await asyncio.to_thread(connect, self.address, "--ray-address")
        self.handle = await asyncio.to_thread(deploy, self.spec, self.replicas)

    async def infer(self, route, tensor: np.ndarray) -> tuple[float, float, np.ndarray]:
        """``(seconds beyond the replica's compute, its batch's compute seconds,
        logits)``: the first is queueing and Ray's transport."""
        t0 = time.perf_counter()
        logits, compute_s, size = await self.handle.remote((route, tensor))
        self.stats.batch_sizes.append(size)
        self.stats.batches += 1.0 / size  # each request is its batch's 1/size
        return max(0.0, time.perf_counter() - t0 - compute_s), compute_s, logits

    async def shutdown(self) -> None:
        import ray
        from ray import serve

        def stop() -> None:
            serve.delete(APP)
            if self.address is None:  # Ray was started for this server
                serve.shutdown()
                ray.shutdown()

        await asyncio.to_thread(stop)
