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


def test_frame_buffers_block_at_the_limit_reuse_what_is_given_back_and_wake_on_close():
    import numpy as np

    from operators.video import BuffersClosedError, FrameBuffers

    pool = FrameBuffers(2)
    a, b = pool.take((3, 4, 5, 3)), pool.take((3, 4, 5, 3))
    assert a is not b and pool.allocated == 2
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(pool.take((3, 4, 5, 3))))
    waiter.start()
    time.sleep(0.1)
    assert waiter.is_alive() and not got  # two out: the third take waits
    pool.give_back(a[:2])  # a view of a chunk (a short last chunk) gives back its whole array
    waiter.join(2.0)
    assert got and got[0] is a and pool.allocated == 2  # reused, not allocated
    pool.give_back(np.zeros((3, 4, 5, 3), np.uint8))  # not from this pool: ignored
    late: list[BaseException] = []

    def take_after_close() -> None:
        try:
            pool.take((3, 4, 5, 3))
        except BuffersClosedError as exc:
            late.append(exc)

    waiter = threading.Thread(target=take_after_close)
    waiter.start()
    time.sleep(0.1)
    pool.close()
    waiter.join(2.0)
    assert not waiter.is_alive() and len(late) == 1
    with pytest.raises(ValueError, match="limit"):
        FrameBuffers(0)


def test_reading_into_reused_buffers_gives_the_same_frames(tmp_path):
    import numpy as np

    from operators.video import FrameBuffers, VideoReader

    src = tmp_path / "in.mp4"
    _clip(src)
    with VideoReader(src) as r:
        fresh = [(c.frames.copy(), c.pts.copy()) for c in r.chunks(5)]
    pool = FrameBuffers(1)
    reused = []
    with VideoReader(src) as r:
        for c in r.chunks(5, pool):
            reused.append((c.frames.copy(), c.pts.copy()))
            pool.give_back(c.frames)
    assert pool.allocated == 1  # five chunks through one array
    assert len(reused) == len(fresh) == 5
    for (fa, pa), (fb, pb) in zip(fresh, reused):
        assert np.array_equal(fa, fb) and np.array_equal(pa, pb)


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_redact_video_holds_at_most_chunks_in_flight_arrays_and_writes_the_same_frames(tmp_path, monkeypatch,
                                                                                        in_flight):
    """However many chunks may be in flight, the frames handed to the encoder are the same; the
    decoder never holds more chunk arrays than allowed, even when masking and encoding are slow
    (before the pool it ran up to 2 chunks ahead of detection: 4 arrays at once), and arrays
    are reused. (The encoded file is not compared: libx264's output moved by up to 40 levels
    on a few pixels between runs of identical input frames.)"""
    import numpy as np

    import pipeline.redact_file as rf
    from operators.redactor import RedactionConfig, Redactor
    from operators.video import FrameBuffers, VideoWriter

    pools: list[FrameBuffers] = []
    peak = [0]

    class CountingBuffers(FrameBuffers):
        def __init__(self, limit: int) -> None:
            super().__init__(limit)
            pools.append(self)

        def take(self, shape):
            arr = super().take(shape)
            peak[0] = max(peak[0], len(self._out))
            return arr

    written: list[bytes] = []
    write = VideoWriter.write

    def recording_write(self, frames, pts):
        written.extend(f.tobytes() for f in frames)
        return write(self, frames, pts)

    src = tmp_path / "in.mp4"
    _clip(src, n=33)
    monkeypatch.setattr(rf, "FrameBuffers", CountingBuffers)
    monkeypatch.setattr(VideoWriter, "write", recording_write)
    red = Redactor(RedactionConfig(classes=("face",), detect_every=1), detectors={"face": _SquareFinder()})
    slow_finish = red.finish

    def finish(*a, **k):
        time.sleep(0.05)  # masking and encoding slower than detection: the decoder would run ahead
        return slow_finish(*a, **k)

    red.finish = finish  # type: ignore[method-assign]
    summary = rf.redact_video(red, str(src), tmp_path / "out.mp4", chunk_seconds=0.5, progress=False,
                              chunks_in_flight=in_flight)
    assert summary.frames == 33 and summary.masks_per_class == {"face": 33}
    assert 1 <= peak[0] <= in_flight
    assert pools[0].allocated <= in_flight  # 7 chunks through at most in_flight arrays
    got, written[:] = list(written), []

    class FreshBuffers(CountingBuffers):  # the reference: every chunk a new array, as before the pool
        def give_back(self, frames):
            super().give_back(frames)
            self._free.clear()

    monkeypatch.setattr(rf, "FrameBuffers", FreshBuffers)
    rf.redact_video(red, str(src), tmp_path / "ref.mp4", chunk_seconds=0.5, progress=False, chunks_in_flight=16)
    assert pools[1].allocated == 7
    assert len(got) == len(written) == 33
    assert got == written  # reused arrays change nothing
    assert len(set(got)) > 1 and not np.all(np.frombuffer(got[0], np.uint8) == 0)


