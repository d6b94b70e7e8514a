"""``veilstream eval --as-video`` detects a clip as the process stage does: only the scheduled
frames, as one batch (so the full-frame text pass cadence and the plate carry span scheduled
frames, not every frame of the clip)."""

from __future__ import annotations

from typing import Any

import numpy as np

from operators.evalvideo import detect_as_scheduled
from operators.redactor import text_full_sources
from operators.temporal import detection_schedule
from operators.types import Boxes


class _Recorder:
    """A detecting redactor stand-in: one box per frame, tagged by the frame's first pixel."""

    def __init__(self, fail: tuple[int, ...] = ()) -> None:
        self.batches: list[np.ndarray] = []
        self.fail = fail

    def detect_many(self, chunks: list[np.ndarray]) -> list[tuple[list[Any], list[int], list[str]]]:
        assert len(chunks) == 1
        batch = chunks[0]
        self.batches.append(batch.copy())
        raw = [Boxes(np.array([[0, 0, 4, 4]], np.float32), np.array([float(f[0, 0, 0])], np.float32),
                     np.array([0], np.int64)) for f in batch]
        return [(raw, [i for i in self.fail if i < len(batch)], ["boom"] if self.fail else [])]


def _clip(n: int) -> np.ndarray:
    frames = np.zeros((n, 8, 8, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(n)
    return frames


def test_only_the_scheduled_frames_go_to_the_detector_as_one_batch() -> None:
    frames = _clip(25)
    for every in (1, 4, 8):
        rec = _Recorder()
        raw, failed = detect_as_scheduled(rec, frames, every)
        sched = detection_schedule(len(frames), every)
        idx = [i for i, s in enumerate(sched) if s]
        assert len(rec.batches) == 1
        assert rec.batches[0][:, 0, 0, 0].tolist() == idx  # scheduled frames, in order, nothing else
        assert failed == []
        for i, b in enumerate(raw):
            if sched[i]:
                assert b is not None and float(b.score[0]) == i  # each frame gets its own boxes back
            else:
                assert b is None


def test_failed_frames_come_back_as_clip_indices() -> None:
    rec = _Recorder(fail=(1, 3))
    raw, failed = detect_as_scheduled(rec, _clip(25), 4)  # scheduled 0 4 8 12 16 20 24
    assert failed == [4, 12]


def test_the_full_text_pass_cadence_counts_scheduled_frames() -> None:
    # what the stage's detector computes for a batch of the 7 scheduled frames of a 25-frame
    # clip at every 4th: the full pass on every 2nd *scheduled* frame (0, 8, 16, 24), not on
    # every scheduled frame as when all 25 frames were detected in one batch (0, 2, 4, ... )
    idx = [i for i, s in enumerate(detection_schedule(25, 4)) if s]
    own = [idx[p] for p in text_full_sources(len(idx), 2)]
    full = sorted({i for i, src in zip(idx, own) if i == src})
    assert full == [0, 8, 16, 24]
    old = text_full_sources(25, 2)
    assert all(old[i] == i for i in idx)  # the old single pass gave every scheduled frame its own pass


def test_h264_roundtrip_uses_the_stage_encoder_in_memory_and_keeps_the_picture(monkeypatch: Any) -> None:
    # the clip goes through the process stage's encoder (OpenCV's BGR -> I420, one bitstream for
    # the same frames in every run), not VideoWriter's swscale path (another bitstream now and then)
    from operators import codec
    from operators.evalvideo import clip_from_image, h264_roundtrip

    rng = np.random.default_rng(3)
    img = cv2_blur(rng.integers(0, 256, (120, 162, 3), dtype=np.uint8))
    frames, _ = clip_from_image(img, n=6)
    calls: list[int] = []
    real = codec.encode_h264_chunk

    def counting(f: np.ndarray, **kw: Any) -> bytes:
        calls.append(len(f))
        return real(f, **kw)

    monkeypatch.setattr(codec, "encode_h264_chunk", counting)
    out = h264_roundtrip(frames)
    assert calls == [6]
    assert out.shape == frames.shape and out.dtype == np.uint8
    mse = float(np.mean((out.astype(np.float64) - frames.astype(np.float64)) ** 2))
    assert 10 * np.log10(255.0 ** 2 / max(mse, 1e-9)) > 30.0
    assert np.array_equal(h264_roundtrip(frames), out)  # the same clip again


def cv2_blur(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (9, 9), 3.0)
