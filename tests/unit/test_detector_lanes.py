"""Small frames on one-thread detector lanes (``ray.detector.small_lanes``): which chunks go
where, that a lane's failure fails the batch closed, that the lanes are built only on the first
small frame, and that a lane finds exactly what the all-cores sessions find on real frames."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import cv2
import numpy as np
import pytest

from operators.types import Boxes
from operators.video import read_image
from pipeline.process.actors import DetectorActor, lane_groups
from pipeline.process.plan import build_plan
from schemas.config import parse_config
from schemas.errors import ConfigError
from tests.shared import EVAL


@pytest.mark.parametrize("sizes, lanes, want", [
    ([], 2, [[], []]),
    ([1], 2, [[], [0]]),
    ([1, 1], 2, [[0], [1]]),
    ([1] * 8, 2, [[0, 1, 2, 3], [4, 5, 6, 7]]),
    ([1] * 5, 2, [[0, 1], [2, 3, 4]]),
    ([6, 1, 1], 2, [[0], [1, 2]]),  # a chunk is never cut
    ([1, 1, 1], 1, [[0, 1, 2]]),
    ([2, 2, 2, 2, 2, 2], 3, [[0, 1], [2, 3], [4, 5]]),
])
def test_lane_groups_split_chunks_whole_and_in_order(sizes, lanes, want):
    got = lane_groups(sizes, lanes)
    assert got == want
    assert sorted(i for g in got for i in g) == list(range(len(sizes)))


def test_lane_groups_need_a_lane():
    with pytest.raises(ValueError, match="lanes"):
        lane_groups([1], 0)


def test_small_lanes_is_a_config_key():
    assert parse_config({}).ray.detector.small_lanes == 2
    assert parse_config({"ray": {"detector": {"small_lanes": 0}}}).ray.detector.small_lanes == 0
    with pytest.raises(ConfigError, match="small_lanes"):
        parse_config({"ray": {"detector": {"small_lanes": -1}}})


class FakeRedactor:
    """``detect_many`` that records the frame shapes and thread of each call, and answers one
    box per frame whose score is the frame's first pixel (so a result names its frame)."""

    def __init__(self, name: str, exc: Exception | None = None) -> None:
        self.name, self.exc = name, exc
        self.calls: list[tuple[list[tuple[int, ...]], str]] = []

    def detect_many(self, chunks: list[np.ndarray]) -> list[tuple[list[Boxes | None], list[int], list[str]]]:
        self.calls.append(([c.shape for c in chunks], threading.current_thread().name))
        if self.exc is not None:
            raise self.exc
        return [([Boxes(np.zeros((1, 4), np.float32), np.array([float(f[0, 0, 0])], np.float32),
                        np.zeros(1, np.int16)) for f in c], [], []) for c in chunks]


def fake_actor(lanes: int = 2, ready: bool = True, exc: Exception | None = None) -> DetectorActor:
    """A DetectorActor around fake redactors (its batch loop and routing are the real ones)."""
    from concurrent.futures import ThreadPoolExecutor

    d = DetectorActor.__new__(DetectorActor)
    d.max_batch_frames, d.max_wait_s, d._queue, d._loop_task, d.calls, d.batches = 64, 0.05, None, None, 0, 0
    d._pending_px, d.timeout_s = 0, 5.0
    d.redactor = FakeRedactor("main")  # type: ignore[assignment]
    d.small_side, d.small_lanes, d._fail_mode, d.lane_runs = 320, lanes, None, 0
    d._lanes_lock = threading.Lock()
    d._lanes = [FakeRedactor(f"lane{i}", exc if i == 1 else None) for i in range(lanes)]  # type: ignore[misc]
    d._lane_pool = ThreadPoolExecutor(max_workers=max(1, lanes), thread_name_prefix="detector-lane")
    d._lanes_state = "ready" if ready else "wanted"
    return d


def chunk(n: int, h: int, w: int, first: int) -> np.ndarray:
    """``n`` frames of ``h`` x ``w`` whose first pixels read first, first + 1, ..."""
    f = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        f[i, 0, 0, 0] = first + i
    return f


def test_small_chunks_go_whole_to_the_lanes_in_parallel_and_large_ones_to_the_main_sessions():
    d = fake_actor()
    chunks = [chunk(1, 180, 320, 10), chunk(2, 720, 1280, 20), chunk(1, 180, 320, 30), chunk(1, 144, 176, 40),
              chunk(1, 180, 320, 50)]
    out = d._run(chunks)
    # every frame's answer comes back to its own chunk, in order
    assert [[float(b.score[0]) for b in o.boxes] for o in out] == [[10], [20, 21], [30], [40], [50]]
    main, lane0, lane1 = d.redactor, d._lanes[0], d._lanes[1]  # type: ignore[index]
    assert main.calls[0][0] == [(2, 720, 1280, 3)]  # type: ignore[attr-defined]
    assert lane0.calls[0][0] == [(1, 180, 320, 3), (1, 180, 320, 3)]  # type: ignore[attr-defined]
    assert lane1.calls[0][0] == [(1, 144, 176, 3), (1, 180, 320, 3)]  # type: ignore[attr-defined]
    assert all(c[1].startswith("detector-lane") for c in lane0.calls + lane1.calls)  # type: ignore[attr-defined]
    assert d.lane_runs == 2
    assert all(o.cpu_s >= 0 for o in out)


