"""The frame protocol and the cloud server: validation, fuzzing, a real server process."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import numpy as np
import pytest
import torch
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles import codecs
from runtime_hooks import protocol as P
from runtime_hooks.server import TailServer


def _model_hash() -> str:
    from profiles.profile_io import load_profile

    return load_profile().model_hash


def _connect(address) -> tuple[socket.socket, P.FrameReader]:
    """A raw client: connected and greeted with the built-in model's hello."""
    sock = socket.create_connection(address, timeout=5.0)
    return sock, P.handshake(sock, _model_hash())


def _request(cut: int, level: int, tensor: np.ndarray, rid: int = 7) -> bytes:
    codec = codecs.codec_name(cut, level)
    return P.request_frame(rid, cut, level, codec, tensor.shape, codecs.encode(codec, tensor))


@pytest.fixture(scope="module")
def image_and_label():
    from profiles.dataset import load_official

    test = load_official("test")
    return test.images[:8], test.labels[:8]


@pytest.fixture(scope="module")
def tail_server(model):
    from profiles.profile_io import load_profile
    from runtime_hooks.tail import TailRunner

    return TailServer(TailRunner(model, load_profile()))


# -- the header ----------------------------------------------------------------------
def test_header_round_trip():
    raw = P.pack_header(P.REQUEST, 2**40, 123, cut=3, level=2, dtype="uint8", shape=(48, 7, 7))
    h = P.parse_header(raw)
    assert len(raw) == P.HEADER_SIZE == 32
    assert (h.kind, h.request_id, h.cut, h.level, h.dtype, h.shape, h.payload_length) == (
        P.REQUEST, 2**40, 3, 2, "uint8", (48, 7, 7), 123,
    )  # fmt: skip


@pytest.mark.parametrize(
    "field, offset, value",
    [
        ("magic", 0, b"XXXX"),
        ("version", 4, b"\x09"),
        ("kind", 5, b"\x63"),
        ("reserved", 6, b"\x01\x00"),
        ("dtype", 18, b"\x09"),
        ("ndim", 19, b"\x07"),
        ("shape", 20, b"\x00\x00"),
        ("payload_length", 28, struct.pack("<I", P.MAX_PAYLOAD + 1)),
    ],
)
def test_each_bad_header_field_is_named(field, offset, value):
    raw = bytearray(P.pack_header(P.REQUEST, 1, 10, dtype="uint8", shape=(28, 28)))
    raw[offset : offset + len(value)] = value
    with pytest.raises(P.FrameError, match=field):
        P.parse_header(bytes(raw))


def test_short_header_and_oversized_error_and_ping():
    with pytest.raises(P.FrameError, match="header is 5 bytes"):
        P.parse_header(b"SPLT\x01")
    with pytest.raises(P.FrameError, match="errors carry"):
        P.parse_header(P.pack_header(P.ERROR, 1, P.MAX_ERROR + 1))
    with pytest.raises(P.FrameError, match="ping carries"):
        P.parse_header(P.pack_header(P.PING, 1, P.MAX_PROBE + 1))
    with pytest.raises(P.FrameError, match="pong carries none"):
        P.parse_header(P.pack_header(P.PONG, 1, 4))
    with pytest.raises(P.FrameError, match="hello carries none"):
        P.parse_header(P.pack_header(P.HELLO, 1, 4))


def test_a_hello_carries_the_model_hash_both_ways():
    h = P.parse_header(P.hello_frame("3fa2b8c0d1e2f3a4"))
    assert h.kind == P.HELLO and P.model_of(h) == "3fa2b8c0d1e2f3a4"
    for bad in ("xyz", "3fa2", "3fa2b8c0d1e2f3a4ff"):
        with pytest.raises(P.FrameError, match="model hash"):
            P.hello_frame(bad)


# -- fuzzing: a clean FrameError, never a crash --------------------------------------
@settings(max_examples=examples(3000), deadline=None)
@given(st.binary(min_size=P.HEADER_SIZE, max_size=P.HEADER_SIZE))
def test_fuzz_random_headers(data):
    """Any 32 bytes: a ``FrameError`` (nothing else), or a header whose every field is
    valid, which the same bytes encode."""
    try:
        h = P.parse_header(data)
    except P.FrameError:
        return
    assert h.kind in P.KINDS and h.dtype in P.DTYPE_CODES and h.payload_length <= P.MAX_PAYLOAD
    again = P.pack_header(h.kind, h.request_id, h.payload_length, h.cut, h.level, h.dtype, h.shape)
    assert again == data


