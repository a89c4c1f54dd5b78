"""The device's connection to the cloud server, and what it knows of the server's state.

``CloudLink`` connects (a hello naming the model, which the server must serve too;
an empty ping for the RTT, then a throughput probe), sends
request frames and reads their answers, and says whether the server is known to be
down. When a connection fails or drops, it warns once (naming ``host:port`` and the
reason), marks the server down and starts a background thread that tries again with
backoff; the device loop adopts the new connection (``poll``) at its next request, so
no request ever waits on a reconnection. A server that is back is announced too.

Nothing received is unpickled: frames go through ``runtime_hooks.protocol``.
"""

from __future__ import annotations

import itertools
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from runtime_hooks import protocol as P
from settings.tables import InputError


class ServerError(Exception):
    """The server answered a request with an error frame."""


class ServerRefused(InputError):
    """The server serves another model than the device's (the hello's identities
    differ): no request could be answered, so the device refuses to start."""


@dataclass(frozen=True)
class LinkMeasurement:
    """What connecting measured: the RTT of an empty ping and, when a probe was sent,
    its bytes and time on the wire (``outage``: the probe was not answered in time,
    the link carries nothing now)."""

    connected_at: float
    rtt_s: float
    probe_bytes: int
    probe_sent_at: float
    probe_tx_s: float
    outage: bool = False


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass
class _Connection:
    sock: socket.socket
    reader: P.FrameReader


