"""A chunk's scheduled frames split across two detector actors of the chunk actor's node
(``ChunkActor._detect``): halves go to two detectors when the second would finish sooner, the
boxes come back in frame order, and either half failing fails the whole chunk closed."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from operators.codec import decode_h264_chunk, encode_h264_chunk
from operators.types import Boxes, Label
from pipeline.process.actors import ChunkActor, ChunkTask, Detections
from pipeline.process.plan import build_plan
from schemas.config import parse_config
from tests.fakes import FakeDetector, bare_detector_actor

N = 9  # with detect_every 1: 9 scheduled frames (odd: halves of 5 and 4)
PTS = tuple(i * 100 for i in range(N))


def numbered_boxes(frames: np.ndarray) -> Detections:
    """Each frame's box starts at the frame's own pixel value (so the merge order can be checked)."""
    return Detections([Boxes.of([[v, v, v + 20, v + 20]], [0.9], Label.FACE)
                       for v in (float(f[0, 0, 0]) for f in frames)], [], [], 0.25)


def failed_frames(frames: np.ndarray) -> Detections:
    """What DetectorActor answers when its batch raised or passed its deadline."""
    return Detections([None] * len(frames), list(range(len(frames))), ["detector: injected"], 0.1)


def counting(node: str = "n1", pending: int | None = 0, exc: BaseException | None = None, hang: bool = False,
             fail_frames: bool = False) -> FakeDetector:
    """A detector handle answering :func:`numbered_boxes` (``fail_frames``: :func:`failed_frames`);
    ``pending=None``: it cannot say its load."""
    return FakeDetector(failed_frames if fail_frames else numbered_boxes, exc=exc, hang=hang, node=node,
                        pending=pending)


def chunk_actor(*dets: FakeDetector, local: list[int] | None = None, node: str = "n1") -> ChunkActor:
    raw = {"process": {"classes": ["face"], "style": "fill", "detect_every": 1}}
    a = ChunkActor(build_plan(parse_config(raw)), list(dets), detector_timeout_s=5.0, local=local)
    a._own_node = lambda: node  # type: ignore[method-assign]
    return a


def numbered_frames(n: int = N) -> np.ndarray:
    """Frame i is filled with 10 * i (the fake detector's box starts there)."""
    return np.stack([np.full((64, 96, 3), 10 * i, np.uint8) for i in range(n)])


def detect(a: ChunkActor, frames: np.ndarray) -> Any:
    return asyncio.run(a._detect(frames, list(range(len(frames)))))


def test_two_idle_detectors_get_contiguous_halves_merged_in_frame_order():
    d0, d1 = counting(), counting()
    a = chunk_actor(d0, d1, local=[0])
    raw, failed, errors, cpu, timed_out, used = detect(a, numbered_frames())
    assert (d0.frames, d1.frames) == (5, 4) and used == [0, 1]
    assert [int(f[0, 0, 0]) for f in d0.sent[0]] == [0, 10, 20, 30, 40]  # contiguous: the carry works within each
    assert [int(f[0, 0, 0]) for f in d1.sent[0]] == [50, 60, 70, 80]
    assert [float(b.xyxy[0, 0]) for b in raw] == [10.0 * i for i in range(N)]
    assert failed == [] and errors == [] and timed_out is None and cpu == 0.5  # both halves' CPU


def test_no_split_when_the_other_detector_is_busier_than_the_whole_chunk_would_take():
    frames = numbered_frames()
    chunk_px = frames.shape[0] * frames.shape[1] * frames.shape[2]
    d0, d1 = counting(), counting(pending=chunk_px)
    a = chunk_actor(d0, d1, local=[0])
    detect(a, frames)
    assert (d0.frames, d1.frames) == (N, 0)
    d1.pending = chunk_px // 4  # less than own load + half the chunk: worth it
    detect(a, frames)
    assert (d0.frames, d1.frames) == (N + 5, 4)


def test_no_split_for_one_frame_another_node_or_unknown_loads():
    one = numbered_frames(1)
    d0, d1 = counting(), counting()
    detect(chunk_actor(d0, d1, local=[0]), one)
    assert (d0.frames, d1.frames) == (1, 0)
    far0, far1 = counting(node="n1"), counting(node="n2")  # decoded frames stay on the node
    detect(chunk_actor(far0, far1, local=[0]), numbered_frames())
    assert (far0.frames, far1.frames) == (N, 0)
    old0, old1 = counting(pending=None), counting(pending=None)  # cannot say its load
    detect(chunk_actor(old0, old1, local=[0]), numbered_frames())
    assert (old0.frames, old1.frames) == (N, 0)
    off0, off1 = counting(), counting()
    a = chunk_actor(off0, off1, local=[0])
    a.split_min_frames = 0
    detect(a, numbered_frames())
    assert (off0.frames, off1.frames) == (N, 0)


def _task(n: int = N) -> ChunkTask:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (n, 64, 96, 3), dtype=np.uint8)
    payload = encode_h264_chunk(frames, fps=10.0, pts_ms=list(PTS[:n]))
    return ChunkTask(codec="h264", payload=payload, camera_id="cam-1", fps=10.0, pts_ms=PTS[:n], width=96, height=64)


