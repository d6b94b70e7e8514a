"""VideoWriter converts BGR to yuv420p with OpenCV's exact BT.601 I420 conversion (as the process stage's
``encode_h264_chunk`` does), on the calling thread or on the ``convert_ahead`` helper thread, so the encoder
gets the same pictures either way and the same frames give the same file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from operators.video import VideoReader, VideoWriter
from tests.clips import sample_frames

_real_frames = sample_frames


def _write(path: Path, frames: np.ndarray, pts: np.ndarray, ahead: int) -> bytes:
    h, w = frames.shape[1:3]
    wr = VideoWriter(path, w, h, 25.0, Fraction(1, 12800), convert_ahead=ahead)
    for a in range(0, len(frames), 7):  # several writes, as veilstream redact writes chunks
        wr.write(frames[a:a + 7], pts[a:a + 7])
    wr.close()
    return path.read_bytes()


@pytest.mark.parametrize("ahead", [0, 2])
@pytest.mark.parametrize("size_wh", [(176, 144), (175, 143)])
def test_the_encoder_gets_opencvs_i420_of_each_frame(tmp_path, monkeypatch, ahead, size_wh):
    """Each picture handed to x264 is cv2's BGR -> I420 of the frame (odd sizes edge-padded first),
    already yuv420p at the coded size, so the encoder does not convert it again (swscale)."""
    frames, pts = _real_frames(6)
    w, h = size_wh
    frames = np.ascontiguousarray(frames[:, :h, :w])
    got: list[tuple[str, int, int, np.ndarray]] = []
    orig = VideoWriter._encode

    def recording(self, frame, p):
        got.append((frame.format.name, frame.width, frame.height, frame.to_ndarray()))
        orig(self, frame, p)

    monkeypatch.setattr(VideoWriter, "_encode", recording)
    _write(tmp_path / "o.mp4", frames, pts, ahead)
    assert len(got) == len(frames)
    for img, (fmt, fw, fh, yuv) in zip(frames, got):
        padded = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        assert (fmt, fw, fh) == ("yuv420p", w + w % 2, h + h % 2)
        assert np.array_equal(yuv, cv2.cvtColor(padded, cv2.COLOR_BGR2YUV_I420))


def test_limited_range_white_and_grey(tmp_path):
    """BT.601 limited range exactly: white at Y 235 (swscale's default rounding gave 234) and grey 128
    at Y 126, chroma 128."""
    frame = np.zeros((2, 16, 16, 3), np.uint8)
    frame[0] = 255
    frame[1] = 128
    w = VideoWriter(tmp_path / "o.mp4", 16, 16, 25.0, Fraction(1, 25))
    try:
        white, grey = (w._yuv_frame(img).to_ndarray() for img in frame)
    finally:
        w.abort()
    assert (white[:16] == 235).all() and (white[16:] == 128).all()
    assert (grey[:16] == 126).all() and (grey[16:] == 128).all()


@pytest.mark.parametrize("size_wh", [(176, 144), (175, 143)])
def test_convert_ahead_writes_the_same_bytes_as_converting_inline(tmp_path, size_wh):
    frames, pts = _real_frames(30)
    w, h = size_wh
    frames = np.ascontiguousarray(frames[:, :h, :w])
    inline = _write(tmp_path / "inline.mp4", frames, pts, 0)
    ahead = _write(tmp_path / "ahead.mp4", frames, pts, 2)
    again = _write(tmp_path / "again.mp4", frames, pts, 0)
    assert inline == ahead == again


def test_decoded_output_is_close_to_the_input(tmp_path):
    """The round trip (cv2's I420, x264 crf 23, FFmpeg's decoder back to BGR) keeps the picture."""
    frames, pts = _real_frames(12)
    _write(tmp_path / "o.mp4", frames, pts, 2)
    with VideoReader(tmp_path / "o.mp4") as r:
        back = np.concatenate([c.frames for c in r.chunks(64)])
    assert back.shape == frames.shape
    mse = float(np.mean((back.astype(np.float32) - frames.astype(np.float32)) ** 2))
    assert 10 * np.log10(255.0 ** 2 / mse) > 30.0
