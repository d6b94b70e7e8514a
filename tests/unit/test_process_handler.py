"""The process stage's handler on the stage runtime with a fake Ray: raw chunks in, redacted
chunks and DLQ records out, offsets committed only once the output is acked."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.process.actors import ChunkResult, ChunkStage, ChunkTask
from pipeline.process.handler import OutageError, ProcessHandler, retry_delay_s
from pipeline.process.worker import ProcessWorker
from pipeline.runtime import TestingSink, TestingSource, run_until_idle, runtime_on_lists
from schemas.config import parse_config
from schemas.messages import ChunkCaptured, decode_chunk_redacted, encode_chunk

RAW = "veil.chunks.raw"


class FakeRay:
    """Answers each submitted chunk with ``answer(task)`` once the test calls :meth:`finish`
    (``auto``: at once); an exception as the answer is raised by ``get`` like Ray's."""

    def __init__(self, answer: Any, auto: bool = True) -> None:
        self.answer, self.auto = answer, auto
        self.tasks: dict[Any, ChunkTask] = {}
        self.done: set[Any] = set()
        self.submitted: list[int] = []

    def submit(self, task: ChunkTask) -> Any:
        ref = object()
        self.tasks[ref] = task
        self.submitted.append(task.pts_ms[0])
        if self.auto:
            self.done.add(ref)
        return ref

    def finish(self, order: list[int]) -> None:
        """Complete the pending tasks whose first pts is in ``order``."""
        self.done.update(r for r, t in self.tasks.items() if t.pts_ms[0] in order)

    def wait(self, refs: list[Any], num_returns: int, timeout: float, fetch_local: bool = True) -> Any:
        return [r for r in refs if r in self.done], [r for r in refs if r not in self.done]

    def get(self, ref: Any) -> Any:
        self.done.discard(ref)
        out = self.answer(self.tasks.pop(ref))
        if isinstance(out, BaseException):
            raise out
        return out

    def kill(self, actor: Any, no_restart: bool = False) -> None:
        return None


def redacted(task: ChunkTask) -> ChunkResult:
    return ChunkResult(payload=b"h264:" + task.payload, pts_ms=task.pts_ms, masks_per_class={"face": 1})


def _chunk(seq: int, camera: str = "cam-1") -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    c = ChunkCaptured(camera_id=camera, chunk_seq=seq, pts_ms=(seq * 1000,), fps=1.0, width=16, height=16,
                      codec="jpeg", captured_at_ms=1_700_000_000_000, payload=b"\xff\xd8" + bytes([seq]))
    v, h = encode_chunk(c)
    return camera.encode(), v, list(h)


def _stage(ray: FakeRay, items: list[Any], partitions: int = 1, **process: Any) -> Any:
    cfg = parse_config({"process": {"classes": ["face"], "style": "fill", "drain_timeout_s": 0.5, **process},
                        "metrics": {"enabled": False}})
    w = ProcessWorker(cfg)
    handler = ProcessHandler(cfg, w.plan, w.metrics, ray.submit, ray)
    source, sink = TestingSource(items, topic=RAW, partitions=partitions), TestingSink()
    rt = runtime_on_lists(w.kafka, handler, w.settings(), source, sink)
    return SimpleNamespace(rt=rt, handler=handler, source=source, sink=sink, cfg=cfg)


def test_chunks_come_out_redacted_in_offset_order_whatever_order_ray_finishes_them() -> None:
    ray = FakeRay(redacted, auto=False)
    st = _stage(ray, [_chunk(i) for i in range(3)])
    st.rt.step()
    ray.finish([2000, 1000])  # the later ones first
    st.rt.step()
    assert st.sink.out == [] and not st.source.committed()  # chunk 0 still on Ray holds them back
    ray.finish([0])
    st.rt.step()
    out = [decode_chunk_redacted(p.value, p.headers) for p in st.sink.on(st.cfg.kafka.topics.redacted)]
    assert [c.chunk_seq for c in out] == [0, 1, 2] and out[0].payload == b"h264:\xff\xd8\x00"
    assert st.source.committed() == {(RAW, 0): 3} and st.handler.produced == 3


def test_bad_input_and_a_failed_redaction_are_dead_lettered_and_committed_once_acked() -> None:
    ray = FakeRay(lambda t: ChunkResult(ChunkStage.FINISH, "encode failed") if t.pts_ms[0] == 1000 else redacted(t))
    _k, v, h = _chunk(2)
    st = _stage(ray, [_chunk(0), _chunk(1), (b"cam-2", v, h), (b"cam-1", b"junk", [])])
    run_until_idle(st.rt)
    assert st.sink.dlq_reasons(st.cfg.kafka.topics.dlq) == ["key_mismatch", "invalid_message", "redaction_failed"]
    redacted_out = st.sink.on(st.cfg.kafka.topics.redacted)
    assert [decode_chunk_redacted(p.value, p.headers).chunk_seq for p in redacted_out] == [0]
    assert st.source.committed() == {(RAW, 0): 4}


def test_an_outage_is_retried_with_backoff_and_never_dead_lettered() -> None:
    from ray.exceptions import RayActorError

    fails = [2]

    def answer(task: ChunkTask) -> Any:
        if fails[0]:
            fails[0] -= 1
            return RayActorError()
        return redacted(task)

    ray = FakeRay(answer)
    st = _stage(ray, [_chunk(0)])
    st.rt.step()
    assert [w.due - st.rt.clock() for w in st.rt.waiting] == pytest.approx([retry_delay_s(1)], abs=0.1)
    assert not st.source.paused  # the other partitions go on
    st.rt.waiting[0].due = 0.0
    st.rt.step()
    st.rt.waiting[0].due = 0.0
    st.rt.step()
    assert ray.submitted == [0, 0, 0] and not st.sink.on(st.cfg.kafka.topics.dlq)
    assert len(st.sink.on(st.cfg.kafka.topics.redacted)) == 1 and st.source.committed() == {(RAW, 0): 1}


def test_an_outage_past_its_retries_fails_the_worker_with_the_offset_uncommitted() -> None:
    from ray.exceptions import RayActorError

    st = _stage(FakeRay(lambda t: RayActorError()), [_chunk(0)], outage_retries=1)
    st.rt.step()
    st.rt.waiting[0].due = 0.0
    with pytest.raises(OutageError, match=r"through 1 retries"):
        st.rt.step()
    assert not st.source.committed()


def test_a_revoke_forgets_the_partitions_chunks_on_ray_and_commits_the_others() -> None:
    ray = FakeRay(redacted, auto=False)
    st = _stage(ray, [(0, *_chunk(0)), (1, *_chunk(1))], partitions=2)
    st.rt.step()
    ray.finish([1000])
    st.rt.step()
    st.source.revoke([(RAW, 0)])
    assert not st.handler.inflight and st.source.committed() == {(RAW, 1): 1}
    ray.finish([0])
    st.rt.step()
    assert len(st.sink.on(st.cfg.kafka.topics.redacted)) == 1  # chunk 0 is its new owner's