def _serve_frame(server: TailServer, frame: bytes) -> np.ndarray | None:
    """What the server does with one frame, short of the socket: parse, check, decode;
    the tensor a request would hand to the model."""
    h = P.parse_header(frame[: P.HEADER_SIZE])
    payload = frame[P.HEADER_SIZE :]
    if len(payload) != h.payload_length:
        raise P.FrameError("payload length differs")  # the server would wait or time out
    if h.kind != P.REQUEST:
        return None
    tensor = server.decode(h, server.check_request(h), payload)
    # What passes is what the allowlist admits for its cut: a tensor of the model's.
    # (A learned bottleneck's latent has a shape of its own, checked the same way.)
    if (h.cut, h.level) not in server.bottlenecks:
        assert h.shape in server.shapes[h.cut], (h.cut, h.shape)
        assert tuple(tensor.shape) in server.shapes[h.cut] | {server.input_shape}, tensor.shape
    assert np.isfinite(tensor).all()
    return tensor


@settings(
    max_examples=examples(3000),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    cut=st.integers(0, 4),
    level=st.integers(0, 4),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut_at=st.one_of(st.none(), st.integers(0, 10_000)),
)
def test_fuzz_mutated_frames(tail_server, image_and_label, cut, level, flips, cut_at):
    images, _ = image_and_label
    x = torch.from_numpy(images[:1, None] / 255.0).float()
    tensor = images[0] if cut == 0 else tail_server.runner.model.head(cut, x)[0].detach().numpy()
    frame = bytearray(_request(cut, level, tensor))
    for pos, byte in flips:
        frame[pos % len(frame)] = byte
    if cut_at is not None:
        frame = frame[: cut_at % len(frame)]
    with contextlib.suppress(P.FrameError):
        _serve_frame(tail_server, bytes(frame))


def test_allowlist_refuses_wrong_dtype_shape_and_codec(tail_server, image_and_label):
    images, _ = image_and_label
    ok = P.parse_header(_request(0, 0, images[0])[: P.HEADER_SIZE])
    assert tail_server.check_request(ok) == "raw"
    cases = {
        "cut": P.pack_header(P.REQUEST, 1, 10, cut=5, dtype="uint8", shape=(28, 28)),
        "dtype": P.pack_header(P.REQUEST, 1, 10, cut=0, dtype="float32", shape=(28, 28)),
        "shape": P.pack_header(P.REQUEST, 1, 10, cut=0, dtype="uint8", shape=(27, 28)),
        "payload_length": P.pack_header(P.REQUEST, 1, 99_999, cut=0, dtype="uint8", shape=(28, 28)),
    }
    for field, raw in cases.items():
        with pytest.raises(P.FrameError, match=field):
            tail_server.check_request(P.parse_header(raw))
    # A payload of another codec than the header implies.
    frame = P.request_frame(1, 0, 0, "raw", (28, 28), codecs.encode("png", images[0]))
    h = P.parse_header(frame[: P.HEADER_SIZE])
    with pytest.raises(P.FrameError, match="payload is png"):
        tail_server.decode(h, tail_server.check_request(h), frame[P.HEADER_SIZE :])


# -- a real server process -----------------------------------------------------------
@pytest.mark.parametrize("cut", [0, 1, 2, 3, 4])
def test_server_answers_every_cut_like_the_model(cloud_server, model, image_and_label, cut):
    images, _ = image_and_label
    x = torch.from_numpy(images[:1, None] / 255.0).float()
    sock, reader = _connect(cloud_server)
    with sock, torch.inference_mode():
        h = model.head(cut, x)
        tensor = images[0] if cut == 0 else h[0].numpy()
        sock.sendall(_request(cut, 0, tensor, rid=100 + cut))
        header, payload = reader.read(5.0)
        answer = P.parse_answer(header, payload, 10)
        expected = model.tail(cut, h).numpy()[0]
    assert answer.request_id == 100 + cut
    np.testing.assert_allclose(answer.logits, expected, rtol=1e-4, atol=1e-4)


def test_server_error_frames_keep_the_connection(cloud_server, image_and_label):
    images, _ = image_and_label
    sock, reader = _connect(cloud_server)
    with sock:
        bad = P.pack_header(P.REQUEST, 5, 4, cut=0, dtype="float32", shape=(28, 28)) + b"abcd"
        sock.sendall(bad)
        header, payload = reader.read(5.0)
        assert header.kind == P.ERROR and header.request_id == 5
        assert b"dtype" in payload
        sock.sendall(_request(0, 1, images[0], rid=6))  # still served
        header, _ = reader.read(5.0)
        assert header.kind == P.ANSWER and header.request_id == 6


def test_server_closes_on_a_broken_header_and_on_a_stalled_payload(cloud_server):
    sock, reader = _connect(cloud_server)
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(6))
        header, payload = reader.read(5.0)
        assert header.kind == P.ERROR and b"magic" in payload
        with pytest.raises(ConnectionError):
            reader.read(5.0)
    sock, reader = _connect(cloud_server)
    with sock:  # promises 784 bytes, sends 10: the read timeout (0.5 s) ends it
        sock.sendall(P.pack_header(P.REQUEST, 9, 817, cut=0, dtype="uint8", shape=(28, 28)))
        sock.sendall(bytes(10))
        header, payload = reader.read(5.0)
        assert header.kind == P.ERROR and b"in time" in payload
        with pytest.raises(ConnectionError):
            reader.read(5.0)


