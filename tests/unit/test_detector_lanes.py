"""Small frames on one-thread detector lanes (``ray.detector.small_lanes``): which chunks go
where, that each lane runs its own batch loop (a slow lane does not hold the others back; a lane
run that raises or times out fails closed only its own frames; a stop fails queued callers
closed), the layout before (``independent_lanes=False``: one batch split over the lanes, a lane's
failure fails the batch closed), that the lanes are built only on the first small frame, and that
a lane finds exactly what the all-cores sessions find on real frames."""

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


class Gate:
    """Holds a fake run whose frames include the marker pixel value until released."""

    MARK = 99

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def hold(self, chunks: list[np.ndarray]) -> bool:
        if not any(int(f[0, 0, 0]) == self.MARK for c in chunks for f in c):
            return False
        self.entered.set()
        assert self.release.wait(30.0), "the test never released the gate"
        return True


class FakeRedactor:
    """``detect_many`` that records the frame shapes and thread of each call, and answers one
    box per frame whose score is the frame's first pixel (so a result names its frame). With a
    ``gate``, a call holding a marked frame waits for the gate (then raises ``exc`` if set);
    without one, ``exc`` is raised on every call."""

    def __init__(self, name: str, exc: Exception | None = None, gate: Gate | None = None) -> None:
        self.name, self.exc, self.gate = name, exc, gate
        self.calls: list[tuple[list[tuple[int, ...]], str]] = []
        self.firsts: list[list[int]] = []  # the first pixels of each call's frames

    def detect_many(self, chunks: list[np.ndarray]) -> list[tuple[list[Boxes | None], list[int], list[str]]]:
        self.calls.append(([c.shape for c in chunks], threading.current_thread().name))
        self.firsts.append([int(f[0, 0, 0]) for c in chunks for f in c])
        held = self.gate.hold(chunks) if self.gate is not None else False
        if self.exc is not None and (held or self.gate is None):
            raise self.exc
        return [([Boxes(np.zeros((1, 4), np.float32), np.array([float(f[0, 0, 0])], np.float32),
                        np.zeros(1, np.int16)) for f in c], [], []) for c in chunks]


def fake_actor(lanes: int = 2, ready: bool = True, exc: Exception | None = None, *, independent: bool = True,
               gate: Gate | None = None, timeout_s: float = 5.0) -> DetectorActor:
    """A DetectorActor around fake redactors (its batch loops and routing are the real ones).
    Without a gate, lane 1 raises ``exc``; with one, every lane raises it on a marked frame."""
    from concurrent.futures import ThreadPoolExecutor

    d = DetectorActor.__new__(DetectorActor)
    d.max_batch_frames, d.max_wait_s, d._queue, d._loop_task, d.calls, d.batches = 64, 0.05, None, None, 0, 0
    d._pending_px, d.timeout_s, d._loop = 0, timeout_s, None
    d.redactor = FakeRedactor("main")  # type: ignore[assignment]
    d.small_side, d.small_lanes, d._fail_mode, d.lane_runs = 320, lanes, None, 0
    d.independent_lanes, d._small_queue, d._lane_tasks = independent, None, ()
    d._lanes_lock = threading.Lock()
    d._lanes = [FakeRedactor(f"lane{i}", exc if (gate is not None or i == 1) else None, gate)  # type: ignore[misc]
                for i in range(lanes)]
    d._lane_pools = [ThreadPoolExecutor(1, thread_name_prefix=f"detector-lane{i}") for i in range(lanes)]
    d._lanes_state = "ready" if ready else "wanted"
    return d


def chunk(n: int, h: int, w: int, first: int) -> np.ndarray:
    """``n`` frames of ``h`` x ``w`` whose first pixels read first, first + 1, ..."""
    f = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        f[i, 0, 0, 0] = first + i
    return f


def test_before_small_chunks_went_whole_to_the_lanes_in_parallel_and_large_ones_to_the_main_sessions():
    d = fake_actor(independent=False)
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


def test_before_a_lane_that_raised_failed_the_whole_batch_closed():
    d = fake_actor(exc=RuntimeError("lane broke"), independent=False)
    frames = [chunk(1, 180, 320, i) for i in range(4)]

    async def callers() -> list[Any]:
        return list(await asyncio.gather(*(d.detect(f) for f in frames), d.detect(chunk(2, 720, 1280, 9))))

    out = asyncio.run(callers())
    assert d.batches == 1
    for o, n in zip(out, [1, 1, 1, 1, 2]):  # every caller of the batch: every frame failed, none answered
        assert o.failed == list(range(n)) and o.boxes == [None] * n and "lane broke" in o.errors[0]


