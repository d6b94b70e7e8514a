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
