"""Several small chunks per chunk-actor call (issue 19 item 3): the driver packs the chunks one poll
hands it (``plan_batches``), the chunk actor redacts them in one call with one detector call
(``ChunkActor.redact_many``), and every chunk keeps its own result, DLQ decision and offset."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from operators.codec import decode_h264_chunk, encode_h264_chunk
from operators.types import Boxes, Label
from pipeline.process.actors import (
    ChunkActor,
    ChunkResult,
    ChunkStage,
    ChunkTask,
    Detections,
)
from pipeline.process.batching import BatchLimits, plan_batches, task_pixels
from pipeline.process.plan import build_plan
from pipeline.process.worker import ProcessWorker
from pipeline.runtime import Record, run_until_idle
from schemas.config import parse_config
from schemas.messages import decode_chunk_redacted
from tests.fakes import (
    RAW,
    FakeDetector,
    FakeRay,
    bare_detector_actor,
    process_stage,
    raw_chunk,
    redacted,
)

SMALL = 320 * 180
BATCH = BatchLimits(8, 10**6)


# ---------------------------------------------------------------- plan_batches
@pytest.mark.parametrize("pixels, limits, workers, want", [
    ([], BatchLimits(8, 10**6), 2, []),
    ([SMALL], BatchLimits(8, 10**6), 2, [[0]]),
    # one per call when batching is off
    ([SMALL] * 3, BatchLimits(1, 10**6), 1, [[0], [1], [2]]),
    # 12 waiting for 2 actors: 6 each, not 8 + 4
    ([SMALL] * 12, BatchLimits(8, 10**7), 2, [list(range(6)), list(range(6, 12))]),
    # the chunk cap binds
    ([SMALL] * 10, BatchLimits(4, 10**7), 1, [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]),
    # the pixel cap binds (3 small chunks fit in 200 000 px)
    ([SMALL] * 5, BatchLimits(8, 200_000), 1, [[0, 1, 2], [3, 4]]),
    # a large chunk (at the cap or over) goes alone; small ones around it still share
    ([SMALL, 27_648_000, SMALL, 200_000], BatchLimits(8, 200_000), 1, [[0, 2], [1], [3]]),
])
def test_plan_batches(pixels: list[int], limits: BatchLimits, workers: int, want: list[list[int]]) -> None:
    assert plan_batches(pixels, limits, workers) == want


def test_chunks_in_flight_count_as_busy_actors() -> None:
    # a backlog: the actors have work; the chunks a poll brings go as one full batch
    assert plan_batches([SMALL] * 8, BatchLimits(8, 10**7), workers=2, inflight=24) == [list(range(8))]
    # 3 actors, one chunk in flight: 2 idle actors, 2 batches
    assert plan_batches([SMALL] * 4, BatchLimits(8, 10**7), workers=3, inflight=1) == [[0, 1], [2, 3]]


def test_every_chunk_is_in_exactly_one_batch_within_the_limits() -> None:
    rng = random.Random(7)
    for _ in range(300):
        pixels = [rng.choice([SMALL, 176 * 144, 640 * 272 * 30, 1280 * 720, 1]) for _ in range(rng.randint(0, 40))]
        limits = BatchLimits(rng.randint(1, 9), rng.choice([100_000, 1_000_000, 2_000_000]))
        got = plan_batches(pixels, limits, rng.randint(1, 4), rng.randint(0, 40))
        assert sorted(i for b in got for i in b) == list(range(len(pixels)))
        for b in got:
            assert len(b) == 1 or (len(b) <= limits.max_chunks and sum(pixels[i] for i in b) <= limits.max_pixels)
            assert b == sorted(b)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="batch limits must be >= 1"):
        BatchLimits(0, 10)
    assert task_pixels(2, 320, 180) == 2 * SMALL and task_pixels(1, 0, 0) == 1


# ---------------------------------------------------------------- the handler
def test_the_chunks_of_one_poll_go_to_ray_in_batches_and_come_out_one_message_each_in_order() -> None:
    ray = FakeRay(redacted)
    st = process_stage(ray, [raw_chunk(i) for i in range(6)], batch=BATCH, workers=2)
    run_until_idle(st.rt)
    assert ray.calls == [[0, 1, 2], [3, 4, 5]]  # 2 calls for 6 chunks, one per chunk actor
    out = [decode_chunk_redacted(p.value, p.headers) for p in st.sink.on(st.cfg.kafka.topics.redacted)]
    assert [c.chunk_seq for c in out] == list(range(6))
    assert st.source.committed() == {(RAW, 0): 6} and st.handler.produced == 6


def test_one_bad_chunk_of_a_batch_is_dead_lettered_alone_and_an_outage_retries_only_its_chunk() -> None:
    from ray.exceptions import RayActorError

    outages = [1]

    def answer(task: ChunkTask) -> Any:
        seq = task.pts_ms[0] // 1000
        if seq == 1:
            return ChunkResult(ChunkStage.DECODE, "decode failed: bad jpeg")
        if seq == 2 and outages[0]:
            outages[0] -= 1
            return RayActorError()
        return redacted(task)

    ray = FakeRay(answer)
    st = process_stage(ray, [raw_chunk(i) for i in range(4)], batch=BATCH, workers=1)
    st.rt.step()
    assert ray.calls == [[0, 1, 2, 3]]
    assert st.source.committed() == {(RAW, 0): 2}  # 0 redacted, 1 dead-lettered; 2 waits for its retry
    st.rt.waiting[0].due = 0.0
    run_until_idle(st.rt)
    assert ray.calls == [[0, 1, 2, 3], [2]]  # only the chunk hit by the outage, alone
    assert st.sink.dlq_reasons(st.cfg.kafka.topics.dlq) == ["decode_failed"]
    out = [decode_chunk_redacted(p.value, p.headers) for p in st.sink.on(st.cfg.kafka.topics.redacted)]
    assert [c.chunk_seq for c in out] == [0, 2, 3] and st.source.committed() == {(RAW, 0): 4}


def test_a_revoke_drops_the_partitions_chunks_still_waiting_for_a_batch() -> None:
    ray = FakeRay(redacted)
    st = process_stage(ray, [(0, *raw_chunk(0)), (1, *raw_chunk(1))], partitions=2, batch=BATCH, workers=2)
    h = st.handler
    recs = [Record.of(m) for m in st.source.poll(0.0, 10)]
    for r in recs:
        h.handle(r)
    assert len(h.pending) == 2 and h.busy() and not h.inflight
    h.revoke([recs[0].tp])
    assert [j.tp for j, _ in h.pending] == [recs[1].tp]
    list(h.completions(0.0))
    assert not h.pending and ray.calls == [[1]]


def test_without_submit_many_every_chunk_is_submitted_at_once() -> None:
    ray = FakeRay(redacted)
    run_until_idle(process_stage(ray, [raw_chunk(i) for i in range(3)]).rt)
    assert ray.calls == [[0], [1], [2]]


# ---------------------------------------------------------------- the worker's dispatch
def test_a_batch_goes_to_the_least_loaded_actor_with_one_ref_per_chunk() -> None:
    calls: list[tuple[str, int, int]] = []

    class Method:
        def __init__(self, name: str, n: int = 1) -> None:
            self.name, self.n = name, n

        def options(self, num_returns: int) -> Method:
            return Method(self.name, num_returns)

        def remote(self, *args: Any) -> Any:
            # (name, refs asked, arguments): a batch's chunks go as one argument each, so that
            # each small one travels inline in the call (a list of eight is over Ray's limit)
            calls.append((self.name, self.n, len(args)))
            return [object() for _ in range(self.n)] if self.n > 1 else object()

    w = ProcessWorker.__new__(ProcessWorker)
    w.workers = [SimpleNamespace(redact=Method(f"a{i}"), redact_many=Method(f"a{i}-many")) for i in range(2)]
    w._rr, w._sent = 0, {}
    inflight: dict[Any, Any] = {}
    w.handler = SimpleNamespace(inflight=inflight)  # type: ignore[assignment]
    big = ChunkTask("h264", b"", "street", 15.0, tuple(range(30)), 1280, 720)
    inflight[w._submit_task(big)] = big
    tasks = [ChunkTask("jpeg", b"", f"c{i}", 0.5, (0,), 320, 180) for i in range(3)]
    refs = w._submit_batch(tasks)
    assert len(refs) == 3 and len(set(map(id, refs))) == 3
    assert calls == [("a1", 1, 1), ("a0-many", 3, 3)]  # the batch avoids the actor holding the 720p chunk


# ---------------------------------------------------------------- the chunk actor
def _frames(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 64, 96, 3), dtype=np.uint8)


def _task(seed: int, payload: bytes | None = None, n: int = 1, **kw: Any) -> ChunkTask:
    pts = tuple(i * 2000 for i in range(n))
    body = payload if payload is not None else encode_h264_chunk(_frames(seed, n), fps=0.5, pts_ms=list(pts))
    return ChunkTask(codec="h264", payload=body, camera_id=f"cam-{seed}", fps=0.5, pts_ms=pts, width=96, height=64,
                     **kw)


def _actor(det: FakeDetector) -> ChunkActor:
    plan = build_plan(parse_config({"process": {"classes": ["face"], "style": "fill", "detect_every": 1}}))
    return ChunkActor(plan, [det])


def test_a_batch_is_one_detector_call_and_each_chunk_gets_its_own_result() -> None:
    face = Boxes.of([[10, 10, 40, 40]], [0.9], Label.FACE)
    det = FakeDetector(lambda c: Detections([face] * len(c), [], [], 0.02))
    tasks = [_task(1), _task(2, n=3), _task(3)]
    out = asyncio.run(_actor(det).redact_many(*tasks))
    assert len(det.sent_many) == 1 and [len(c) for c in det.sent_many[0]] == [1, 3, 1]
    assert len(out) == 3 and all(r.failed_stage is None and not r.fail_closed_frames for r in out)
    assert [r.pts_ms for r in out] == [t.pts_ms for t in tasks]
    for r, t in zip(out, tasks):
        dec = decode_h264_chunk(r.payload)
        assert len(dec) == len(t.pts_ms) and float(dec[0][15:35, 15:35].std()) < 6.0  # each chunk's face filled
        assert float(dec[0][45:60, 50:90].std()) > 20.0
        assert r.cpu_s["detect"] == pytest.approx(0.02) and {"decode", "mask", "encode"} <= set(r.cpu_s)


def test_a_bad_chunk_fails_alone_and_the_others_are_redacted() -> None:
    det = FakeDetector()
    tasks = [_task(1), _task(2, payload=b"\x00\x00\x01junk" * 20), _task(3, policy_id="nobody"), _task(4)]
    a = _actor(det)
    known = a.plan.for_chunk
    # a camera naming a policy this worker does not have (the routed plan's None)
    a.plan = SimpleNamespace(for_chunk=lambda pid: None if pid == "nobody" else known(pid))  # type: ignore[assignment]
    out = asyncio.run(a.redact_many(*tasks))
    assert out[1].failed_stage is ChunkStage.DECODE and "decode failed" in out[1].error
    assert out[2].failed_stage is ChunkStage.FINISH and "no policy 'nobody'" in out[2].error
    assert out[0].failed_stage is None and out[3].failed_stage is None and out[0].payload and out[3].payload
    assert [len(c) for c in det.sent_many[0]] == [1, 1]  # only the decodable chunks were sent


def test_a_chunk_that_cannot_be_encoded_is_its_own_failure() -> None:
    a = _actor(FakeDetector())
    real = a._finish

    def finish(redactor: Any, pol: Any, frames: Any, raw: Any, failed: Any, errors: Any, task: ChunkTask) -> Any:
        if task.camera_id == "cam-2":
            raise RuntimeError("encoder gone")
        return real(redactor, pol, frames, raw, failed, errors, task)

    a._finish = finish  # type: ignore[method-assign]
    out = asyncio.run(a.redact_many(_task(1), _task(2), _task(3)))
    assert out[1].failed_stage is ChunkStage.FINISH and "encoder gone" in out[1].error
    assert out[0].payload and out[2].payload and out[0].failed_stage is None


def test_a_failing_detector_fails_every_chunk_of_the_batch_closed_never_unmasked() -> None:
    out = asyncio.run(_actor(FakeDetector(exc=RuntimeError("onnx broke"))).redact_many(_task(1), _task(2, n=2)))
    for r, n in zip(out, (1, 2)):
        assert r.failed_stage is None and not r.outage and r.fail_closed_frames == tuple(range(n))
        assert "detector error: onnx broke" in r.errors[0]
        assert all(float(f.std()) < 3.0 for f in decode_h264_chunk(r.payload))  # masked whole


def test_a_dead_detector_is_an_outage_for_the_sent_chunks_only() -> None:
    from ray.exceptions import ActorDiedError

    tasks = [_task(1), _task(2, payload=b"junk"), _task(3)]
    out = asyncio.run(_actor(FakeDetector(exc=ActorDiedError())).redact_many(*tasks))
    assert out[0].outage and out[2].outage and out[0].payload is None
    assert out[1].failed_stage is ChunkStage.DECODE and not out[1].outage


def test_the_detector_answers_each_chunk_of_a_detect_many_call() -> None:
    d = bare_detector_actor(timeout_s=5.0, max_wait_s=0.05)
    seen: list[list[int]] = []

    def fake_run(chunks: list[np.ndarray]) -> list[Detections]:
        seen.append([len(c) for c in chunks])
        return [Detections([Boxes.empty()] * len(c), [len(c) - 1], ["x"]) for c in chunks]

    d._run = fake_run  # type: ignore[method-assign]
    out = asyncio.run(d.detect_many([np.zeros((k, 8, 8, 3), np.uint8) for k in (1, 3, 2)]))
    assert seen == [[1, 3, 2]] and d.batches == 1 and d.calls == 3
    assert [len(o.boxes) for o in out] == [1, 3, 2] and [o.failed for o in out] == [[0], [2], [1]]