def test_before_injected_failures_reached_the_lanes_too():
    d = fake_actor(independent=False)
    d.fail_next("raise")

    async def two_batches() -> list[Any]:  # one event loop: the batch loop lives on it
        first = await d.detect(chunk(1, 180, 320, 0))
        return [first, await d.detect(chunk(1, 180, 320, 0))]

    bad, good = asyncio.run(two_batches())
    assert bad.failed == [0] and "injected" in bad.errors[0]
    assert good.failed == []  # only the next batch
    assert [len(lane.calls) for lane in d._lanes] == [0, 1]  # type: ignore[union-attr,attr-defined]


def _score(d: Any) -> list[float]:
    return [float(b.score[0]) for b in d.boxes]


def test_each_lane_runs_its_own_loop_and_a_slow_lane_does_not_hold_the_next_small_batch():
    gate = Gate()
    d = fake_actor(gate=gate)

    async def scenario() -> None:
        slow = asyncio.ensure_future(d.detect(chunk(1, 180, 320, Gate.MARK)))
        assert await asyncio.to_thread(gate.entered.wait, 10.0)  # one lane is stuck in its run
        # the next small callers: the other lane takes them and answers while the first is still busy
        nxt = await asyncio.wait_for(asyncio.gather(d.detect(chunk(1, 180, 320, 1)), d.detect(chunk(2, 144, 176, 2))),
                                     10.0)
        assert [_score(o) for o in nxt] == [[1], [2, 3]] and not slow.done()
        gate.release.set()
        assert _score(await slow) == [Gate.MARK]
        await d._stop_batch_loop()

    try:
        asyncio.run(scenario())
    finally:
        gate.release.set()
    by_lane = [lane.firsts for lane in d._lanes]  # type: ignore[union-attr,attr-defined]
    slow_lane = next(k for k, f in enumerate(by_lane) if [Gate.MARK] in f)
    assert [1, 2, 3] in by_lane[1 - slow_lane]  # a chunk is one caller: never split across lanes
    assert d.redactor.calls == [] and d.lane_runs == d.batches == 2  # type: ignore[attr-defined]


def test_a_lane_run_that_raises_fails_closed_only_its_own_frames():
    gate = Gate()
    d = fake_actor(exc=RuntimeError("lane broke"), gate=gate)

    async def scenario() -> tuple[Any, list[Any]]:
        bad = asyncio.ensure_future(d.detect(chunk(2, 180, 320, Gate.MARK)))
        assert await asyncio.to_thread(gate.entered.wait, 10.0)
        good = await asyncio.wait_for(asyncio.gather(*(d.detect(chunk(1, 180, 320, i)) for i in range(3))), 10.0)
        gate.release.set()
        out = await bad
        again = await d.detect(chunk(1, 180, 320, 7))  # both lanes go on
        await d._stop_batch_loop()
        return out, [*good, again]

    try:
        bad, good = asyncio.run(scenario())
    finally:
        gate.release.set()
    assert bad.failed == [0, 1] and bad.boxes == [None, None] and "lane broke" in bad.errors[0]
    assert [_score(o) for o in good] == [[0], [1], [2], [7]] and all(o.failed == [] for o in good)


def test_a_lane_run_past_its_deadline_fails_closed_and_the_lane_goes_on_in_a_fresh_thread():
    gate = Gate()
    d = fake_actor(gate=gate, timeout_s=0.3)
    pools = list(d._lane_pools or [])

    async def scenario() -> tuple[Any, Any]:
        stuck = await asyncio.wait_for(d.detect(chunk(1, 180, 320, Gate.MARK)), 10.0)
        # every lane answers again, the stuck one from a fresh thread
        after = await asyncio.wait_for(asyncio.gather(*(d.detect(chunk(1, 180, 320, i)) for i in range(6))), 10.0)
        await d._stop_batch_loop()
        return stuck, after

    try:
        stuck, after = asyncio.run(scenario())
    finally:
        gate.release.set()
    assert stuck.failed == [0] and "timeout" in stuck.errors[0]
    assert [_score(o) for o in after] == [[i] for i in range(6)] and all(o.failed == [] for o in after)
    replaced = [k for k, (a, b) in enumerate(zip(pools, d._lane_pools or [])) if a is not b]
    assert len(replaced) == 1  # the stuck run's lane: its thread is left behind


def test_injected_failures_reach_whichever_run_comes_next():
    d = fake_actor()

    async def runs() -> list[Any]:  # one event loop: the batch loops live on it
        d.fail_next("raise")
        out = [await d.detect(chunk(1, 180, 320, 0)), await d.detect(chunk(1, 180, 320, 1))]  # a lane's run
        d.fail_next("raise")
        out += [await d.detect(chunk(1, 720, 1280, 2)), await d.detect(chunk(1, 720, 1280, 3))]  # the main loop's
        await d._stop_batch_loop()
        return out

    bad, good, bad_large, good_large = asyncio.run(runs())
    assert bad.failed == [0] and "injected" in bad.errors[0] and good.failed == []
    assert bad_large.failed == [0] and "injected" in bad_large.errors[0] and good_large.failed == []
    assert sum(len(lane.calls) for lane in d._lanes) == 1  # type: ignore[union-attr,attr-defined]
    assert len(d.redactor.calls) == 1 and d.lane_runs == 2 and d.batches == 4  # type: ignore[attr-defined]