def test_an_error_while_the_decoder_waits_for_an_array_stops_it(tmp_path):
    """Detection fails while the decoder waits for a chunk array (1 in flight): the error is
    raised, no output is left and the decoder thread is gone (woken by the pool's close)."""
    from operators.redactor import RedactionConfig, Redactor
    from pipeline.redact_file import redact_video

    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _clip(src)
    red = Redactor(RedactionConfig(classes=("face",), detect_every=1), detectors={"face": _SquareFinder()})

    def broken_detect(frames):
        time.sleep(0.1)  # the decoder is now waiting for the only array
        raise RuntimeError("detector crashed")

    red.detect = broken_detect  # type: ignore[method-assign]
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="detector crashed"):
        redact_video(red, str(src), out, chunk_seconds=0.5, progress=False, chunks_in_flight=1)
    assert time.perf_counter() - t0 < 3.0  # not the decoder join's 5 s timeout
    assert not out.exists() and not list(tmp_path.glob("*.part.mp4"))
    assert not any(t.name == "veil-decode" and t.is_alive() for t in threading.enumerate())


class _DeferredSquares:
    """A DeferredRedactor whose build waits (up to 5 s) for the decoder to have filled a chunk: a
    build that ran before decoding started would time out and fail."""

    def __init__(self, decoded: threading.Event, fail: bool = False) -> None:
        from operators.redactor import RedactionConfig

        self.config = RedactionConfig(classes=("face",), detect_every=1)
        self.decoded, self.fail = decoded, fail
        self.built_on: str | None = None
        self.saw_decoding = False

    def build(self):
        from operators.redactor import Redactor

        self.built_on = threading.current_thread().name
        self.saw_decoding = self.decoded.wait(5.0)
        if self.fail:
            raise RuntimeError("model missing")
        return Redactor(self.config, detectors={"face": _SquareFinder()})


def _deferred(monkeypatch, **kw):
    from operators.video import VideoReader
    from pipeline.redact_file import DeferredRedactor

    decoded = threading.Event()
    chunks = VideoReader.chunks

    def signalling_chunks(self, *a, **k):
        for c in chunks(self, *a, **k):
            decoded.set()
            yield c

    monkeypatch.setattr(VideoReader, "chunks", signalling_chunks)
    d = _DeferredSquares(decoded, **kw)
    monkeypatch.setattr(DeferredRedactor, "build", lambda self: d.build())
    return DeferredRedactor(d.config), d  # type: ignore[arg-type]


def test_a_deferred_redactor_is_built_on_the_finishing_thread_while_the_first_chunk_decodes(tmp_path, monkeypatch):
    import numpy as np

    from operators.redactor import RedactionConfig, Redactor
    from operators.video import VideoWriter
    from pipeline.redact_file import redact_video

    src = tmp_path / "in.mp4"
    _clip(src)
    written: list[bytes] = []
    write = VideoWriter.write

    def recording_write(self, frames, pts):
        written.extend(f.tobytes() for f in frames)
        return write(self, frames, pts)

    monkeypatch.setattr(VideoWriter, "write", recording_write)
    red = Redactor(RedactionConfig(classes=("face",), detect_every=1), detectors={"face": _SquareFinder()})
    redact_video(red, str(src), tmp_path / "ref.mp4", chunk_seconds=0.5, progress=False)
    want, written[:] = list(written), []
    deferred, d = _deferred(monkeypatch)
    summary = redact_video(deferred, str(src), tmp_path / "out.mp4", chunk_seconds=0.5, progress=False)
    assert d.saw_decoding and d.built_on is not None and d.built_on.startswith("veil-finish")
    assert summary.frames == 23 and summary.masks_per_class == {"face": 23}
    assert written == want and not np.all(np.frombuffer(want[0], np.uint8) == 0)  # the same frames masked