def test_without_lanes_or_before_they_are_ready_every_chunk_goes_to_the_main_sessions(monkeypatch):
    built: list[bool] = []
    monkeypatch.setattr(DetectorActor, "_build_lanes", lambda self: built.append(True))
    d = fake_actor(ready=False)
    chunks = [chunk(1, 180, 320, 1), chunk(1, 180, 320, 2)]
    d._run(chunks)
    assert d.redactor.calls[0][0] == [(1, 180, 320, 3)] * 2  # type: ignore[attr-defined]
    for _ in range(50):  # the build started in its own thread, once
        if built:
            break
        time.sleep(0.01)
    assert built == [True] and d._lanes_state == "building"
    d._run(chunks)  # still building: still the main sessions, no second build
    assert len(d.redactor.calls) == 2 and built == [True]  # type: ignore[attr-defined]

    off = fake_actor(lanes=0, ready=False)
    off._lanes_state = "off"
    off._run(chunks)
    assert len(off.redactor.calls) == 1 and off._lanes_state == "off"  # type: ignore[attr-defined]
    # only large frames: the lanes are not even built
    big = fake_actor(ready=False)
    big._run([chunk(1, 720, 1280, 0)])
    assert big._lanes_state == "wanted"


def test_a_lane_that_raises_fails_the_whole_batch_closed():
    d = fake_actor(exc=RuntimeError("lane broke"))
    frames = [chunk(1, 180, 320, i) for i in range(4)]

    async def callers() -> list[Any]:
        return list(await asyncio.gather(*(d.detect(f) for f in frames), d.detect(chunk(2, 720, 1280, 9))))

    out = asyncio.run(callers())
    assert d.batches == 1
    for o, n in zip(out, [1, 1, 1, 1, 2]):  # every caller of the batch: every frame failed, none answered
        assert o.failed == list(range(n)) and o.boxes == [None] * n and "lane broke" in o.errors[0]


def test_injected_failures_reach_the_lanes_too():
    d = fake_actor()
    d.fail_next("raise")

    async def two_batches() -> list[Any]:  # one event loop: the batch loop lives on it
        first = await d.detect(chunk(1, 180, 320, 0))
        return [first, await d.detect(chunk(1, 180, 320, 0))]

    bad, good = asyncio.run(two_batches())
    assert bad.failed == [0] and "injected" in bad.errors[0]
    assert good.failed == []  # only the next batch
    assert [len(lane.calls) for lane in d._lanes] == [0, 1]  # type: ignore[union-attr,attr-defined]


def _small_frames() -> np.ndarray:
    paths = [EVAL / "plates_eu" / "eu1.jpg", EVAL / "faces_dlib" / "2008_002470.jpg"]
    missing = [str(p) for p in paths if not p.is_file()]
    assert not missing, f"eval images missing: {missing} (set VEILSTREAM_EVAL_DIR or link ../shared)"
    return np.stack([cv2.resize(read_image(p), (320, 180), interpolation=cv2.INTER_AREA) for p in paths])


def test_real_lanes_find_what_the_all_cores_sessions_find_and_only_where_threads_is_null():
    cfg = parse_config({"process": {"classes": ["face", "plate"]}})
    d = DetectorActor(build_plan(cfg))
    assert d.small_lanes == 2 and d._lanes_state == "wanted"  # this machine has >= 2 cores
    frames = _small_frames()
    chunks = [frames[i:i + 1] for i in range(len(frames))]
    ref = [d.redactor.detect_many([c])[0] for c in chunks]  # the all-cores sessions, a chunk a call
    d._run(chunks)  # starts the build
    for _ in range(600):
        if d._lanes_state != "building":
            break
        time.sleep(0.1)
    assert d._lanes_state == "ready"
    got = d._run(chunks)  # one chunk per lane
    assert d.lane_runs == 2
    found = 0
    for (boxes, failed, _), b in zip(ref, got):
        assert failed == b.failed == []
        for x, y in zip(boxes, b.boxes):
            assert x is not None and y is not None
            np.testing.assert_allclose(x.xyxy, y.xyxy, atol=1e-3)
            np.testing.assert_allclose(x.score, y.score, atol=1e-5)
            assert (x.label == y.label).all()
            found += len(x)
    assert found > 0  # something was found to compare
    one = DetectorActor(build_plan(parse_config({"process": {"classes": ["face"]},
                                                 "ray": {"detector": {"threads": 1}}})))
    assert one.small_lanes == 0 and one._lanes_state == "off"
