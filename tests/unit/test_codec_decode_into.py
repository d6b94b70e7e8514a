"""``decode_h264_chunk`` with a declared frame count copies each decoded frame straight into the
chunk's one array (no list of frames stacked and cropped afterwards): the same pixels as PyAV's
own conversion stacked, one chunk-sized allocation, and the same errors as before."""

from __future__ import annotations

import tracemalloc

import av
import numpy as np
import pytest

from operators.codec import CodecError, decode_h264_chunk, encode_h264_chunk


def blocky(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Random 8x8 blocks, shifted each frame: every frame differs, and compressible enough."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), np.uint8)
    big = np.repeat(np.repeat(base, 8, 0), 8, 1)
    return np.stack([np.roll(big, 3 * i, axis=1)[:h, :w] for i in range(n)]).copy()


def reference(payload: bytes, w: int, h: int) -> np.ndarray:
    """Every frame through PyAV's own ``to_ndarray(bgr24)``, stacked, cropped to ``(w, h)``."""
    ctx = av.CodecContext.create("h264", "r")
    packets = [*ctx.parse(payload), *ctx.parse(None)]  # the parser holds the last frame until flushed
    frames = [fr.to_ndarray(format="bgr24") for pkt in [*packets, None] for fr in ctx.decode(pkt)]
    return np.ascontiguousarray(np.stack(frames)[:, :h, :w])


@pytest.mark.parametrize("n,h,w", [(12, 96, 128), (9, 181, 321), (1, 180, 320), (5, 45, 63)])
def test_declared_count_decodes_the_same_pixels_into_one_array(n, h, w):
    frames = blocky(n, h, w)
    payload = encode_h264_chunk(frames, fps=15.0)
    out = decode_h264_chunk(payload, (w, h), expected_frames=n, strict_size=True)
    ref = reference(payload, w, h)
    assert out.shape == (n, h, w, 3) and out.dtype == np.uint8
    assert np.array_equal(out, ref)
    assert len({out[i].tobytes() for i in range(n)}) == n  # each frame in its own place
    assert out.flags.c_contiguous and out.flags.writeable and out.flags.owndata  # masked in place later
    # without a declared count (the list path) the pixels are the same
    assert np.array_equal(decode_h264_chunk(payload, (w, h)), ref)


@pytest.mark.parametrize("h,w", [(96, 128), (181, 321)])
def test_declared_count_allocates_the_chunk_once(h, w):
    """Peak traced allocation while decoding is one chunk's pixels (the list of frames plus its
    stack, and the crop's copy for a padded size, held two)."""
    n = 10
    payload = encode_h264_chunk(blocky(n, h, w, seed=1), fps=15.0)
    decode_h264_chunk(payload, (w, h), expected_frames=n, strict_size=True)  # warm: per-thread context
    tracemalloc.start()
    try:
        out = decode_h264_chunk(payload, (w, h), expected_frames=n, strict_size=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.3 * out.nbytes, (peak, out.nbytes)


def test_size_change_mid_chunk_and_count_errors_as_before():
    a = encode_h264_chunk(blocky(3, 96, 128), fps=15.0)
    b = encode_h264_chunk(blocky(3, 64, 96, seed=2), fps=15.0)
    with pytest.raises(CodecError, match="changes frame size mid-chunk"):
        decode_h264_chunk(a + b, (128, 96), expected_frames=6)
    with pytest.raises(CodecError, match="holds 6 frames, the message declares 7"):
        decode_h264_chunk(a + b, (128, 96), expected_frames=7)  # the count is reported first, as before
    with pytest.raises(CodecError, match="more than the 2 frames"):
        decode_h264_chunk(a, (128, 96), expected_frames=2)
    with pytest.raises(CodecError, match="holds 3 frames, the message declares 4"):
        decode_h264_chunk(a, (128, 96), expected_frames=4)
    # a declared size larger than the frames (not strict): refused, as before
    with pytest.raises(CodecError, match="smaller than 140x96"):
        decode_h264_chunk(a, (140, 96), expected_frames=3)
