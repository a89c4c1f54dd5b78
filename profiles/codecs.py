"""Codecs for what crosses the uplink: the raw input at cut 0, activations elsewhere.

Every codec is ``encode(array) -> bytes`` and ``decode(bytes) -> array``. The bytes
are self-describing: a fixed header carries the codec, dtype, shape and the
quantisation parameters, so a receiver needs nothing else, and nothing is pickled.

One *compression level* ``0..N_LEVELS-1`` is what a controller picks; it maps to an
input codec at cut 0 and to an activation codec at any other cut:

=====  ==========  ===========  ===============================================
level  cut 0       cut > 0      idea
=====  ==========  ===========  ===============================================
0      raw         fp32         nothing lost, nothing saved
1      png         fp16         lossless image / half precision
2      jpeg90      int8         light loss
3      jpeg70      int8+zlib    affine uint8 then DEFLATE (ReLU zeros compress)
4      jpeg40      int4+zlib    aggressive: 4-bit affine, packed, then DEFLATE
=====  ==========  ===========  ===============================================

The image codecs take one grey ``(H, W)`` / ``(1, H, W)`` or colour ``(3, H, W)`` uint8
image and decode to the shape they were given. A model whose input is not such an
image gets the tensor codecs at cut 0 too (``codecs_by_cut``).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

MAGIC = b"SX"
VERSION = 1
MAX_NDIM = 4
MAX_ELEMENTS = 1 << 22  # 4M values: far above any tensor of the model, far below a memory bomb
INPUT_CODECS = ("raw", "png", "jpeg90", "jpeg70", "jpeg40")
ACTIVATION_CODECS = ("fp32", "fp16", "int8", "int8+zlib", "int4+zlib")
N_LEVELS = len(ACTIVATION_CODECS)
# Header: magic, version, codec id, ndim, 4 dims, scale, offset, payload length.
_HEADER = struct.Struct("<2sBBB4IffI")
HEADER_SIZE = _HEADER.size


class CodecError(ValueError):
    """Bytes that are not a valid encoding, or an array a codec cannot take."""


class Codec(Protocol):
    name: str

    def encode(self, array: np.ndarray) -> bytes: ...

    def decode(self, data: bytes) -> np.ndarray: ...


def round_trip(codec: Codec, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample of ``tensors`` encoded and decoded by ``codec``, one at a time as a
    device sends them: the bytes of each (int32) and what the receiver decodes."""
    nbytes = np.zeros(len(tensors), np.int32)
    decoded = np.empty_like(tensors)
    for i, tensor in enumerate(tensors):
        blob = codec.encode(tensor)
        nbytes[i] = len(blob)
        decoded[i] = codec.decode(blob)
    return nbytes, decoded


def codec_name(cut: int, level: int) -> str:
    """The codec that compression ``level`` means at ``cut`` for an image model (the
    built-in one); a profile says it for any model (``Profile.codec_name``)."""
    if not 0 <= level < N_LEVELS:
        raise CodecError(f"compression level must be in 0..{N_LEVELS - 1}, got {level}")
    return INPUT_CODECS[level] if cut == 0 else ACTIVATION_CODECS[level]


def codecs_by_cut(n_cuts: int, input_kind: str) -> list[list[str]]:
    """The codec of each level at each cut ``0..n_cuts-1``: the image codecs at cut 0
    when the input is a uint8 image (``input_kind == "image"``), the tensor codecs
    everywhere else (cut 0 then sends the model's float input)."""
    first = INPUT_CODECS if input_kind == "image" else ACTIVATION_CODECS
    return [list(first)] + [list(ACTIVATION_CODECS) for _ in range(1, n_cuts)]


def _pack(codec_id: int, shape: tuple[int, ...], scale: float, offset: float, payload: bytes):
    dims = list(shape) + [0] * (MAX_NDIM - len(shape))
    return _HEADER.pack(
        MAGIC, VERSION, codec_id, len(shape), *dims, scale, offset, len(payload)
    ) + (payload)


@dataclass(frozen=True)
class Header:
    codec: str
    shape: tuple[int, ...]
    scale: float
    offset: float
    payload: memoryview


