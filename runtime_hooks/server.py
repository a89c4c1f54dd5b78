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
simulator charges it (``envs.cloud_capacity``): two cores cannot be the serving tier
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

from profiles import codecs
from profiles.multiexit import tail, to_model_input
from runtime_hooks import protocol as P
from settings.cli import (
    at_least,
    check_options,
    non_negative,
    option,
    parse,
    port,
    positive,
    run_cli,
)
from settings.tables import InputError

SHUTTING_DOWN = "server shutting down"


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


class TailServer:
    """The tail of a multi-exit model (``profiles.multiexit``) behind the frame
    protocol; ``profile`` (default: the built-in one) says what each cut carries."""

    def __init__(
        self,
        model,
        profile=None,
        *,
        bottlenecks: dict | None = None,
        device: str = "cpu",
        max_batch: int = 32,
        workers: int = 1,
        batch_seconds: np.ndarray | None = None,
        idle_timeout_s: float = 60.0,
        read_timeout_s: float = 5.0,
        delay_s: float = 0.0,
    ) -> None:
        import torch

        self.torch = torch
        self.model = model.to(device).eval()
        self.device = device
        self.max_batch = max_batch
        self.workers = workers
        # Cloud emulation: each batch padded to these seconds ([cut, batch size]).
        self.batch_seconds = None if batch_seconds is None else np.asarray(batch_seconds)
        self.idle_timeout_s = idle_timeout_s
        self.read_timeout_s = read_timeout_s
        self.delay_s = delay_s
        self.stats = ServerStats()
        if profile is None:
            from profiles.profile_io import load_profile

            profile = load_profile()
        self.profile = profile
        self.n_blocks = profile.n_blocks
        self.n_classes = profile.n_classes
        self.image_input = profile.input_kind == "image"
        self.input_shape = profile.input_shape
        self.codecs_by_cut = profile.codecs_by_cut
        # The allowlist: what a request at each cut may carry (a grey image may also
        # come as (H, W)).
        self.shapes = {cut: {tuple(profile.activation_shapes[cut])} for cut in range(self.n_blocks)}
        if self.image_input and self.input_shape[0] == 1:
            self.shapes[0].add(tuple(self.input_shape[1:]))
        # Learned bottlenecks (``profiles.bottleneck``): their decoder and fine-tuned tail,
        # by (cut, level), loaded from the profile's list unless given; such a request
        # carries the latent in its wire codec.
        if bottlenecks is None and profile.bottlenecks:
            from profiles.bottleneck import load_for_profile
            from profiles.multiexit import check_model

            bottlenecks = load_for_profile(profile, model, check_model(model))
        self.bottlenecks = {key: b.to(device).eval() for key, b in (bottlenecks or {}).items()}
        self._queue: asyncio.Queue[_Job] | None = None
        self._batchers: list[asyncio.Task] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="tail")
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

    # -- inference -------------------------------------------------------------------
    def _run_tail(self, route, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """The model's tail from a cut, or a bottleneck's decoder and tail; with cloud
        emulation, padded to the emulated cloud's time for a batch of this size."""
        torch = self.torch
        t0 = time.perf_counter()
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            if isinstance(route, tuple):
                logits = self.bottlenecks[route].decode(x)
            else:
                logits = tail(self.model, route, x)
            logits = logits.float().cpu().numpy()
        if self.batch_seconds is not None:
            cut = route[0] if isinstance(route, tuple) else route
            size = min(len(batch), self.batch_seconds.shape[1] - 1)
            left = float(self.batch_seconds[cut, size]) - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)
        return logits, time.perf_counter() - t0

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
                        self._pool, self._run_tail, route, batch
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
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(route, tensor, future, time.perf_counter()))
        return await future

    # -- connections -----------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        task = asyncio.current_task()
        self._connections.add(task)
        rid = None  # the request in flight on this connection
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
        for task in self._batchers:
            task.cancel()
        for task in self._batchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pool.shutdown(wait=True, cancel_futures=True)

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
            queue_s, compute_s, logits = await self.infer(route, tensor)
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

    def warm_up(self) -> None:
        """Run every cut's tail once: the first inference of a process pays for lazy
        initialisation (tens of ms), which no device request should see."""
        for cut, shape in enumerate(self.profile.activation_shapes[: self.n_blocks]):
            self._run_tail(cut, np.zeros((1, *shape), np.float32))
        for route, bottleneck in self.bottlenecks.items():
            self._run_tail(route, np.zeros((1, *bottleneck.latent_shape), np.float32))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.base_events.Server:
        self.warm_up()
        self._queue = asyncio.Queue()
        # One batcher per worker: the first idle one takes what is waiting.
        self._batchers = [asyncio.create_task(self._batcher()) for _ in range(self.workers)]
        return await asyncio.start_server(
            self.handle, host, port, limit=P.MAX_PAYLOAD + P.HEADER_SIZE
        )


def load_server(
    scenario=None, device: str = "cpu", weights=None, threads: int = 1,
    emulate_cloud: bool = False, **kwargs,
) -> TailServer:  # fmt: skip
    """A server for a scenario (path, ``Scenario`` or ``None``: the built-in one): its
    model, checked against its profile. ``weights``: the built-in CNN with these
    weights instead (checked the same way)."""
    import torch

    from envs.scenario import Scenario, load_scenario
    from profiles.multiexit import model_for_profile, model_hash
    from profiles.profile_io import load_profile

    torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    if emulate_cloud:
        from envs.cloud_capacity import batch_seconds
        from envs.system import System

        kwargs["batch_seconds"] = batch_seconds(
            System(scenario), scenario.capacity, kwargs.get("max_batch", 32)
        )
    profile = load_profile(scenario.profile)
    if weights is not None:
        from profiles.model import load_model

        model = load_model(weights)
        profile.check_model_hash(model_hash(model), f"model in --weights {weights}")
    else:
        model, _ = model_for_profile(profile, scenario.model)
    return TailServer(model, profile, device=device, **kwargs)


@dataclass
class ServerArgs:
    """The server's command line."""

    host: str = option("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = option(9300, "TCP port; 0: any free port", check=port)
    scenario: Path | None = option(None, "scenario TOML whose model to serve (default: built-in)",
                                   type=Path)  # fmt: skip
    device: str = option("cpu", "cpu, or cuda where there is a GPU")
    weights: Path | None = option(None, "weights of the built-in CNN (default: shipped)",
                                  type=Path)  # fmt: skip
    threads: int = option(1, "torch threads", check=at_least(1))
    max_batch: int = option(32, "most requests in one batch", check=at_least(1))
    workers: int = option(1, "batches run at once (one thread each)", check=at_least(1))
    emulate_cloud: bool = option(False, "pad each batch to the scenario cloud's time for its "
                                 "size (profiles.measure_cloud / speedup + overhead)")  # fmt: skip
    idle_timeout: float = option(60.0, "seconds between frames", check=positive)
    read_timeout: float = option(5.0, "seconds within a frame", check=positive)
    delay_ms: float = option(0.0, "fault drill: slow answers", check=non_negative)
    grace: float = option(5.0, "seconds requests in flight get at shutdown", check=non_negative)

    def __post_init__(self) -> None:
        check_options(self)


async def serve(args: ServerArgs) -> None:
    server = load_server(
        args.scenario,
        args.device,
        args.weights,
        args.threads,
        max_batch=args.max_batch,
        workers=args.workers,
        emulate_cloud=args.emulate_cloud,
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
        f"({s.errors} errors, {s.batches} batches)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        asyncio.run(serve(parse(ServerArgs, argv, __doc__.splitlines()[0])))
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
