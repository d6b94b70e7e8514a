"""`veilstream redact` overlaps decode, detect+mask and encode on threads: order, errors, early exit."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.redact_file import _prefetched


def test_items_come_in_order_and_a_producer_error_is_raised_after_them():
    def chunks():
        yield from range(5)
        raise ValueError("corrupt tail")

    got = []
    with pytest.raises(ValueError, match="corrupt tail"):
        for x in _prefetched(chunks()):
            got.append(x)
    assert got == [0, 1, 2, 3, 4]


def test_leaving_early_stops_the_decoder_thread_within_one_hand_over():
    produced = []

    def chunks():
        for i in range(1000):
            produced.append(i)
            yield i

    for x in _prefetched(chunks(), depth=1):
        if x == 2:
            break
    time.sleep(0.3)
    assert len(produced) <= 5  # at most the item in hand, the one queued and one waiting
    assert not any(t.name == "veil-decode" and t.is_alive() for t in threading.enumerate())


class _SquareFinder:
    """A detector that finds one fixed face box on every frame, and records the thread it ran on."""

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.frames = 0

    def detect(self, frames):
        from operators.types import Boxes, Label

        self.threads.add(threading.current_thread().name)
        self.frames += len(frames)
        return [Boxes.of([[8, 8, 40, 40]], [0.9], Label.FACE) for _ in frames]


def _clip(path, n: int = 23, hw: tuple[int, int] = (64, 96)):
    import numpy as np

    from operators.video import VideoWriter

    # smooth pictures (a gradient moving with the frame index): yuv420 keeps them within a level or two
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    frames = np.stack([np.dstack([(xx * 2 + 9 * i) % 256, (yy * 3) % 256, np.full(hw, 10 * i % 256)])
                       for i in range(n)]).astype(np.uint8)
    w = VideoWriter(path, hw[1], hw[0], 10.0, __import__("fractions").Fraction(1, 10), crf=0, preset="ultrafast")
    w.write(frames, np.arange(n))
    w.close()
    return frames


def test_redact_video_detects_on_this_thread_and_finishes_each_chunk_in_order(tmp_path):
    """Detection of chunk k runs here while chunk k-1 is masked and written on the finishing thread:
    the output is every chunk's `Redactor.redact`, in order, with the counts summed."""
    import numpy as np

    from operators.redactor import RedactionConfig, Redactor
    from operators.video import VideoReader
    from pipeline.redact_file import redact_video

    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _clip(src)
    det = _SquareFinder()
    red = Redactor(RedactionConfig(classes=("face",), detect_every=1), detectors={"face": det})
    summary = redact_video(red, str(src), out, chunk_seconds=0.5, progress=False)  # 5-frame chunks
    assert summary.frames == 23 and summary.fail_closed_frames == 0
    assert summary.masks_per_class == {"face": 23}
    assert det.threads == {threading.current_thread().name}
    with VideoReader(src) as r:
        chunks = list(r.chunks(5))
    want = np.concatenate([red.redact(c.frames).frames for c in chunks])
    with VideoReader(out) as r:
        got = np.concatenate([c.frames for c in r.chunks(64)])
    assert got.shape == want.shape
    # masked the same (x264 at crf 23 moves pixels a little, the mask is a flat mosaic)
    assert np.abs(got.astype(int) - want).mean() < 3


def test_a_masking_error_on_the_finishing_thread_is_raised_and_leaves_no_output(tmp_path):
    from operators.redactor import RedactionConfig, Redactor
    from pipeline.redact_file import redact_video

    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _clip(src)
    red = Redactor(RedactionConfig(classes=("face",), detect_every=1), detectors={"face": _SquareFinder()})

    def broken_finish(*a, **k):
        raise RuntimeError("mask failed")

    red.finish = broken_finish  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="mask failed"):
        redact_video(red, str(src), out, chunk_seconds=0.5, progress=False)
    assert not out.exists() and not list(tmp_path.glob("*.part.mp4"))


def test_decoded_chunks_are_whole_writable_arrays_in_order(tmp_path):
    import numpy as np

    from operators.video import VideoReader

    src = tmp_path / "in.mp4"
    frames = _clip(src)
    with VideoReader(src) as r:
        chunks = list(r.chunks(5))
    assert [len(c.frames) for c in chunks] == [5, 5, 5, 5, 3]
    assert all(c.frames.flags.writeable and c.frames.flags.c_contiguous for c in chunks)
    got = np.concatenate([c.frames for c in chunks])
    assert got.shape == frames.shape and np.abs(got.astype(int) - frames).mean() < 3  # crf 0, yuv420 rounding
    pts = np.concatenate([c.pts for c in chunks])
    assert len(pts) == 23 and (np.diff(pts) > 0).all()


def test_chunks_end_on_a_scheduled_frame(tmp_path):
    """0.6 s at 10 fps would be 6-frame chunks (frames 0, 4 and 5 detected); at detect_every 4 a
    chunk is cut to 5 frames, whose last frame is on the schedule: 23 frames -> 5+5+5+5+3, 2 each."""
    from operators.redactor import RedactionConfig, Redactor
    from pipeline.redact_file import redact_video

    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _clip(src)
    det = _SquareFinder()
    red = Redactor(RedactionConfig(classes=("face",), detect_every=4), detectors={"face": det})
    summary = redact_video(red, str(src), out, chunk_seconds=0.6, progress=False)
    assert summary.frames == 23 and summary.fail_closed_frames == 0
    assert det.frames == 10  # 6-frame chunks: 3 + 3 + 3 + 2 = 11
