"""A TCP relay that shapes the device's link to a bandwidth trace and its RTT.

    python -m runtime_hooks.relay --listen 9301 --upstream 127.0.0.1:9300 --trace FILE

The device connects to the relay instead of the server. Bytes going up leave the relay
no earlier than the trace allows: the uplink is one FIFO whose capacity over time is
the trace's (as the device's radio sees it: the family's uplink ratio and cap, see
``Radio.uplink``), integrated with ``Trace.finish_time`` exactly as the simulator
does, then delayed by half the RTT. Answers come back after the other half of the RTT
(they are a few dozen bytes; the downlink's capacity is not modelled, as in the
simulator). An outage in the trace (zero capacity) holds bytes until it ends.

Portable: plain asyncio, no privileges. Trace time 0 is when the relay starts (or
``start_clock()`` is called), plus ``offset_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable

from settings.cli import summary_of
from traces.trace import Trace

SPIN_S = 0.002  # deliver by yielding, not by timer, within this much of the due time


class ShapedLink:
    """One direction of a link: FIFO, capacity from ``trace``, fixed one-way delay."""

    def __init__(self, trace: Trace, one_way_s: float, offset_s: float = 0.0) -> None:
        self.trace, self.one_way_s, self.offset_s = trace, one_way_s, offset_s
        self.free_s = 0.0  # when the link finishes what it was already given

    def delivery(self, now_s: float, nbytes: int) -> float:
        """When ``nbytes`` handed to the link at ``now_s`` (trace seconds since start)
        arrive at the far end."""
        start = max(now_s, self.free_s)
        off = self.offset_s
        end = self.trace.finish_time(off + start, nbytes) - off
        self.free_s = end
        return end + self.one_way_s


class ShapingRelay:
    """Relays every connection to ``upstream``, shaping the uplink to ``uplink``."""

    def __init__(
        self,
        upstream: tuple[str, int],
        uplink: Trace,
        rtt_s: float | None = None,
        offset_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        rtt = uplink.rtt_s if rtt_s is None else rtt_s
        self.link = ShapedLink(uplink, rtt / 2.0, offset_s)
        self.down_delay_s = rtt / 2.0
        self.clock = clock
        self.t0 = clock()
        self.bytes_up = 0
        self.connections = 0

    def start_clock(self, t0: float | None = None) -> None:
        """Trace time 0 (plus the offset) is now, or ``t0`` on the relay's clock."""
        self.t0 = self.clock() if t0 is None else t0
        self.link.free_s = 0.0

    async def _deliver(self, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        """Write chunks at their delivery times, in order; ``None`` closes."""
        try:
            while (item := await queue.get()) is not None:
                at, chunk = item
                delay = at - (self.clock() - self.t0)
                if delay > SPIN_S:
                    await asyncio.sleep(delay - SPIN_S)
                # The event loop's timers wake up to a millisecond late (epoll's
                # resolution); yield in a loop for the last stretch instead.
                while self.clock() - self.t0 < at:
                    await asyncio.sleep(0)
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _pump(self, reader: asyncio.StreamReader, queue: asyncio.Queue, shaped: bool) -> None:
        try:
            while chunk := await reader.read(65536):
                now = self.clock() - self.t0
                if shaped:
                    self.bytes_up += len(chunk)
                    at = self.link.delivery(now, len(chunk))
                else:
                    at = now + self.down_delay_s
                await queue.put((at, chunk))
        except ConnectionError:
            pass
        finally:
            await queue.put(None)

    async def handle(self, dev_reader, dev_writer) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            dev_writer.close()  # the server is down: the device sees a closed connection
            return
        up_q: asyncio.Queue = asyncio.Queue()
        down_q: asyncio.Queue = asyncio.Queue()
        try:
            await asyncio.gather(
                self._pump(dev_reader, up_q, shaped=True),
                self._deliver(up_q, up_writer),
                self._pump(up_reader, down_q, shaped=False),
                self._deliver(down_q, dev_writer),
            )
        except asyncio.CancelledError:  # the relay is shutting down
            up_writer.close()
            dev_writer.close()

    async def start(self, host: str = "127.0.0.1", port: int = 0):
        return await asyncio.start_server(self.handle, host, port)


class RelayThread:
    """A ``ShapingRelay`` (or several: one per device of a fleet, each on its own
    port) on one event loop in a background thread (for the synchronous device loop
    and for tests). ``port`` (the first relay's) and ``ports`` are set once started."""

    def __init__(self, relay: ShapingRelay | list[ShapingRelay], host: str = "127.0.0.1",
                 port: int = 0) -> None:  # fmt: skip
        self.relays = relay if isinstance(relay, list) else [relay]
        self.relay, self.host, self.port = self.relays[0], host, port
        self.ports: list[int] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="shaping-relay", daemon=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        servers = []
        for i, relay in enumerate(self.relays):
            port = self.port if i == 0 else 0
            servers.append(self._loop.run_until_complete(relay.start(self.host, port)))
        self.ports = [server.sockets[0].getsockname()[1] for server in servers]
        self.port = self.ports[0]
        self._ready.set()
        self._loop.run_forever()
        for server in servers:
            server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:  # connections still open: close them before the loop
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for server in servers:
            self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def start(self) -> RelayThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("shaping relay did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> RelayThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def uplink_for(trace_path: str, scenario=None) -> Trace:
    """A trace file as the uplink the scenario's radio for its family sees."""
    from profiles.catalog import load_catalog
    from sim import load_scenario
    from traces.loaders import load_trace

    scenario = scenario or load_scenario()
    trace = load_trace(trace_path)
    return load_catalog(scenario.catalog).radio(scenario.radio_for(trace.family)).uplink(trace)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6; an empty host is 127.0.0.1); a port
    outside 1..65535 or a missing one is refused."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {text!r}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"address {text!r}: port {int(port)} is outside 1..65535")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if any(c.isspace() for c in host):
        raise ValueError(f"address {text!r}: the host holds white space")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=summary_of(__doc__))
    parser.add_argument("--listen", type=int, default=9301, help="port the device connects to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="server HOST:PORT")
    parser.add_argument("--trace", required=True, help="two-column or 5G CSV trace file")
    parser.add_argument("--offset", type=float, default=0.0, help="seconds into the trace")
    args = parser.parse_args(argv)
    try:
        uplink = uplink_for(args.trace)
        upstream = parse_address(args.upstream)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        relay = ShapingRelay(upstream, uplink, offset_s=args.offset)
        server = await relay.start(args.host, args.listen)
        print(
            f"relaying {args.host}:{server.sockets[0].getsockname()[1]} -> {args.upstream} "
            f"shaped by {uplink.name} ({uplink.mean_bps / 1e6:.2f} Mbit/s mean uplink, "
            f"RTT {uplink.rtt_s * 1e3:.0f} ms)",
            flush=True,
        )
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