def test_a_deferred_build_error_is_raised_and_leaves_no_output(tmp_path, monkeypatch):
    from pipeline.redact_file import redact_video

    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _clip(src)
    deferred, _d = _deferred(monkeypatch, fail=True)
    with pytest.raises(RuntimeError, match="model missing"):
        redact_video(deferred, str(src), out, chunk_seconds=0.5, progress=False)
    assert not out.exists() and not list(tmp_path.glob("*.part.mp4"))
    assert not any(t.name == "veil-decode" and t.is_alive() for t in threading.enumerate())


def test_a_chunk_is_masked_while_the_one_before_it_is_written(tmp_path, monkeypatch):
    """The writing thread encodes chunk k-1 while the finishing thread masks chunk k (the last chunk's
    masking no longer waits for the encoder); chunks are written in order, each once."""
    import pipeline.redact_file as rf
    from operators.redactor import RedactionConfig, Redactor

    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _clip(src)
    events: list[tuple[str, int, float, float, str]] = []
    orig_write = rf.VideoWriter.write

    def slow_write(self, frames, pts):
        t = time.perf_counter()
        time.sleep(0.3)
        orig_write(self, frames, pts)
        events.append(("write", int(pts[0]), t, time.perf_counter(), threading.current_thread().name))

    monkeypatch.setattr(rf.VideoWriter, "write", slow_write)
    red = Redactor(RedactionConfig(classes=("face",), detect_every=1), detectors={"face": _SquareFinder()})
    orig_finish = red.finish

    def timed_finish(frames, raw, failed, camera_id=None, **k):
        t = time.perf_counter()
        res = orig_finish(frames, raw, failed, camera_id, **k)
        events.append(("mask", len(frames), t, time.perf_counter(), threading.current_thread().name))
        return res

    red.finish = timed_finish  # type: ignore[method-assign]
    summary = rf.redact_video(red, str(src), out, chunk_seconds=0.5, progress=False)  # 5+5+5+5+3 frames
    assert summary.frames == 23
    writes = [e for e in events if e[0] == "write"]
    masks = [e for e in events if e[0] == "mask"]
    assert [w[1] for w in writes] == sorted(w[1] for w in writes) and len(writes) == len(masks) == 5
    assert all(w[4].startswith("veil-write") for w in writes) and all(m[4].startswith("veil-finish") for m in masks)
    last_mask, previous_write = masks[-1], writes[-2]
    assert last_mask[2] < previous_write[3]  # masked before the chunk before it was written
    assert summary.wait_finish_seconds >= 0


def test_a_write_error_is_raised_and_leaves_no_output(tmp_path, monkeypatch):
    import pipeline.redact_file as rf
    from operators.redactor import RedactionConfig, Redactor

    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _clip(src)
    calls = []
    orig_write = rf.VideoWriter.write

    def failing_write(self, frames, pts):
        calls.append(1)
        if len(calls) == 1:  # the first chunk's, late: its array is one the decoder needs next
            time.sleep(0.3)
            raise OSError(28, "No space left on device")
        orig_write(self, frames, pts)

    monkeypatch.setattr(rf.VideoWriter, "write", failing_write)
    red = Redactor(RedactionConfig(classes=("face",), detect_every=1), detectors={"face": _SquareFinder()})
    done: list[BaseException] = []

    def run() -> None:
        try:
            rf.redact_video(red, str(src), out, chunk_seconds=0.5, progress=False)
        except BaseException as exc:  # noqa: BLE001 - checked below
            done.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive(), "redact_video hung after a write error"
    assert len(done) == 1 and isinstance(done[0], OSError) and "No space" in str(done[0])
    assert not out.exists() and not list(tmp_path.glob("*.part.mp4"))
    # the writer was abandoned, not left open: no idle conversion thread behind the error
    assert not any(t.name.startswith("veil-yuv") and t.is_alive() for t in threading.enumerate())
