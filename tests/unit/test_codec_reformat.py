"""Decoded frames to BGR through one swscale context per thread (``operators.codec.frame_to_bgr``):
the same pixels as PyAV's per-frame ``to_ndarray(format="bgr24")``, whatever came before."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import numpy as np

from operators import codec
from operators.codec import decode_h264_chunk, encode_h264_chunk, frame_to_bgr


def _yuv_frame(w: int, h: int, seed: int, *, colorspace: int | None = None, color_range: int | None = None) -> Any:
    """A random yuv420p ``av.VideoFrame`` (even size), optionally with colour tags."""
    rng = np.random.default_rng(seed)
    f = av.VideoFrame.from_ndarray(rng.integers(0, 256, (h * 3 // 2, w), dtype=np.uint8), format="yuv420p")
    if colorspace is not None:
        f.colorspace = colorspace
    if color_range is not None:
        f.color_range = color_range
    return f


def _decoded_frames(n: int, w: int, h: int, seed: int) -> list[Any]:
    """``n`` frames of an H.264 chunk as the decoder hands them out."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    frames[:, : h // 2] //= 3  # some structure besides noise
    payload = encode_h264_chunk(frames, fps=10.0)
    ctx = av.CodecContext.create("h264", "r")
    out: list[Any] = []
    for pkt in [*ctx.parse(payload), *ctx.parse(None), None]:
        out.extend(ctx.decode(pkt))
    assert len(out) == n
    return out


def test_frame_to_bgr_is_to_ndarray_bgr24_across_sizes_formats_and_colour_tags() -> None:
    # one thread, one context, inputs that change every call: swscale must re-initialise each time
    frames = [
        *_decoded_frames(3, 320, 180, 1),
        _yuv_frame(64, 36, 2),
        *_decoded_frames(2, 34, 22, 3),
        _yuv_frame(320, 180, 4, colorspace=1, color_range=2),  # BT.709, full range
        _yuv_frame(320, 180, 4),  # the same pixels untagged: other output than the tagged one
        _yuv_frame(320, 180, 4, colorspace=5, color_range=1),  # BT.601, limited
        av.VideoFrame.from_ndarray(np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8),
                                   format="rgb24"),
        *_decoded_frames(1, 1280, 720, 6),
        *_decoded_frames(2, 320, 180, 7),
    ]
    got = [frame_to_bgr(f) for f in frames]
    want = [f.to_ndarray(format="bgr24") for f in frames]
    for g, w in zip(got, want):
        assert g.dtype == np.uint8 and g.shape == w.shape
        assert np.array_equal(g, w)
    # the tags matter (so the comparison above could see a stale colour setting)
    assert not np.array_equal(got[6], got[7])
    # every array owns its pixels: later conversions did not overwrite earlier ones
    assert all(np.array_equal(frame_to_bgr(f), g) for f, g in zip(frames, got))


def test_frame_to_bgr_reuses_one_context_per_thread() -> None:
    frames = _decoded_frames(4, 160, 90, 8)
    frame_to_bgr(frames[0])
    mine = codec._REFORMAT.r
    frame_to_bgr(frames[1])
    assert codec._REFORMAT.r is mine  # reused, not one per frame

    def other(f: Any) -> tuple[int, np.ndarray]:
        arr = frame_to_bgr(f)
        return id(codec._REFORMAT.r), arr

    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(other(frames[2])[0]))
    t.start()
    t.join()
    assert seen and seen[0] != id(mine)  # another thread has its own


def test_frame_to_bgr_from_many_threads_at_once() -> None:
    frames = _decoded_frames(8, 320, 180, 9) + _decoded_frames(8, 176, 144, 10)
    want = [f.to_ndarray(format="bgr24") for f in frames]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            got = list(pool.map(frame_to_bgr, frames))
            assert all(np.array_equal(g, w) for g, w in zip(got, want))


def test_decode_h264_chunk_frames_as_before() -> None:
    rng = np.random.default_rng(11)
    frames = rng.integers(0, 256, (5, 180, 320, 3), dtype=np.uint8)
    payload = encode_h264_chunk(frames, fps=5.0)
    ctx = av.CodecContext.create("h264", "r")
    ref = [f.to_ndarray(format="bgr24") for pkt in [*ctx.parse(payload), *ctx.parse(None), None]
           for f in ctx.decode(pkt)]
    got = decode_h264_chunk(payload, (320, 180), expected_frames=5, strict_size=True)
    assert np.array_equal(got, np.stack(ref))


def test_video_reader_converts_through_frame_to_bgr_with_the_same_pixels(monkeypatch: Any) -> None:
    # veilstream redact's reader: the chunk's frames are PyAV's bgr24 pixels, converted through the
    # per-thread context (not a new swscale context per decoded frame)
    from operators import video
    from operators.video import VideoReader, sample_video

    path = sample_video()
    with av.open(str(path)) as c:
        expected = [f.to_ndarray(format="bgr24") for _, f in zip(range(12), c.decode(video=0), strict=False)]
    calls = []

    def counting(fr: Any) -> np.ndarray:
        calls.append(1)
        return frame_to_bgr(fr)

    monkeypatch.setattr(video, "frame_to_bgr", counting)
    reader = VideoReader(path)
    try:
        got = []
        for chunk in reader.chunks(5):
            got.extend(chunk.frames[: len(chunk.pts)])
            if len(got) >= 12:
                break
    finally:
        reader.close()
    assert len(calls) >= 12
    for a, b in zip(expected, got[:12], strict=True):
        assert np.array_equal(a, b)


def test_ingest_jpeg_chunks_convert_through_frame_to_bgr(monkeypatch: Any) -> None:
    from operators.video import sample_video
    from pipeline.ingest import source

    calls = []

    def counting(fr: Any) -> np.ndarray:
        calls.append(1)
        return frame_to_bgr(fr)

    monkeypatch.setattr(source, "frame_to_bgr", counting)
    with av.open(str(sample_video())) as c:
        chunks = list(zip(range(2), source.jpeg_chunks(c, "cam", 0.5, 90), strict=False))
    assert chunks and len(calls) >= 2