def read_header(data: bytes | bytearray | memoryview) -> Header:
    """Validate and split an encoding; raises ``CodecError`` naming the bad field."""
    view = memoryview(data)
    if len(view) < HEADER_SIZE:
        raise CodecError(f"encoding too short: {len(view)} bytes, header needs {HEADER_SIZE}")
    magic, version, codec_id, ndim, d0, d1, d2, d3, scale, offset, length = _HEADER.unpack_from(
        view
    )
    if magic != MAGIC:
        raise CodecError(f"field 'magic' is {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise CodecError(f"field 'version' is {version}, expected {VERSION}")
    if codec_id >= len(_ALL_NAMES):
        raise CodecError(f"field 'codec' is {codec_id}, unknown")
    if not 1 <= ndim <= MAX_NDIM:
        raise CodecError(f"field 'ndim' is {ndim}, expected 1..{MAX_NDIM}")
    shape = (d0, d1, d2, d3)[:ndim]
    if any(d == 0 for d in shape) or any((d0, d1, d2, d3)[ndim:]):
        raise CodecError(f"field 'shape' is {(d0, d1, d2, d3)} for ndim {ndim}")
    if int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS:
        raise CodecError(f"field 'shape' {shape} exceeds {MAX_ELEMENTS} elements")
    if not (np.isfinite(scale) and np.isfinite(offset)):
        raise CodecError("fields 'scale'/'offset' are not finite")
    if length != len(view) - HEADER_SIZE:
        raise CodecError(
            f"field 'payload_length' is {length}, but {len(view) - HEADER_SIZE} bytes follow"
        )
    return Header(_ALL_NAMES[codec_id], shape, scale, offset, view[HEADER_SIZE:])


def _inflate(payload: memoryview, expected: int) -> bytes:
    """DEFLATE with a hard output bound: a crafted payload cannot balloon in memory."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(bytes(payload), expected)
    except zlib.error as exc:
        raise CodecError(f"payload is not valid DEFLATE data ({exc})") from exc
    if len(out) != expected or inflater.unconsumed_tail or not inflater.eof:
        raise CodecError(f"payload inflates to a size other than the {expected} bytes expected")
    return out


def _check_float(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise CodecError(f"activation codecs take floating-point arrays, got {array.dtype}")
    if not 1 <= array.ndim <= MAX_NDIM or array.size == 0:
        raise CodecError(f"array shape {array.shape} not supported (1..{MAX_NDIM} dims, non-empty)")
    if not np.isfinite(array).all():
        raise CodecError("array holds NaN or infinity")
    return np.ascontiguousarray(array, dtype=np.float32)


class _Float:
    def __init__(self, name: str, dtype: str) -> None:
        self.name, self.dtype = name, np.dtype(dtype)

    def encode(self, array: np.ndarray) -> bytes:
        a = _check_float(array)
        return _pack(_ID[self.name], a.shape, 1.0, 0.0, a.astype(self.dtype).tobytes())

    def decode(self, data: bytes) -> np.ndarray:
        h = _expect(data, self.name)
        n = int(np.prod(h.shape))
        if len(h.payload) != n * self.dtype.itemsize:
            raise CodecError(f"{self.name}: payload is {len(h.payload)} bytes for shape {h.shape}")
        return np.frombuffer(h.payload, dtype=self.dtype).astype(np.float32).reshape(h.shape)


class _Affine:
    """Per-tensor affine quantisation to ``bits`` (8 or 4), optionally DEFLATEd."""

    def __init__(self, name: str, bits: int, deflate: bool) -> None:
        self.name, self.bits, self.deflate = name, bits, deflate
        self.levels = (1 << bits) - 1

    def encode(self, array: np.ndarray) -> bytes:
        a = _check_float(array)
        lo, hi = float(a.min()), float(a.max())
        # The header stores the step as float32: a range so small that its step is not a
        # positive normal float32 would divide by zero; one step of 1.0 then loses less.
        scale = float(np.float32((hi - lo) / self.levels))
        if not scale >= np.finfo(np.float32).tiny:
            scale = 1.0
        q = np.rint((a.astype(np.float64) - lo) / scale)
        q = np.clip(q, 0, self.levels).astype(np.uint8).ravel()
        if self.bits == 4:
            q = np.concatenate([q, np.zeros(len(q) % 2, np.uint8)])
            q = (q[0::2] << 4) | q[1::2]
        payload = q.tobytes()
        if self.deflate:
            payload = zlib.compress(payload, 1)  # fast level: what a small device would run
        return _pack(_ID[self.name], a.shape, scale, lo, payload)

    def decode(self, data: bytes) -> np.ndarray:
        h = _expect(data, self.name)
        n = int(np.prod(h.shape))
        packed = (n + 1) // 2 if self.bits == 4 else n
        raw = _inflate(h.payload, packed) if self.deflate else bytes(h.payload)
        if len(raw) != packed:
            raise CodecError(f"{self.name}: payload is {len(raw)} bytes for shape {h.shape}")
        q = np.frombuffer(raw, dtype=np.uint8)
        if self.bits == 4:
            q = np.stack([q >> 4, q & 0x0F], axis=1).ravel()[:n]
        return (q.astype(np.float32) * np.float32(h.scale) + np.float32(h.offset)).reshape(h.shape)


def _check_uint8(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise CodecError(f"input codecs take uint8 arrays, got {a.dtype}")
    if not 1 <= a.ndim <= MAX_NDIM or a.size == 0:
        raise CodecError(f"array shape {a.shape} not supported (1..{MAX_NDIM} dims, non-empty)")
    return np.ascontiguousarray(a)


def _check_image(array: np.ndarray) -> np.ndarray:
    """One image: ``(H, W)`` or ``(1, H, W)`` grey, ``(3, H, W)`` colour."""
    a = _check_uint8(array)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[0] in (1, 3))):
        raise CodecError(
            f"image codecs take one image (H, W), (1, H, W) or (3, H, W), got {a.shape}"
        )
    return a


def _pil_mode(shape: tuple[int, ...]) -> str:
    return "RGB" if len(shape) == 3 and shape[0] == 3 else "L"


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    return (shape[-2], shape[-1])


class _RawImage:
    """The uint8 input as it is, any shape."""

    name = "raw"

    def encode(self, array: np.ndarray) -> bytes:
        a = _check_uint8(array)
        return _pack(_ID[self.name], a.shape, 1.0, 0.0, a.tobytes())

    def decode(self, data: bytes) -> np.ndarray:
        h = _expect(data, self.name)
        if len(h.payload) != int(np.prod(h.shape)):
            raise CodecError(f"raw: payload is {len(h.payload)} bytes for shape {h.shape}")
        return np.frombuffer(h.payload, dtype=np.uint8).reshape(h.shape).copy()


class _PillowImage:
    def __init__(self, name: str, fmt: str, quality: int | None) -> None:
        self.name, self.fmt, self.quality = name, fmt, quality

    def encode(self, array: np.ndarray) -> bytes:
        from PIL import Image

        a = _check_image(array)
        mode = _pil_mode(a.shape)
        pixels = np.ascontiguousarray(a.transpose(1, 2, 0)) if mode == "RGB" else a.reshape(
            _hw(a.shape))  # fmt: skip
        buf = io.BytesIO()
        options = {"optimize": True}
        if self.quality is not None:
            options["quality"] = self.quality
        Image.fromarray(pixels, mode=mode).save(buf, format=self.fmt, **options)
        return _pack(_ID[self.name], a.shape, 1.0, 0.0, buf.getvalue())

    def decode(self, data: bytes) -> np.ndarray:
        from PIL import Image

        h = _expect(data, self.name)
        if not (len(h.shape) == 2 or (len(h.shape) == 3 and h.shape[0] in (1, 3))):
            raise CodecError(f"{self.name}: shape {h.shape} is not an image")
        mode = _pil_mode(h.shape)
        height, width = _hw(h.shape)
        try:
            with Image.open(io.BytesIO(bytes(h.payload)), formats=[self.fmt]) as img:
                # Check the declared size before decoding pixels: no decompression bomb.
                if img.size != (width, height) or img.mode != mode:
                    raise CodecError(
                        f"{self.name}: image is {img.size} {img.mode}, header says {h.shape} {mode}"
                    )
                out = np.asarray(img.convert(mode), dtype=np.uint8)
        except CodecError:
            raise
        except Exception as exc:  # Pillow raises several types on corrupt data
            raise CodecError(f"{self.name}: payload is not a valid {self.fmt} ({exc})") from exc
        if mode == "RGB":
            out = out.transpose(2, 0, 1)
        return np.ascontiguousarray(out).reshape(h.shape).copy()


class _Latent:
    """A learned bottleneck's latent in [0, 1] on the wire (``profiles.bottleneck``):
    uniform ``bits``-bit levels (1, 2, 4 or 8), packed, then raw DEFLATE when that is
    smaller. The header's ``scale`` holds the bits, ``offset`` 1 when DEFLATEd."""

    def __init__(self, bits: int) -> None:
        self.name, self.bits = f"latent{bits}", bits
        self.levels = (1 << bits) - 1
        self.per_byte = 8 // bits

    def encode(self, array: np.ndarray) -> bytes:
        a = _check_float(array)
        if a.min() < -1e-6 or a.max() > 1 + 1e-6:
            raise CodecError(f"{self.name}: a latent lies in [0, 1], got [{a.min()}, {a.max()}]")
        q = np.rint(np.clip(a, 0, 1).astype(np.float64) * self.levels).astype(np.uint8).ravel()
        q = np.concatenate([q, np.zeros(-len(q) % self.per_byte, np.uint8)])
        packed = np.zeros(len(q) // self.per_byte, np.uint8)
        for i in range(self.per_byte):  # first value in the high bits
            packed |= q[i :: self.per_byte] << (8 - self.bits * (i + 1))
        raw = packed.tobytes()
        deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
        squeezed = deflater.compress(raw) + deflater.flush()
        if len(squeezed) < len(raw):
            return _pack(_ID[self.name], a.shape, float(self.bits), 1.0, squeezed)
        return _pack(_ID[self.name], a.shape, float(self.bits), 0.0, raw)

    def decode(self, data: bytes) -> np.ndarray:
        h = _expect(data, self.name)
        if h.scale != self.bits or h.offset not in (0.0, 1.0):
            raise CodecError(f"{self.name}: fields 'scale'/'offset' are {h.scale}/{h.offset}")
        n = int(np.prod(h.shape))
        size = -(-n // self.per_byte)
        if h.offset:
            inflater = zlib.decompressobj(-15)
            try:
                raw = inflater.decompress(bytes(h.payload), size)
            except zlib.error as exc:
                raise CodecError(f"{self.name}: payload is not valid DEFLATE data ({exc})") from exc
            if len(raw) != size or inflater.unconsumed_tail or not inflater.eof:
                raise CodecError(f"{self.name}: payload inflates to other than {size} bytes")
        else:
            raw = bytes(h.payload)
            if len(raw) != size:
                raise CodecError(f"{self.name}: payload is {len(raw)} bytes for shape {h.shape}")
        packed = np.frombuffer(raw, np.uint8)
        mask = (1 << self.bits) - 1
        q = np.stack([(packed >> (8 - self.bits * (i + 1))) & mask for i in range(self.per_byte)],
                     axis=1).ravel()[:n]  # fmt: skip
        return (q.astype(np.float32) / np.float32(self.levels)).reshape(h.shape)


class _Noised(_Float):
    """Activation perturbation against model inversion: Gaussian noise of standard
    deviation ``relative`` times the activation's own (over all its values) added on the
    device, then sent as float16. The cloud decodes float16 and never sees the clean
    activation. The noise is drawn from the OS's entropy (``rng``: a seeded one, for
    measuring a profile reproducibly)."""

    def __init__(self, name: str, relative: float) -> None:
        super().__init__(name, "float16")
        self.relative = relative
        self.rng = np.random.default_rng()

    def noised(self, array: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        a = _check_float(array)
        sigma = self.relative * float(a.std())
        return a + (rng or self.rng).normal(0.0, sigma, a.shape).astype(np.float32)

    def encode(self, array: np.ndarray, rng: np.random.Generator | None = None) -> bytes:
        return super().encode(self.noised(array, rng))


LATENT_BITS = (1, 2, 4, 8)
# Relative standard deviations of the noise levels (``noise25`` = 0.25 x the activation's).
NOISE_LEVELS = (0.25, 0.5, 1.0)


def noise_name(relative: float) -> str:
    return f"noise{round(relative * 100)}"


CODECS: dict[str, Codec] = {
    "raw": _RawImage(),
    "png": _PillowImage("png", "PNG", None),
    "jpeg90": _PillowImage("jpeg90", "JPEG", 90),
    "jpeg70": _PillowImage("jpeg70", "JPEG", 70),
    "jpeg40": _PillowImage("jpeg40", "JPEG", 40),
    "fp32": _Float("fp32", "float32"),
    "fp16": _Float("fp16", "float16"),
    "int8": _Affine("int8", 8, deflate=False),
    "int8+zlib": _Affine("int8+zlib", 8, deflate=True),
    "int4+zlib": _Affine("int4+zlib", 4, deflate=True),
    **{f"latent{b}": _Latent(b) for b in LATENT_BITS},  # appended: earlier ids unchanged
    **{noise_name(r): _Noised(noise_name(r), r) for r in NOISE_LEVELS},
}
_ALL_NAMES = tuple(CODECS)
_ID = {name: i for i, name in enumerate(_ALL_NAMES)}


def _expect(data: bytes, name: str) -> Header:
    h = read_header(data)
    if h.codec != name:
        raise CodecError(f"encoding is {h.codec!r}, not {name!r}")
    return h


def get(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None


def encode(name: str, array: np.ndarray) -> bytes:
    return get(name).encode(array)


def decode(data: bytes) -> np.ndarray:
    """Decode any encoding; the codec is read from the header."""
    return get(read_header(data).codec).decode(data)