def test_either_half_failing_fails_the_whole_chunk_closed():
    for bad in (counting(exc=RuntimeError("onnx broke")), counting(hang=True),
                counting(fail_frames=True)):
        good = counting()
        for dets, bad_idx in (((good, bad), 1), ((bad, counting()), 0)):
            a = chunk_actor(*dets, local=[0])
            a.queue_timeout_s = 0.3
            res = asyncio.run(a.redact(_task()))
            assert res.failed_stage is None and not res.outage and res.detectors_used == (0, 1), res
            assert res.fail_closed_frames == tuple(range(N)), (bad.hang, bad_idx, res.fail_closed_frames)
            assert res.detector_timeout == (bad_idx if bad.hang else None)
            if bad.answer is not failed_frames:
                assert "detect" not in res.cpu_s  # a failed call counts no detection CPU
            assert all(float(f.std()) < 3.0 for f in decode_h264_chunk(res.payload))


def test_an_outage_in_either_half_retries_the_chunk():
    from ray.exceptions import ActorDiedError

    a = chunk_actor(counting(), counting(exc=ActorDiedError()), local=[0])
    res = asyncio.run(a.redact(_task()))
    assert res.outage and res.payload is None and res.failed_stage is None


def test_a_split_chunk_is_masked_like_a_whole_one(monkeypatch: pytest.MonkeyPatch):
    """The frames handed to the encoder are the same pixels split or whole (a box lost in the
    merge would leave its face unmasked in one of them).

    Compared before encoding, from one task: libx264's AVX-512 kernels do not encode identical
    frames identically (about 1 encode in 150 on an AVX-512 CPU: the last macroblocks of a frame
    get other bits; none with AVX-512 left out of its ``asm`` flags or with mbtree off), so
    neither the payloads nor a task encoded twice can be compared byte for byte.
    """
    import operators.codec as codec

    encoded: list[np.ndarray] = []

    def spy(frames: np.ndarray, *args: Any, **kwargs: Any) -> bytes:
        encoded.append(np.array(frames, copy=True))  # what the encoder is given, as it is given
        return encode_h264_chunk(frames, *args, **kwargs)

    task = _task()
    raw = decode_h264_chunk(task.payload)
    monkeypatch.setattr(codec, "encode_h264_chunk", spy)
    split = chunk_actor(counting(), counting(), local=[0])
    whole = chunk_actor(counting(), counting(node="n2"), local=[0])
    a, b = asyncio.run(split.redact(task)), asyncio.run(whole.redact(task))
    assert a.detectors_used == (0, 1) and b.detectors_used == (0,)
    assert a.fail_closed_frames == b.fail_closed_frames == () and a.masks_per_class == b.masks_per_class
    assert len(encoded) == 2 and encoded[0].shape == raw.shape
    assert np.array_equal(encoded[0], encoded[1])
    inside = [i for i, f in enumerate(raw) if int(f[0, 0, 0]) < 64]  # its own numbered box is in the 96x64 frame
    assert inside and all((encoded[0][i] != raw[i]).any() for i in inside)  # the masks were drawn
    assert decode_h264_chunk(a.payload).shape == decode_h264_chunk(b.payload).shape == raw.shape


def test_the_detector_counts_pixels_waiting_for_an_answer():
    import time

    d = bare_detector_actor(timeout_s=5.0, max_wait_s=0.0)

    def slow_run(chunks: list[np.ndarray]) -> list[Detections]:
        time.sleep(0.3)
        return [Detections([Boxes.empty()] * len(c), [], []) for c in chunks]

    d._run = slow_run  # type: ignore[method-assign]

    async def go() -> tuple[int, int]:
        call = asyncio.ensure_future(d.detect(np.zeros((3, 8, 10, 3), np.uint8)))
        await asyncio.sleep(0.1)
        during = d.pending_px()
        await call
        return during, d.pending_px()

    assert asyncio.run(go()) == (3 * 8 * 10, 0)
