"""Frames between the device and the cloud server: a fixed header and raw bytes.

Every frame is a 32-byte little-endian header followed by ``payload_length`` bytes::

    offset size field           meaning
    0      4    magic           b"SPLT"
    4      1    version         1
    5      1    kind            1 request, 2 answer, 3 error, 4 ping, 5 pong, 6 hello
    6      2    (zero)          reserved, must be 0
    8      8    request_id      chosen by the device, echoed by the server
    16     1    cut             blocks run on the device (request)
    17     1    level           compression level (request)
    18     1    dtype           0 none, 1 uint8, 2 float16, 3 float32, 4/5/6 uint4/2/1
                                (packed)
    19     1    ndim            0..4
    20     8    shape           4 x uint16, unused dims 0
    28     4    payload_length  bytes that follow, at most ``MAX_PAYLOAD``

* request: the payload is the ``profiles.codecs`` encoding of the tensor at the cut
  (the image at cut 0); ``dtype`` and ``shape`` are what it decodes to.
* answer: float32, shape ``(2 + n_classes,)``: the server's queueing and compute
  seconds, then the final classifier's logits.
* error: UTF-8 text (at most ``MAX_ERROR``), ``dtype`` none, ``shape`` ``(length,)``.
* hello: the first frame of a connection, both ways. ``request_id`` carries the
  model's identity (its 16-hex-digit hash, ``profiles.multiexit.model_hash``) and no
  payload follows. The server answers a hello of its own model with its hello, and one
  of another model with an error naming both models, then closes; it answers requests
  only after a hello. The device refuses a server whose hello names another model.
* ping / pong: a pong echoes the ping's ``request_id`` and carries no payload; a ping
  may carry up to ``MAX_PROBE`` bytes that the server discards (a throughput probe).

Nothing is unpickled. ``parse_header`` validates every field before a single payload
byte is read, and names the field at fault.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

import numpy as np

MAGIC = b"SPLT"
VERSION = 2  # 2: the hello frame, carrying the model's identity
REQUEST, ANSWER, ERROR, PING, PONG, HELLO = 1, 2, 3, 4, 5, 6
KINDS = {
    REQUEST: "request",
    ANSWER: "answer",
    ERROR: "error",
    PING: "ping",
    PONG: "pong",
    HELLO: "hello",
}
DTYPES = {0: "none", 1: "uint8", 2: "float16", 3: "float32", 4: "uint4", 5: "uint2", 6: "uint1"}
DTYPE_CODES = {name: code for code, name in DTYPES.items()}
MAX_NDIM = 4
MAX_PAYLOAD = 1 << 24  # 16 MiB, a protocol cap; the server limits each cut to its tensor
MAX_ERROR = 1024
MAX_PROBE = 0xFFFF  # a probe is shape (n,), and a shape dim is a uint16
HEADER = struct.Struct("<4sBBHQBBBB4HI")
HEADER_SIZE = HEADER.size  # 32

# What each codec decodes to on the wire (see profiles.codecs).
CODEC_DTYPES = {
    "raw": "uint8",
    "png": "uint8",
    "jpeg90": "uint8",
    "jpeg70": "uint8",
    "jpeg40": "uint8",
    "fp32": "float32",
    "fp16": "float16",
    "int8": "uint8",
    "int8+zlib": "uint8",
    "int4+zlib": "uint4",
    "latent1": "uint1",
    "latent2": "uint2",
    "latent4": "uint4",
    "latent8": "uint8",
    "noise25": "float16",  # activation noise, sent as float16 (profiles.codecs._Noised)
    "noise50": "float16",
    "noise100": "float16",
}


class FrameError(ValueError):
    """A frame that breaks the protocol; the message names the field."""


@dataclass(frozen=True)
class FrameHeader:
    kind: int
    request_id: int
    cut: int
    level: int
    dtype: str
    shape: tuple[int, ...]
    payload_length: int


def pack_header(
    kind: int,
    request_id: int,
    payload_length: int,
    cut: int = 0,
    level: int = 0,
    dtype: str = "none",
    shape: tuple[int, ...] = (),
) -> bytes:
    if len(shape) > MAX_NDIM:
        raise FrameError(f"field 'shape' {shape} has more than {MAX_NDIM} dims")
    dims = list(shape) + [0] * (MAX_NDIM - len(shape))
    try:
        return HEADER.pack(
            MAGIC, VERSION, kind, 0, request_id, cut, level, DTYPE_CODES[dtype], len(shape),
            *dims, payload_length,
        )  # fmt: skip
    except (struct.error, KeyError) as exc:
        raise FrameError(f"cannot pack header ({exc})") from exc


def parse_header(data: bytes | bytearray | memoryview) -> FrameHeader:
    """Validate a 32-byte header; raises ``FrameError`` naming the bad field."""
    if len(data) != HEADER_SIZE:
        raise FrameError(f"header is {len(data)} bytes, expected {HEADER_SIZE}")
    magic, version, kind, reserved, rid, cut, level, dtype, ndim, *rest = HEADER.unpack(data)
    dims, length = tuple(rest[:MAX_NDIM]), rest[MAX_NDIM]
    if magic != MAGIC:
        raise FrameError(f"field 'magic' is {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise FrameError(f"field 'version' is {version}, expected {VERSION}")
    if kind not in KINDS:
        raise FrameError(f"field 'kind' is {kind}, expected one of {sorted(KINDS)}")
    if reserved:
        raise FrameError(f"field 'reserved' is {reserved}, expected 0")
    if dtype not in DTYPES:
        raise FrameError(f"field 'dtype' is {dtype}, expected one of {sorted(DTYPES)}")
    if ndim > MAX_NDIM:
        raise FrameError(f"field 'ndim' is {ndim}, expected 0..{MAX_NDIM}")
    if any(d == 0 for d in dims[:ndim]) or any(dims[ndim:]):
        raise FrameError(f"field 'shape' is {dims} for ndim {ndim}")
    if length > MAX_PAYLOAD:
        raise FrameError(f"field 'payload_length' is {length}, above the cap of {MAX_PAYLOAD}")
    if kind in (PONG, HELLO) and length:
        raise FrameError(f"field 'payload_length' is {length}; a {KINDS[kind]} carries none")
    if kind == PING and length > MAX_PROBE:
        raise FrameError(f"field 'payload_length' is {length}; a ping carries <= {MAX_PROBE}")
    if kind == ERROR and length > MAX_ERROR:
        raise FrameError(f"field 'payload_length' is {length}; errors carry <= {MAX_ERROR}")
    return FrameHeader(kind, rid, cut, level, DTYPES[dtype], dims[:ndim], length)


def request_frame(request_id: int, cut: int, level: int, codec: str, shape, payload: bytes):
    header = pack_header(
        REQUEST, request_id, len(payload), cut, level, CODEC_DTYPES[codec], tuple(shape)
    )
    return header + payload


def answer_frame(request_id: int, queue_s: float, compute_s: float, logits: np.ndarray):
    body = np.concatenate([[queue_s, compute_s], np.asarray(logits).ravel()]).astype("<f4")
    return pack_header(ANSWER, request_id, body.nbytes, dtype="float32", shape=body.shape) + (
        body.tobytes()
    )


def error_frame(request_id: int, message: str) -> bytes:
    text = message.encode("utf-8", "replace")[:MAX_ERROR]
    return (
        pack_header(ERROR, request_id, len(text), dtype="none", shape=(len(text),) if text else ())
        + text
    )


def ping_frame(request_id: int, kind: int = PING, probe_bytes: int = 0) -> bytes:
    """A ping (or pong); a ping with ``probe_bytes`` of zeros measures throughput."""
    shape = (probe_bytes,) if probe_bytes else ()
    return pack_header(
        kind, request_id, probe_bytes, dtype="uint8" if probe_bytes else "none", shape=shape
    ) + bytes(probe_bytes)


class ModelMismatch(FrameError):
    """The two ends of a connection run different models."""


def hello_frame(model_hash: str) -> bytes:
    """The first frame of a connection: the model's identity in ``request_id``."""
    return pack_header(HELLO, model_id(model_hash), 0)


