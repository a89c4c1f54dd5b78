import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from profiles import codecs
from profiles.codecs import CodecError

shapes = st.tuples(st.integers(1, 8), st.integers(1, 9), st.integers(1, 9))
floats = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@settings(max_examples=examples(60), deadline=None)
@given(arrays(np.float32, shapes, elements=floats))
def test_lossless_float_codecs_round_trip(a):
    np.testing.assert_array_equal(codecs.decode(codecs.encode("fp32", a)), a)
    np.testing.assert_allclose(
        codecs.decode(codecs.encode("fp16", a)), a.astype(np.float16).astype(np.float32)
    )


@settings(max_examples=examples(60), deadline=None)
@given(
    arrays(np.float32, shapes, elements=floats), st.sampled_from(["int8", "int8+zlib", "int4+zlib"])
)
def test_quantised_codecs_within_half_a_step(a, name):
    blob = codecs.encode(name, a)
    out = codecs.decode(blob)
    assert out.shape == a.shape and out.dtype == np.float32
    levels = 15 if name.startswith("int4") else 255
    step = (float(a.max()) - float(a.min())) / levels if a.max() > a.min() else 1.0
    assert np.abs(out - a).max() <= step / 2 + 1e-3 * max(1.0, np.abs(a).max())


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", ["int8", "int8+zlib", "int4+zlib"])
@pytest.mark.parametrize("hi", [1e-44, 1e-38, 1e-30])
def test_quantised_codecs_take_a_tiny_range(name, hi):
    """A range whose step underflows float32 must not divide by zero."""
    a = np.array([[0.0, hi], [hi, 0.0]], np.float32)
    out = codecs.decode(codecs.encode(name, a))
    assert np.isfinite(out).all() and np.abs(out - a).max() <= hi


@settings(max_examples=examples(40), deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_image_codecs_round_trip(img):
    for name in ("raw", "png"):
        np.testing.assert_array_equal(codecs.decode(codecs.encode(name, img)), img)
    for name in ("jpeg90", "jpeg70", "jpeg40"):
        out = codecs.decode(codecs.encode(name, img))
        assert out.shape == img.shape and out.dtype == np.uint8


def test_compression_levels_shrink_real_like_activations():
    rng = np.random.default_rng(0)
    act = np.maximum(rng.normal(-0.5, 1.0, (16, 14, 14)), 0).astype(np.float32)
    sizes = [len(codecs.encode(codecs.codec_name(1, lvl), act)) for lvl in range(codecs.N_LEVELS)]
    assert sizes == sorted(sizes, reverse=True)


def test_header_is_self_describing():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    h = codecs.read_header(codecs.encode("int8", a))
    assert h.codec == "int8" and h.shape == (2, 3, 4) and h.offset == 0.0


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:10], "too short"),
        (lambda b: b"XX" + b[2:], "magic"),
        (lambda b: b[:2] + b"\x09" + b[3:], "version"),
        (lambda b: b[:3] + b"\xff" + b[4:], "codec"),
        (lambda b: b + b"extra", "payload_length"),
    ],
)
def test_corrupt_encodings_are_rejected(mutate, message):
    blob = codecs.encode("fp32", np.ones((2, 2), np.float32))
    with pytest.raises(CodecError, match=message):
        codecs.decode(mutate(blob))


def test_deflate_bomb_is_bounded():
    import struct
    import zlib

    # Header claims 4 values, payload inflates to 10 MB.
    payload = zlib.compress(b"\0" * 10_000_000)
    blob = (
        struct.pack(
            "<2sBBB4IffI",
            b"SX",
            1,
            list(codecs.CODECS).index("int8+zlib"),
            1,
            4,
            0,
            0,
            0,
            1.0,
            0.0,
            len(payload),
        )
        + payload
    )
    with pytest.raises(CodecError, match="inflates"):
        codecs.decode(blob)


def test_bad_arrays_are_refused():
    with pytest.raises(CodecError, match="NaN"):
        codecs.encode("fp32", np.array([np.nan], np.float32))
    with pytest.raises(CodecError, match="uint8"):
        codecs.encode("png", np.zeros((4, 4), np.float32))
    with pytest.raises(CodecError, match="unknown codec"):
        codecs.encode("lz77", np.zeros(3, np.float32))
    with pytest.raises(CodecError, match="compression level"):
        codecs.codec_name(1, 9)


@pytest.mark.parametrize("name", ["raw", "png", "jpeg90", "jpeg40"])
def test_image_codecs_take_grey_and_colour_images_and_keep_their_shape(name):
    rng = np.random.default_rng(0)
    for shape in ((12, 10), (1, 12, 10), (3, 12, 10)):
        image = (rng.random(shape) * 255).astype(np.uint8)
        decoded = codecs.decode(codecs.encode(name, image))
        assert decoded.shape == shape and decoded.dtype == np.uint8
        if name in ("raw", "png"):
            np.testing.assert_array_equal(decoded, image)
    with pytest.raises(codecs.CodecError, match=r"\(H, W\), \(1, H, W\) or \(3, H, W\)"):
        codecs.encode("png", np.zeros((2, 12, 10), np.uint8))


@pytest.mark.parametrize("bits", codecs.LATENT_BITS)
def test_latent_codecs_round_trip_to_their_levels(bits):
    rng = np.random.default_rng(bits)
    for latent in (rng.random((4, 7, 7)).astype(np.float32), np.zeros((3, 5), np.float32)):
        blob = codecs.encode(f"latent{bits}", latent)
        levels = (1 << bits) - 1
        np.testing.assert_allclose(codecs.decode(blob), np.round(latent * levels) / levels)
    with pytest.raises(CodecError, match=r"a latent lies in \[0, 1\]"):
        codecs.encode(f"latent{bits}", np.full((2, 2), 1.5, np.float32))


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=80), st.integers(0, 200))
def test_corrupt_latent_bytes_are_a_clean_error(junk, cut_at):
    blob = codecs.encode("latent4", np.random.default_rng(0).random((4, 7, 7)).astype(np.float32))
    mangled = blob[: min(cut_at, len(blob))] + junk
    try:
        out = codecs.decode(mangled)
    except CodecError:
        return
    assert out.dtype == np.float32 and np.isfinite(out).all()