def test_a_stop_fails_closed_the_small_callers_queued_and_those_the_lanes_hold():
    gate = Gate()
    d = fake_actor(gate=gate)

    async def scenario() -> list[Any]:
        held = [asyncio.ensure_future(d.detect(chunk(1, 180, 320, Gate.MARK))) for _ in range(2)]
        for _ in range(200):  # both lanes stuck in a run (or collecting for one)
            await asyncio.sleep(0.01)
            if sum(len(lane.calls) for lane in d._lanes) == 2:  # type: ignore[union-attr,attr-defined]
                break
        queued = [asyncio.ensure_future(d.detect(chunk(1, 180, 320, i))) for i in range(3)]
        await asyncio.sleep(0.01)
        assert d._small_queue is not None and d._small_queue.qsize() == 3 and d.pending_px() > 0
        await d._stop_batch_loop()
        out = await asyncio.wait_for(asyncio.gather(*held, *queued), 10.0)
        assert all(t.done() for t in d._lane_tasks) and d._loop_task is not None and d._loop_task.done()
        return out

    try:
        out = asyncio.run(scenario())
    finally:
        gate.release.set()
    assert all(o.failed == [0] and o.boxes == [None] and "stopped" in o.errors[0] for o in out)
    assert d.pending_px() == 0


def test_a_caller_with_large_and_small_chunks_gets_every_answer_in_order():
    d = fake_actor()
    chunks = [chunk(1, 180, 320, 10), chunk(2, 720, 1280, 20), chunk(3, 180, 320, 30), chunk(1, 144, 176, 40),
              chunk(1, 1080, 1920, 50), chunk(1, 180, 320, 60)]

    async def callers() -> list[list[Any]]:
        out = list(await asyncio.gather(d.detect_many(chunks), d.detect_many(chunks[::-1])))
        await d._stop_batch_loop()
        return out

    first, second = asyncio.run(callers())
    want = [[10], [20, 21], [30, 31, 32], [40], [50], [60]]
    assert [_score(o) for o in first] == want and [_score(o) for o in second] == want[::-1]
    assert len(d._lane_tasks) == 2  # the small ones went through the lanes' own loops
    lanes = d._lanes or []
    assert sorted(s for c in d.redactor.calls for s in c[0]) == sorted(  # type: ignore[attr-defined]
        [(2, 720, 1280, 3), (1, 1080, 1920, 3)] * 2)
    assert sorted(s for lane in lanes for c in lane.calls for s in c[0]) == sorted(  # type: ignore[attr-defined]
        [(1, 180, 320, 3), (3, 180, 320, 3), (1, 144, 176, 3), (1, 180, 320, 3)] * 2)
    assert all(c[1].startswith("detector-lane") for lane in lanes for c in lane.calls)  # type: ignore[attr-defined]


def test_small_callers_reach_the_lanes_loops_only_once_the_lanes_are_ready(monkeypatch):
    built: list[bool] = []
    monkeypatch.setattr(DetectorActor, "_build_lanes", lambda self: built.append(True))
    d = fake_actor(ready=False)

    async def scenario() -> None:
        await d.detect(chunk(1, 180, 320, 1))  # starts the build; the main sessions serve meanwhile
        assert d._small_queue is None and len(d.redactor.calls) == 1  # type: ignore[attr-defined]
        d._lanes_state = "ready"
        await d.detect(chunk(1, 180, 320, 2))
        assert len(d._lane_tasks) == 2 and len(d.redactor.calls) == 1  # type: ignore[attr-defined]
        await d._stop_batch_loop()

    asyncio.run(scenario())
    assert built == [True] and d.lane_runs == 1


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
    got = asyncio.run(d.detect_many(chunks))  # the lanes' own loops
    assert d.lane_runs >= 1
    d.independent_lanes = False
    before = d._run(chunks)  # the layout before: one chunk per lane from the one batch
    assert d.lane_runs >= 3
    found = 0
    for (boxes, failed, _), b, o in zip(ref, got, before):
        assert failed == b.failed == o.failed == []
        for x, y, z in zip(boxes, b.boxes, o.boxes):
            assert x is not None and y is not None and z is not None
            np.testing.assert_allclose(x.xyxy, y.xyxy, atol=1e-3)
            np.testing.assert_allclose(x.score, y.score, atol=1e-5)
            assert (x.label == y.label).all()
            # the same one-thread sessions on the same frames: the same boxes either way
            np.testing.assert_array_equal(y.xyxy, z.xyxy)
            np.testing.assert_array_equal(y.score, z.score)
            found += len(x)
    assert found > 0  # something was found to compare
    one = DetectorActor(build_plan(parse_config({"process": {"classes": ["face"]},
                                                 "ray": {"detector": {"threads": 1}}})))
    assert one.small_lanes == 0 and one._lanes_state == "off"