def model_id(model_hash: str) -> int:
    """A model hash (16 hex digits) as the uint64 a hello carries."""
    try:
        value = int(model_hash, 16)
    except (TypeError, ValueError):
        raise FrameError(f"model hash {model_hash!r} is not hexadecimal") from None
    if len(model_hash) != 16:
        raise FrameError(f"model hash {model_hash!r} is not 16 hex digits")
    return value


def model_of(header: FrameHeader) -> str:
    """The model hash a hello frame carries."""
    return f"{header.request_id:016x}"


def mismatch_message(server_model: str, device_model: str) -> str:
    return (
        f"model mismatch: the server serves model {server_model}, the device runs model "
        f"{device_model}; give both the same scenario (its profile names the model)"
    )


def handshake(sock: socket.socket, model_hash: str, timeout_s: float = 5.0) -> FrameReader:
    """Greet a server on a blocking socket (what a client does first); the reader for
    the frames that follow. ``ModelMismatch`` names both models when they differ."""
    sock.settimeout(timeout_s)
    sock.sendall(hello_frame(model_hash))
    reader = FrameReader(sock)
    header, payload = reader.read(timeout_s)
    if header.kind == ERROR:
        text = payload.decode("utf-8", "replace")
        raise (ModelMismatch if text.startswith("model mismatch") else FrameError)(text)
    if header.kind != HELLO:
        raise FrameError(f"expected the server's hello, got a {KINDS[header.kind]} frame")
    if model_of(header) != model_hash:
        raise ModelMismatch(mismatch_message(model_of(header), model_hash))
    return reader


@dataclass(frozen=True)
class Answer:
    request_id: int
    queue_s: float
    compute_s: float
    logits: np.ndarray

    @property
    def server_s(self) -> float:
        return self.queue_s + self.compute_s


def parse_answer(header: FrameHeader, payload: bytes, n_classes: int) -> Answer:
    want = (2 + n_classes,)
    if header.dtype != "float32" or header.shape != want or len(payload) != 4 * want[0]:
        raise FrameError(
            f"answer {header.request_id}: dtype {header.dtype} shape {header.shape} "
            f"({len(payload)} bytes), expected float32 {want}"
        )
    values = np.frombuffer(payload, "<f4").astype(np.float64)
    if not np.isfinite(values).all():
        raise FrameError(f"answer {header.request_id}: holds NaN or infinity")
    return Answer(header.request_id, float(values[0]), float(values[1]), values[2:])


class FrameReader:
    """Reads whole frames from a blocking socket with a deadline; bytes of a frame cut
    short by a timeout stay buffered, so the stream never loses its framing."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete frame before the deadline")
            self.sock.settimeout(left)
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("connection closed by the peer")
            self.buffer += chunk

    def read(self, timeout_s: float) -> tuple[FrameHeader, bytes]:
        """The next frame; ``TimeoutError``, ``ConnectionError`` or ``FrameError``."""
        self._fill(HEADER_SIZE, timeout_s)
        header = parse_header(bytes(self.buffer[:HEADER_SIZE]))
        total = HEADER_SIZE + header.payload_length
        self._fill(total, timeout_s)
        payload = bytes(self.buffer[HEADER_SIZE:total])
        del self.buffer[:total]
        return header, payload
