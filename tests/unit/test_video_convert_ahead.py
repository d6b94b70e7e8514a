"""VideoWriter(convert_ahead=N): the BGR -> yuv420p conversion on a helper thread beside x264 hands the
encoder the same pictures at the same timestamps, never reads a chunk after ``write`` returns, and
``veilstream redact`` uses it."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from operators.video import VideoWriter
from tests.clips import sample_frames

_real_frames = sample_frames


def _write(path: Path, frames: np.ndarray, pts: np.ndarray, ahead: int, splits: tuple[int, ...]) -> bytes:
    h, w = frames.shape[1:3]
    wr = VideoWriter(path, w, h, 25.0, Fraction(1, 12800), convert_ahead=ahead)
    bounds = [0, *splits, len(frames)]
    for a, b in zip(bounds, bounds[1:]):
        wr.write(frames[a:b], pts[a:b])
    wr.close()
    return path.read_bytes()


@pytest.mark.parametrize("ahead", [1, 2, 5])
def test_the_encoder_gets_the_same_pictures_and_timestamps(tmp_path, monkeypatch, ahead):
    """What x264 receives: with convert_ahead the same yuv420p pictures as without, in order, at the
    same timestamps. (Files are compared byte for byte in tests/unit/test_video_writer_i420.py.)"""
    got: dict[int, list[tuple[bytes, int]]] = {0: [], ahead: []}
    orig = VideoWriter._encode

    def recording(self, frame, p):
        orig(self, frame, p)
        if frame.format.name == "bgr24":  # the encoder converts it: as it does
            frame = frame.reformat(self._enc_w, self._enc_h, "yuv420p",
                                   threads=self._stream.codec_context.thread_count)
        got[self.convert_ahead].append((frame.to_ndarray().tobytes(), int(frame.pts)))

    monkeypatch.setattr(VideoWriter, "_encode", recording)
    frames, pts = _real_frames()
    pts = pts.copy()
    pts[7] = pts[6]  # a repeated timestamp is moved one unit on, on both paths
    splits = (1, 2, 11, 12)  # a one-frame write, an empty-ahead tail of a write, several calls
    _write(tmp_path / "self.mp4", frames, pts, 0, splits)
    _write(tmp_path / "ahead.mp4", frames, pts, ahead, splits)
    assert len(got[0]) == len(frames) == 30
    assert got[ahead] == got[0]
    assert got[0][7][1] == got[0][6][1] + 1


def test_an_odd_sized_frame_is_padded_and_converted_as_the_encoder_does(tmp_path):
    """Odd sizes are padded by one pixel first, then converted by OpenCV's BT.601 I420 (since session
    12; swscale before: tests/unit/test_video_writer_i420.py)."""
    import cv2

    frames, _ = _real_frames(3)
    odd = np.ascontiguousarray(frames[:, :143, :175])
    w = VideoWriter(tmp_path / "o.mp4", 175, 143, 25.0, Fraction(1, 12800), convert_ahead=1)
    for img in odd:
        got = w._yuv_frame(img)
        padded = np.pad(img, ((0, 1), (0, 1), (0, 0)), mode="edge")
        want = cv2.cvtColor(padded, cv2.COLOR_BGR2YUV_I420)
        assert (got.width, got.height, got.format.name) == (176, 144, "yuv420p")
        assert np.array_equal(got.to_ndarray(), want)
    w.close()


def test_frames_are_converted_on_the_helper_thread(tmp_path, monkeypatch):
    frames, pts = _real_frames(6)
    seen: list[str] = []
    orig = VideoWriter._yuv_frame

    def recording(self, img):
        seen.append(threading.current_thread().name)
        return orig(self, img)

    monkeypatch.setattr(VideoWriter, "_yuv_frame", recording)
    w = VideoWriter(tmp_path / "o.mp4", frames.shape[2], frames.shape[1], 25.0, Fraction(1, 12800), convert_ahead=2)
    w.write(frames, pts)
    w.close()
    assert len(seen) == 6 and all(n.startswith("veil-yuv") for n in seen)
    assert not any(t.name.startswith("veil-yuv") and t.is_alive() for t in threading.enumerate())


def test_overwriting_the_chunk_after_write_returns_does_not_change_the_output(tmp_path, monkeypatch):
    """``veilstream redact`` hands the chunk's array back to the decoder once written."""
    frames, pts = _real_frames(12)
    pictures: list[bytes] = []
    orig_encode = VideoWriter._encode

    def recording(self, frame, p):
        orig_encode(self, frame, p)
        pictures.append(frame.to_ndarray().tobytes())

    monkeypatch.setattr(VideoWriter, "_encode", recording)
    orig = VideoWriter._yuv_frame

    def slow(self, img):
        time.sleep(0.01)  # conversions lag the encoder: only waiting for them keeps this right
        return orig(self, img)

    monkeypatch.setattr(VideoWriter, "_yuv_frame", slow)
    buf = frames.copy()
    w = VideoWriter(tmp_path / "got.mp4", frames.shape[2], frames.shape[1], 25.0, Fraction(1, 12800), convert_ahead=4)
    w.write(buf[:6], pts[:6])
    buf[:6] = 0
    buf[6:] = frames[6:]
    w.write(buf[6:], pts[6:])
    buf[:] = 255
    w.close()
    want = [orig(w, img).to_ndarray().tobytes() for img in frames]
    assert len(pictures) == 12 and pictures == want


