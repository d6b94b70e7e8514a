"""libx264's partition search: ``partitions=i4x4`` in the process stage's chunks and in VideoWriter's MP4s,
read back from the options string x264 writes into every stream (its SEI user data)."""

from __future__ import annotations

import re
from fractions import Fraction

import numpy as np

from operators.codec import encode_h264_chunk
from operators.video import VideoWriter


def _x264_options(data: bytes) -> dict[str, str]:
    m = re.search(rb"x264 - core \d+ .*? - options: ([^\x00\x80]*)", data, re.S)
    assert m is not None, "no x264 options SEI in the stream"
    return dict(kv.split("=", 1) for kv in m.group(1).decode("ascii", "replace").split() if "=" in kv)


def _frames(n: int, h: int = 64, w: int = 96) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_stage_chunks_search_intra_4x4_only_in_p_frames():
    """veryfast's analyse is 0x3:0x113 (I: i4x4+i8x8; P: i4x4+i8x8+p8x8+b8x8); with partitions=i4x4
    P-frames search i4x4 (0x1) only, I-frames keep both intra sizes and 8x8 transforms stay."""
    opts = _x264_options(encode_h264_chunk(_frames(3), fps=25.0))
    assert opts["analyse"] == "0x3:0x1"
    assert opts["8x8dct"] == "1"
    # the chunk's own GOP settings are untouched
    assert (opts["bframes"], opts["keyint"], opts["scenecut"]) == ("0", "3", "0")


def test_video_writer_searches_intra_4x4_only_and_keeps_its_gop(tmp_path):
    frames = _frames(4)
    w = VideoWriter(tmp_path / "o.mp4", 96, 64, 25.0, Fraction(1, 25))
    w.write(frames, np.arange(4))
    w.close()
    opts = _x264_options((tmp_path / "o.mp4").read_bytes())
    assert opts["analyse"] == "0x3:0x1"
    assert opts["8x8dct"] == "1"
    # VideoWriter's own GOP and B-frames (libx264's defaults with veryfast), not the stage's
    assert (opts["bframes"], opts["keyint"]) == ("3", "250")
    assert opts["crf"].startswith("23")


def test_partitions_none_is_the_presets_own_search_and_bad_values_are_refused():
    import pytest

    from operators.codec import CodecError

    opts = _x264_options(encode_h264_chunk(_frames(3), fps=25.0, partitions=None))
    assert opts["analyse"] == "0x3:0x113"  # veryfast's own
    for bad in ("i4x4", "partitions=i4x4:ref=9", 3):
        with pytest.raises(CodecError, match="partitions"):
            encode_h264_chunk(_frames(2), fps=25.0, partitions=bad)  # type: ignore[arg-type]


def test_eval_clips_stand_in_for_a_camera_not_for_the_stage_encoder(monkeypatch):
    """The video eval's clips keep the camera stand-in's encoder (veryfast's own partition search)
    whatever the stage's encoder is tuned to: the same pictures in, the same clip out."""
    from operators import codec, evalvideo

    seen: list[object] = []
    real = codec.encode_h264_chunk

    def spy(f, **kw):
        seen.append(kw.get("partitions", "default"))
        return real(f, **kw)

    monkeypatch.setattr(codec, "encode_h264_chunk", spy)
    frames = _frames(4)
    out = evalvideo.h264_roundtrip(frames)
    assert seen == [None]
    data = real(frames, fps=evalvideo.CLIP_FPS, partitions=None)
    assert np.array_equal(out, codec.decode_h264_chunk(data, (96, 64), expected_frames=4))
    assert _x264_options(data)["analyse"] == "0x3:0x113"