def test_server_serves_many_devices_at_once(cloud_server, image_and_label):
    images, labels = image_and_label
    answered = []

    def device(i: int) -> None:
        sock, reader = _connect(cloud_server)
        with sock:
            for j in range(10):
                rid = i * 1000 + j
                sock.sendall(_request(0, 0, images[j % 8], rid=rid))
                header, payload = reader.read(10.0)
                answer = P.parse_answer(header, payload, 10)
                answered.append((rid, int(answer.logits.argmax()) == labels[j % 8]))

    threads = [threading.Thread(target=device, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answered) == 160 and len({rid for rid, _ in answered}) == 160
    assert np.mean([ok for _, ok in answered]) > 0.6


def test_server_refuses_nan_activations_and_keeps_the_connection(cloud_server, model,
                                                                 image_and_label):  # fmt: skip
    images, _ = image_and_label
    x = torch.from_numpy(images[:1, None] / 255.0).float()
    with torch.inference_mode():
        h = model.head(1, x)[0].numpy().copy()
    sock, reader = _connect(cloud_server)
    with sock:
        # Our encoders refuse NaN; a hostile device writes the bytes itself: the last
        # element of an fp32 and an fp16 payload becomes NaN.
        for level, nan in ((0, np.float32("nan").tobytes()), (1, np.float16("nan").tobytes())):
            codec = codecs.codec_name(1, level)
            payload = codecs.encode(codec, h)
            payload = payload[: -len(nan)] + nan
            sock.sendall(P.request_frame(20 + level, 1, level, codec, h.shape, payload))
            header, body = reader.read(5.0)
            assert header.kind == P.ERROR and header.request_id == 20 + level
            assert b"NaN or infinity" in body
        sock.sendall(P.ping_frame(22))
        assert reader.read(5.0)[0].kind == P.PONG  # the connection lives on


def test_server_checks_the_length_against_the_cut_before_reading_the_payload(cloud_server):
    sock, reader = _connect(cloud_server)
    with sock:  # 500,000 bytes promised for a 28x28 image: refused on the header alone
        sock.sendall(P.pack_header(P.REQUEST, 31, 500_000, cut=0, dtype="uint8", shape=(28, 28)))
        header, payload = reader.read(5.0)
        assert header.kind == P.ERROR and header.request_id == 31
        assert b"payload_length" in payload and b"for cut 0" in payload
        with pytest.raises(ConnectionError):
            reader.read(5.0)


def test_the_largest_probe_fits_the_header_and_is_answered(cloud_server):
    frame = P.ping_frame(41, probe_bytes=P.MAX_PROBE)
    h = P.parse_header(frame[: P.HEADER_SIZE])
    assert h.payload_length == P.MAX_PROBE == h.shape[0] == 65535
    with pytest.raises(P.FrameError, match="cannot pack header"):
        P.ping_frame(42, probe_bytes=P.MAX_PROBE + 1)
    sock, reader = _connect(cloud_server)
    with sock:
        sock.sendall(frame)
        header, _ = reader.read(5.0)
        assert header.kind == P.PONG and header.request_id == 41


# -- the hello: both ends name their model -------------------------------------------
OTHER_MODEL = "0123456789abcdef"


def test_the_server_refuses_a_device_of_another_model_naming_both(cloud_server):
    with socket.create_connection(cloud_server, timeout=5.0) as sock:
        with pytest.raises(P.ModelMismatch) as refused:
            P.handshake(sock, OTHER_MODEL)
        assert f"serves model {_model_hash()}" in str(refused.value)
        assert f"runs model {OTHER_MODEL}" in str(refused.value)
        with pytest.raises((ConnectionError, TimeoutError)):
            P.FrameReader(sock).read(2.0)  # and closed the connection


def test_a_request_before_the_hello_is_refused(cloud_server, image_and_label):
    images, _ = image_and_label
    with socket.create_connection(cloud_server, timeout=5.0) as sock:
        sock.sendall(_request(0, 0, images[0]))
        header, payload = P.FrameReader(sock).read(5.0)
    assert header.kind == P.ERROR and b"hello" in payload


def test_a_device_refuses_a_server_of_another_model(cloud_server):
    from runtime_hooks.cloud_link import CloudLink, ServerRefused

    link = CloudLink(cloud_server, 10, OTHER_MODEL, notify=lambda message: None)
    with pytest.raises(ServerRefused) as refused:
        link.connect()
    link.close()
    assert OTHER_MODEL in str(refused.value) and _model_hash() in str(refused.value)
    assert f"{cloud_server[0]}:{cloud_server[1]}" in str(refused.value)