def test_an_encoder_error_leaves_no_conversion_running(tmp_path, monkeypatch):
    frames, pts = _real_frames(10)
    running = []
    done = []
    orig_yuv, orig_encode = VideoWriter._yuv_frame, VideoWriter._encode

    def slow(self, img):
        running.append(1)
        time.sleep(0.02)
        out = orig_yuv(self, img)
        done.append(1)
        return out

    def failing(self, frame, p):
        if self.frames_written == 3:
            raise RuntimeError("encoder failed")
        orig_encode(self, frame, p)

    monkeypatch.setattr(VideoWriter, "_yuv_frame", slow)
    monkeypatch.setattr(VideoWriter, "_encode", failing)
    w = VideoWriter(tmp_path / "o.mp4", frames.shape[2], frames.shape[1], 25.0, Fraction(1, 12800), convert_ahead=3)
    with pytest.raises(RuntimeError, match="encoder failed"):
        w.write(frames, pts)
    assert len(done) == len(running) < len(frames)  # none left reading ``frames``; the rest never started


@pytest.mark.parametrize("bad", [-1, True, 1.5, "2"])
def test_convert_ahead_must_be_a_count(tmp_path, bad):
    with pytest.raises(ValueError, match="convert_ahead must be an integer >= 0"):
        VideoWriter(tmp_path / "o.mp4", 64, 48, 25.0, Fraction(1, 25), convert_ahead=bad)


def test_veilstream_redact_converts_ahead_of_the_encoder(tmp_path, monkeypatch):
    """The redact path's writer converts on the helper thread, and its output is the same file as the
    encoder converting itself."""
    import pipeline.redact_file as rf
    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Boxes, Label

    class Finder:
        def detect(self, frames):
            return [Boxes.of([[8, 8, 40, 40]], [0.9], Label.FACE) for _ in frames]

    frames, pts = _real_frames(20)
    src = tmp_path / "in.mp4"
    _write(src, frames, pts, 0, ())
    built: list[int] = []

    class Recording(VideoWriter):
        def __post_init__(self) -> None:
            built.append(self.convert_ahead)
            super().__post_init__()

    class SelfConverting(Recording):
        def __post_init__(self) -> None:
            self.convert_ahead = 0
            super().__post_init__()

    pictures: dict[int, list[bytes]] = {}
    orig_encode = VideoWriter._encode

    def recording(self, frame, p):
        orig_encode(self, frame, p)
        if frame.format.name == "bgr24":
            frame = frame.reformat(self._enc_w, self._enc_h, "yuv420p",
                                   threads=self._stream.codec_context.thread_count)
        pictures.setdefault(self.convert_ahead, []).append(frame.to_ndarray().tobytes())

    monkeypatch.setattr(VideoWriter, "_encode", recording)
    for cls in (Recording, SelfConverting):
        monkeypatch.setattr(rf, "VideoWriter", cls)
        red = Redactor(RedactionConfig(classes=("face",), detect_every=1), detectors={"face": Finder()})
        rf.redact_video(red, str(src), tmp_path / f"out_{cls.__name__}.mp4", chunk_seconds=0.3, progress=False)
    assert built[0] >= 1 and built[1] == 0  # the redact path's own choice
    assert len(pictures[built[0]]) == 20 and pictures[built[0]] == pictures[0]


def test_abort_stops_the_conversion_thread_and_never_raises(tmp_path):
    frames, pts = _real_frames(4)
    w = VideoWriter(tmp_path / "o.mp4", frames.shape[2], frames.shape[1], 25.0, Fraction(1, 12800), convert_ahead=2)
    w.write(frames, pts)
    w.abort()
    assert not any(t.name.startswith("veil-yuv") and t.is_alive() for t in threading.enumerate())
    w.abort()  # twice: still quiet
    plain = VideoWriter(tmp_path / "p.mp4", frames.shape[2], frames.shape[1], 25.0, Fraction(1, 12800))
    plain.abort()  # no conversion thread at all
