"""The cloud side: runs the model's tail from any cut for many devices at once.

    python -m runtime_hooks.server --port 9300 [--scenario S] [--host 127.0.0.1]
                                   [--device cpu|cuda] [--workers W] [--max-batch B]
                                   [--emulate-cloud]

The model is the scenario's (``model``, else the one its profile was measured on; the
built-in CNN by default), checked against the profile's model hash: a server never
runs a model its profile was not measured on. Shapes, codecs and classes come from
the profile.

asyncio TCP; one coroutine per connection reads frames (``runtime_hooks.protocol``),
checks each request against the model (cut, codec, dtype, shape, size), decodes the
tensor with ``profiles.codecs`` and queues it. One batcher takes whatever requests are
waiting (up to ``--max-batch``), groups them by cut and runs each group's tail in a
worker thread, so the event loop keeps serving sockets while the model computes;
``--workers W`` runs W such batchers, each with its own thread. ``--emulate-cloud``
pads each batch to the time the scenario's cloud takes for its size, as the fleet
simulator charges it (``sim.cloud``): two cores cannot be the serving tier
a fleet saturates, but they can keep time like it. A
bad request gets an error frame and the connection lives on; a broken header (the
stream can no longer be framed) gets an error frame and the connection is closed.
Timeouts: ``--idle-timeout`` between frames, ``--read-timeout`` within one.

``--delay-ms`` holds every answer back (a fault drill: a slow or overloaded server).

A request's length is checked against its cut's limit before a byte of its payload is
read; a tensor holding NaN or infinity gets an error frame, as does a tail whose logits
are not finite. SIGINT or SIGTERM shuts down cleanly: no new connections, idle ones
closed, requests in flight answered (or, after ``--grace`` seconds, error-framed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distributed.ray_cluster import check_address
from profiles import codecs
from profiles.multiexit import to_model_input
from runtime_hooks import protocol as P
from runtime_hooks.ray_serve import Replicas
from runtime_hooks.tail import TailRunner, load_runner
from settings.cli import (
    UsageError,
    check_options,
    non_negative,
    option,
    parse,
    port,
    positive,
    run_cli,
    summary_of,
    within,
)
from settings.tables import InputError

SHUTTING_DOWN = "server shutting down"
BACKENDS = ("inprocess", "ray")


@dataclass
class ServerStats:
    connections: int = 0
    requests: int = 0
    answers: int = 0
    errors: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


@dataclass
class _Job:
    route: int | tuple[int, int]  # a cut (the model's tail), or (cut, level): a bottleneck
    tensor: np.ndarray  # the model's input, an activation, or a bottleneck's latent
    future: asyncio.Future
    queued_at: float


class LocalBackend:
    """In-process dynamic batching: ``workers`` batchers share one queue; each takes
    whatever requests are waiting (up to ``max_batch``), groups them by route and runs
    each group's tail in its own worker thread, so the event loop keeps serving sockets
    while the model computes."""

    name = "in-process"

    def __init__(self, runner: TailRunner, max_batch: int = 32, workers: int = 1) -> None:
        self.runner = runner
        self.max_batch = max_batch
        self.workers = workers
        self.stats: ServerStats | None = None  # the gateway's, set by TailServer
        self._queue: asyncio.Queue[_Job] | None = None
        self._batchers: list[asyncio.Task] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tail")

    async def start(self) -> None:
        self.runner.warm_up()
        self._queue = asyncio.Queue()
        # One batcher per worker: the first idle one takes what is waiting.
        self._batchers = [asyncio.create_task(self._batcher()) for _ in range(self.workers)]

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            jobs = [await queue.get()]
            while len(jobs) < self.max_batch and not queue.empty():
                jobs.append(queue.get_nowait())
            self.stats.batches += 1
            self.stats.batch_sizes.append(len(jobs))
            by_route: dict = {}
            for job in jobs:
                by_route.setdefault(job.route, []).append(job)
            for route, group in by_route.items():
                batch = np.stack([j.tensor for j in group])
                started = time.perf_counter()
                try:
                    logits, compute_s = await loop.run_in_executor(
                        self._pool, self.runner.run, route, batch
                    )
                except Exception as exc:  # keep serving: fail this group only
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)
                    continue
                for j, row in zip(group, logits, strict=True):
                    if not j.future.done():
                        j.future.set_result((started - j.queued_at, compute_s, row))

    async def infer(self, route, tensor: np.ndarray) -> tuple[float, float, np.ndarray]:
        """``(seconds queued, seconds of its batch's compute, logits)``."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(route, tensor, future, time.perf_counter()))
        return await future

    async def shutdown(self) -> None:
        for task in self._batchers:
            task.cancel()
        for task in self._batchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pool.shutdown(wait=True, cancel_futures=True)


class TailServer:
    """The gateway: a multi-exit model's tail behind the frame protocol. It validates
    and decodes every request (``runner.profile`` says what each cut carries) and hands
    the tensor to ``backend`` (default: ``LocalBackend``), which runs the tail."""

    def __init__(
        self,
        runner: TailRunner,
        backend=None,
        *,
        max_batch: int = 32,
        workers: int = 1,
        idle_timeout_s: float = 60.0,
        read_timeout_s: float = 5.0,
        delay_s: float = 0.0,
    ) -> None:
        self.runner = runner
        self.backend = backend or LocalBackend(runner, max_batch, workers)
        self.idle_timeout_s = idle_timeout_s
        self.read_timeout_s = read_timeout_s
        self.delay_s = delay_s
        self.stats = ServerStats()
        self.backend.stats = self.stats
        profile = self.profile = runner.profile
        self.n_blocks = profile.n_blocks
        self.n_classes = profile.n_classes
        self.image_input = profile.input_kind == "image"
        self.input_shape = profile.input_shape
        self.codecs_by_cut = profile.codecs_by_cut
        # The allowlist: what a request at each cut may carry (a grey image may also
        # come as (H, W)); a learned bottleneck's request carries its latent.
        self.shapes = {cut: {tuple(profile.activation_shapes[cut])} for cut in range(self.n_blocks)}
        if self.image_input and self.input_shape[0] == 1:
            self.shapes[0].add(tuple(self.input_shape[1:]))
        self.bottlenecks = runner.bottlenecks
        self._closing = False
        self._connections: set[asyncio.Task] = set()
        self._busy: set[asyncio.Task] = set()  # connections with a request in flight

    # -- validation ------------------------------------------------------------------
    def check_request(self, h: P.FrameHeader) -> str:
        """The codec a request header implies; ``FrameError`` naming what is wrong."""
        if not 0 <= h.cut < self.n_blocks:
            raise P.FrameError(
                f"field 'cut' is {h.cut}, the server runs cuts 0..{self.n_blocks - 1}"
            )
        levels = len(self.codecs_by_cut[h.cut])
        if not 0 <= h.level < levels:
            raise P.FrameError(f"field 'level' is {h.level}, expected 0..{levels - 1}")
        codec = self.wire_codec(h.cut, h.level)
        if h.dtype != P.CODEC_DTYPES[codec]:
            raise P.FrameError(
                f"field 'dtype' is {h.dtype}, codec {codec} at cut {h.cut} carries "
                f"{P.CODEC_DTYPES[codec]}"
            )
        bottleneck = self.bottlenecks.get((h.cut, h.level))
        if bottleneck is not None:
            if h.shape != tuple(bottleneck.latent_shape):
                name = self.codecs_by_cut[h.cut][h.level]
                raise P.FrameError(f"field 'shape' is {h.shape}, the latent of {name} at cut "
                                   f"{h.cut} is {tuple(bottleneck.latent_shape)}")  # fmt: skip
        elif h.shape not in self.shapes[h.cut]:
            expected = " or ".join(
                str(s) for s in sorted(self.shapes[h.cut], key=len, reverse=True)
            )
            raise P.FrameError(f"field 'shape' is {h.shape}, cut {h.cut} has {expected}")
        limit = self.payload_limit(h)
        if h.payload_length > limit:
            raise P.FrameError(
                f"field 'payload_length' is {h.payload_length}, above {limit} for cut {h.cut}"
            )
        return codec

    def wire_codec(self, cut: int, level: int) -> str:
        """The codec a frame at ``(cut, level)`` carries: the level's own, or for a
        learned bottleneck its latent's (``latentN``)."""
        bottleneck = self.bottlenecks.get((cut, level))
        if bottleneck is not None:
            return f"latent{bottleneck.rate.bits}"
        return self.codecs_by_cut[cut][level]

    def payload_limit(self, h: P.FrameHeader) -> int:
        """The most bytes a frame with this header may carry: for a request, the codec
        header plus the fp32 tensor at its cut plus slack (an entropy coder can grow
        incompressible data a little); else the protocol's own caps."""
        if h.kind != P.REQUEST or not 0 <= h.cut < self.n_blocks:
            return P.MAX_PAYLOAD
        elements = max(int(np.prod(shape)) for shape in self.shapes[h.cut])
        return codecs.HEADER_SIZE + 4 * elements + 4096

    def decode(self, h: P.FrameHeader, codec: str, payload: bytes) -> np.ndarray:
        try:
            inner = codecs.read_header(payload)
            if inner.codec != codec or inner.shape != h.shape:
                raise P.FrameError(
                    f"payload is {inner.codec} {inner.shape}, the header says {codec} {h.shape}"
                )
            array = codecs.get(codec).decode(payload)
        except codecs.CodecError as exc:
            raise P.FrameError(f"payload: {exc}") from exc
        if h.cut == 0 and self.image_input and not codec.startswith("latent"):
            return to_model_input(array.reshape(self.input_shape))
        tensor = np.asarray(array, np.float32)
        if not np.isfinite(tensor).all():
            raise P.FrameError("payload: the tensor holds NaN or infinity")
        return tensor

    # -- connections -----------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        task = asyncio.current_task()
        self._connections.add(task)
        rid = None  # the request in flight on this connection
        greeted = False  # requests are answered after the device's hello
        try:
            while not self._closing:
                try:
                    raw = await asyncio.wait_for(
                        reader.readexactly(P.HEADER_SIZE), self.idle_timeout_s
                    )
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return  # peer gone, or idle too long
                self._busy.add(task)  # from here, shutdown waits for this request
                try:
                    h = P.parse_header(raw)
                    rid = h.request_id
                    limit = self.payload_limit(h)
                    if h.payload_length > limit:  # refused before a byte of it is read
                        raise P.FrameError(
                            f"field 'payload_length' is {h.payload_length}, above {limit} "
                            f"for cut {h.cut}"
                        )
                except P.FrameError as exc:
                    self.stats.errors += 1
                    writer.write(P.error_frame(rid or 0, f"bad header: {exc}"))
                    await writer.drain()
                    return  # the stream can no longer be framed
                try:
                    payload = await asyncio.wait_for(
                        reader.readexactly(h.payload_length), self.read_timeout_s
                    )
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except TimeoutError:
                    self.stats.errors += 1
                    writer.write(P.error_frame(h.request_id, "payload not received in time"))
                    await writer.drain()
                    return
                if h.kind == P.HELLO or (h.kind == P.REQUEST and not greeted):
                    reply, greeted = self.greet(h)
                    writer.write(reply)
                    await writer.drain()
                    if not greeted:
                        return  # another model, or no hello: nothing more to serve
                else:
                    writer.write(await self._respond(h, payload))
                    await writer.drain()
                rid = None
                self._busy.discard(task)
        except ConnectionError:
            return
        except asyncio.CancelledError:
            # Shutdown: an idle connection is simply closed; a request still in flight
            # after the grace period is told why it gets no answer.
            if rid is not None:
                with contextlib.suppress(Exception):
                    writer.write(P.error_frame(rid, SHUTTING_DOWN))
                    await asyncio.wait_for(writer.drain(), 1.0)
        finally:
            self._busy.discard(task)
            self._connections.discard(task)
            writer.close()

    async def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop serving: idle connections close now; requests in flight get their
        answers for up to ``grace_s`` seconds, then an error frame; the batcher stops."""
        self._closing = True
        for task in self._connections - self._busy:
            task.cancel()
        busy = set(self._busy)
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
        for task in set(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self.backend.shutdown()

    def greet(self, h: P.FrameHeader) -> tuple[bytes, bool]:
        """The answer to a hello (or to a request before one), and whether the
        connection may go on: only a hello naming the model this server serves."""
        own = self.profile.model_hash
        if h.kind != P.HELLO:
            self.stats.errors += 1
            refusal = "send a hello frame with the model's hash before any request (protocol 2)"
            return P.error_frame(h.request_id, refusal), False
        if P.model_of(h) != own:
            self.stats.errors += 1
            return P.error_frame(0, P.mismatch_message(own, P.model_of(h))), False
        return P.hello_frame(own), True

    async def _respond(self, h: P.FrameHeader, payload: bytes) -> bytes:
        if h.kind == P.PING:
            return P.ping_frame(h.request_id, P.PONG)
        if h.kind != P.REQUEST:
            self.stats.errors += 1
            return P.error_frame(
                h.request_id, f"a server accepts requests and pings, not {P.KINDS[h.kind]}"
            )
        self.stats.requests += 1
        try:
            codec = self.check_request(h)
            tensor = self.decode(h, codec, payload)
        except P.FrameError as exc:
            self.stats.errors += 1
            return P.error_frame(h.request_id, str(exc))
        try:
            route = (h.cut, h.level) if (h.cut, h.level) in self.bottlenecks else h.cut
            queue_s, compute_s, logits = await self.backend.infer(route, tensor)
        except Exception as exc:
            self.stats.errors += 1
            return P.error_frame(h.request_id, f"inference failed: {exc}")
        if not np.isfinite(logits).all():  # what the device's parse_answer would refuse
            self.stats.errors += 1
            return P.error_frame(h.request_id, "inference failed: the logits are not finite")
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.stats.answers += 1
        return P.answer_frame(h.request_id, queue_s, compute_s, logits)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.base_events.Server:
        """Bind the port (a port in use fails before the backend starts), start the
        backend, then accept connections."""
        tcp = await asyncio.start_server(
            self.handle, host, port, limit=P.MAX_PAYLOAD + P.HEADER_SIZE, start_serving=False
        )
        try:
            await self.backend.start()
        except BaseException:
            tcp.close()
            raise
        await tcp.start_serving()
        return tcp


def load_server(
    scenario=None, device: str = "cpu", weights=None, threads: int = 1,
    emulate_cloud: bool = False, max_batch: int = 32, backend=None, **kwargs,
) -> TailServer:  # fmt: skip
    """A server for a scenario (path, ``Scenario`` or ``None``: the built-in one): its
    model, checked against its profile (``runtime_hooks.tail.load_runner``), behind
    ``backend`` (default: in-process batching)."""
    runner = load_runner(scenario, device, weights, threads, emulate_cloud, max_batch)
    return TailServer(runner, backend, max_batch=max_batch, **kwargs)


def replica_range(text: str) -> str:
    Replicas.parse(text)  # raises ValueError naming what is wrong
    return text


# Upper limits of what one server can serve: a batch holds up to MAX_BATCH activations
# of one cut (4,096 Fashion-MNIST images at cut 0 are 12.8 MB of float32; a model with
# 224 x 224 x 3 inputs needs 2.5 GB), and each worker is a thread with its own batch.
MAX_BATCH = 4096
BATCH_LIMIT = "a batch's activations must fit in memory"
MAX_WORKERS = 256
WORKER_LIMIT = "each worker is a thread holding a batch"
MAX_THREADS = 1024


def torch_device(value: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``, refused up front when there is no such GPU."""
    kind, _, index = value.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise ValueError(f"must be cpu, cuda or cuda:N, got {value!r}")
    if kind == "cuda":
        import torch

        found = torch.cuda.device_count()
        if int(index or 0) >= found:
            raise ValueError(f"{value}: this machine has {found} CUDA device(s); use cpu")
    return value


@dataclass
class ServerArgs:
    """The server's command line."""

    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(9300, "TCP port; 0: any free port", check=port)
    scenario: Path | None = option(None, "scenario TOML whose model to serve (default: built-in)",
                                   type=Path)  # fmt: skip
    device: str = option("cpu", "cpu, or cuda (cuda:N) where there is a GPU", check=torch_device)
    weights: Path | None = option(None, "weights of the built-in CNN (default: shipped)",
                                  type=Path)  # fmt: skip
    threads: int = option(1, "torch threads", check=within(1, MAX_THREADS, "threads per worker"))
    max_batch: int = option(
        32, "most requests in one batch", check=within(1, MAX_BATCH, BATCH_LIMIT)
    )
    workers: int = option(
        1, "batches run at once (one thread each)", check=within(1, MAX_WORKERS, WORKER_LIMIT)
    )
    emulate_cloud: bool = option(
        False,
        "pad each batch to the scenario cloud's time for its size "
        "(runtime_hooks.measure_cloud / speedup + overhead)",
    )
    backend: str = option("inprocess", "where the tail runs: in this process, or on Ray Serve",
                          choices=BACKENDS)  # fmt: skip
    replicas: str | None = option(None, "ray: replicas, N or MIN:MAX (autoscaled; default 1)",
                                  type=str, check=replica_range)  # fmt: skip
    ray_address: str | None = option(None, "ray: the cluster, HOST:PORT or auto (default: "
                                     "start Ray here)", type=str, check=check_address)  # fmt: skip
    idle_timeout: float = option(60.0, "seconds between frames", check=positive)
    read_timeout: float = option(5.0, "seconds within a frame", check=positive)
    delay_ms: float = option(0.0, "fault drill: slow answers", check=non_negative)
    grace: float = option(5.0, "seconds requests in flight get at shutdown", check=non_negative)

    def __post_init__(self) -> None:
        check_options(self)
        if self.backend != "ray":
            for flag, value in (("--replicas", self.replicas), ("--ray-address", self.ray_address)):
                if value is not None:
                    raise UsageError(f"{flag}: only with --backend ray")
        elif self.workers != 1:
            raise UsageError("--workers: the in-process backend's; with --backend ray, "
                             "scale with --replicas")  # fmt: skip


def make_backend(args: ServerArgs, runner):
    """The in-process backend (``None``: the server builds it), or Ray Serve's."""
    if args.backend != "ray":
        return None
    from runtime_hooks.ray_serve import RayServeBackend, RunnerSpec

    scenario = None if args.scenario is None else str(args.scenario.resolve())
    weights = None if args.weights is None else str(args.weights.resolve())
    spec = RunnerSpec(scenario, args.device, weights, args.threads, args.emulate_cloud,
                      args.max_batch)  # fmt: skip
    return RayServeBackend(spec, Replicas.parse(args.replicas or "1"), args.ray_address)


async def serve(args: ServerArgs) -> None:
    runner = load_runner(args.scenario, args.device, args.weights, args.threads,
                         args.emulate_cloud, args.max_batch)  # fmt: skip
    server = TailServer(
        runner,
        make_backend(args, runner),
        max_batch=args.max_batch,
        workers=args.workers,
        idle_timeout_s=args.idle_timeout,
        read_timeout_s=args.read_timeout,
        delay_s=args.delay_ms / 1000.0,
    )
    try:
        tcp = await server.start(args.host, args.port)
    except OSError as exc:
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        raise InputError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    host, bound = tcp.sockets[0].getsockname()[:2]
    print(f"listening on {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    tcp.close()  # no new connections
    await server.shutdown(args.grace)
    s = server.stats
    print(
        f"served {s.answers} answers to {s.requests} requests over {s.connections} connections "
        f"({s.errors} errors, {round(s.batches)} batches, {server.backend.name} backend)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        asyncio.run(serve(parse(ServerArgs, argv, summary_of(__doc__))))
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