class CloudLink:
    """One device's link to one server (``address``: ``(host, port)``; ``None``: no
    server, every request stays on the device)."""

    def __init__(
        self,
        address: tuple[str, int] | None,
        n_classes: int,
        model_hash: str,
        *,
        connect_timeout_s: float = 1.0,
        probe_bytes: int = 4096,
        retry_s: tuple[float, float] = (0.5, 5.0),
        notify: Callable[[str], None] = _stderr,
        name: str | None = None,
    ) -> None:
        if not 0 <= probe_bytes <= P.MAX_PROBE:
            raise ValueError(f"probe_bytes must be in 0..{P.MAX_PROBE}, got {probe_bytes}")
        self.address = address
        self._name = name
        self.n_classes = n_classes
        self.model_hash = model_hash
        P.model_id(model_hash)  # a FrameError now for a hash a hello cannot carry
        self.connect_timeout_s = connect_timeout_s
        self.probe_bytes = probe_bytes
        self.retry_min_s, self.retry_max_s = retry_s
        self.notify = notify
        self._conn: _Connection | None = None
        self._ids = itertools.count(1)  # next() is atomic: shared with the reconnector
        self._ready: queue.Queue[tuple[_Connection, LinkMeasurement]] = queue.Queue(1)
        self._stop = threading.Event()
        self._reconnector: threading.Thread | None = None
        self.down_since: float | None = None  # monotonic time the server became unreachable
        self.tried = False
        self.stale_answers = 0
        self.reconnects = 0
        self.outages: list[tuple[float, float | None]] = []  # (down, back) monotonic times

    @property
    def name(self) -> str:
        """How messages name the server (``name``, else ``host:port``)."""
        if self._name is not None:
            return self._name
        return "no server" if self.address is None else f"{self.address[0]}:{self.address[1]}"

    @property
    def up(self) -> bool:
        return self._conn is not None

    @property
    def known_down(self) -> bool:
        """No server, or the last attempt to reach it failed and none has worked since."""
        return self.address is None or self.down_since is not None

    def next_id(self) -> int:
        return next(self._ids)

    # -- connecting ----------------------------------------------------------------
    def connect(self) -> LinkMeasurement | None:
        """Connect now unless connected or known down (then the background thread is
        trying); the measurement of a new connection, else ``None``."""
        if self._conn is not None or self.known_down:
            return None
        self.tried = True
        try:
            conn, measured = self._open()
        except P.ModelMismatch as exc:
            raise ServerRefused(f"the server at {self.name}: {exc}") from None
        except (OSError, P.FrameError, ServerError) as exc:
            self._went_down(exc)
            return None
        self._conn = conn
        self.reconnects += 1
        return measured

    def poll(self) -> LinkMeasurement | None:
        """A connection the background thread made, adopted now (with what it
        measured); ``None`` when there is none."""
        try:
            conn, measured = self._ready.get_nowait()
        except queue.Empty:
            return None
        self._conn = conn
        self.reconnects += 1
        down = self.down_since
        self.down_since = None
        self.outages[-1] = (self.outages[-1][0], measured.connected_at)
        down_s = measured.connected_at - down
        self.notify(f"the server at {self.name} answers again (down {down_s:.1f} s)")
        return measured

    def _open(self) -> tuple[_Connection, LinkMeasurement]:
        """A new connection with its RTT and probe measured; touches no state but the
        id counter, so the reconnector can call it."""
        sock = socket.create_connection(self.address, timeout=self.connect_timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The hello goes first; the server's hello is checked when it arrives
            # (with the ping's pong, or later when the link is in an outage).
            sock.settimeout(self.connect_timeout_s)
            sock.sendall(P.hello_frame(self.model_hash))
            conn = _Connection(sock, P.FrameReader(sock))
            connected = started = time.monotonic()
            rtt = self.connect_timeout_s
            try:
                rtt = self._ping(conn, 0)
                if not self.probe_bytes:
                    return conn, LinkMeasurement(connected, rtt, 0, connected, 0.0)
                started = time.monotonic()
                took = self._ping(conn, self.probe_bytes)
            except TimeoutError:
                # Connected, but the link carries nothing now (an outage): that is the
                # measurement; the pongs are dropped as stale when they come.
                waited = time.monotonic() - started
                return conn, LinkMeasurement(connected, rtt, 1, started, max(waited, 1e-3), True)
            return conn, LinkMeasurement(
                connected, rtt, self.probe_bytes + P.HEADER_SIZE, started, max(took - rtt, 1e-4)
            )
        except BaseException:
            sock.close()
            raise

    def _ping(self, conn: _Connection, probe_bytes: int) -> float:
        rid = self.next_id()
        t = time.monotonic()
        conn.sock.settimeout(self.connect_timeout_s)
        conn.sock.sendall(P.ping_frame(rid, probe_bytes=probe_bytes))
        self._read_until(conn, rid, self.connect_timeout_s)
        return time.monotonic() - t

    # -- losing and regaining the server ---------------------------------------------
    def drop(self, reason: BaseException | str) -> None:
        """The connection broke (or cannot be trusted): close it, mark the server down
        and start reconnecting in the background."""
        if self._conn is not None:
            self._conn.sock.close()
            self._conn = None
        self._went_down(reason)

    def _went_down(self, reason: BaseException | str) -> None:
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        self.outages.append((self.down_since, None))
        why = reason if isinstance(reason, str) else (
            getattr(reason, "strerror", None) or str(reason) or type(reason).__name__)  # fmt: skip
        self.notify(
            f"cannot reach the server at {self.name} ({why}); requests are answered on "
            "the device until it answers again"
        )
        if self.address is not None and (self._reconnector is None
                                         or not self._reconnector.is_alive()):  # fmt: skip
            self._reconnector = threading.Thread(
                target=self._reconnect, name="cloud-reconnect", daemon=True
            )
            self._reconnector.start()

    def _reconnect(self) -> None:
        backoff = self.retry_min_s
        while not self._stop.wait(backoff):
            try:
                made = self._open()
            except P.ModelMismatch as exc:  # the server came back with another model
                if backoff < self.retry_max_s:
                    self.notify(f"the server at {self.name} refused: {exc}")
                backoff = self.retry_max_s
                continue
            except (OSError, P.FrameError, ServerError):
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            if self._stop.is_set():
                made[0].sock.close()
                return
            self._ready.put(made)
            return

    # -- requests --------------------------------------------------------------------
    def send(self, frame: bytes, timeout_s: float) -> None:
        """Send a whole frame; ``OSError`` (a send timeout included) means the stream
        is spoilt: the caller drops the link."""
        self._conn.sock.settimeout(max(timeout_s, 1e-3))
        self._conn.sock.sendall(frame)

    def await_answer(self, rid: int, timeout_s: float) -> P.Answer:
        """The answer to ``rid``; ``TimeoutError``, ``ServerError``, ``OSError`` or
        ``FrameError``."""
        return self._read_until(self._conn, rid, timeout_s)

    def _read_until(self, conn: _Connection, rid: int, timeout_s: float):
        """Frames until the one for ``rid``; older answers are stale and dropped."""
        end = time.monotonic() + timeout_s
        while True:
            header, payload = conn.reader.read(max(end - time.monotonic(), 0.0))
            if header.kind == P.HELLO:
                if P.model_of(header) != self.model_hash:
                    raise P.ModelMismatch(P.mismatch_message(P.model_of(header), self.model_hash))
                continue
            if header.kind == P.ERROR and payload.startswith(b"model mismatch"):
                raise P.ModelMismatch(payload.decode("utf-8", "replace"))
            if header.request_id != rid:
                self.stale_answers += 1
                continue
            if header.kind == P.ERROR:
                raise ServerError(payload.decode("utf-8", "replace"))
            if header.kind == P.PONG:
                return None
            if header.kind != P.ANSWER:
                raise P.FrameError(f"unexpected {P.KINDS[header.kind]} frame from the server")
            return P.parse_answer(header, payload, self.n_classes)

    def close(self) -> None:
        self._stop.set()
        if self._conn is not None:
            self._conn.sock.close()
            self._conn = None
        try:
            conn, _ = self._ready.get_nowait()
            conn.sock.close()
        except queue.Empty:
            pass
