"""The process stage's handler on the stage runtime with a fake Ray: raw chunks in, redacted
chunks and DLQ records out, offsets committed only once the output is acked."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.process.actors import ChunkResult, ChunkStage, ChunkTask
from pipeline.process.handler import OutageError, retry_delay_s
from pipeline.runtime import run_until_idle
from schemas.messages import decode_chunk_redacted
from tests.fakes import RAW, FakeRay, process_stage, raw_chunk, redacted


def test_chunks_come_out_redacted_in_offset_order_whatever_order_ray_finishes_them() -> None:
    ray = FakeRay(redacted, auto=False)
    st = process_stage(ray, [raw_chunk(i) for i in range(3)])
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
    _k, v, h = raw_chunk(2)
    st = process_stage(ray, [raw_chunk(0), raw_chunk(1), (b"cam-2", v, h), (b"cam-1", b"junk", [])])
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
    st = process_stage(ray, [raw_chunk(0)])
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

    st = process_stage(FakeRay(lambda t: RayActorError()), [raw_chunk(0)], outage_retries=1)
    st.rt.step()
    st.rt.waiting[0].due = 0.0
    with pytest.raises(OutageError, match=r"through 1 retries"):
        st.rt.step()
    assert not st.source.committed()


def test_a_revoke_forgets_the_partitions_chunks_on_ray_and_commits_the_others() -> None:
    ray = FakeRay(redacted, auto=False)
    st = process_stage(ray, [(0, *raw_chunk(0)), (1, *raw_chunk(1))], partitions=2)
    st.rt.step()
    ray.finish([1000])
    st.rt.step()
    st.source.revoke([(RAW, 0)])
    assert not st.handler.inflight and st.source.committed() == {(RAW, 1): 1}
    ray.finish([0])
    st.rt.step()
    assert len(st.sink.on(st.cfg.kafka.topics.redacted)) == 1  # chunk 0 is its new owner's


def test_ready_chunks_come_from_one_ray_get_and_a_failed_one_keeps_its_own_outcome() -> None:
    """Session 13: the results of one ``ray.wait`` are fetched with one ``ray.get``; when one of
    them is an error (Ray raises it for the whole list) each is fetched on its own, so the
    failed chunk is dead-lettered and the others are redacted, as before."""
    ray = FakeRay(redacted)
    st = process_stage(ray, [raw_chunk(i) for i in range(3)])
    run_until_idle(st.rt)
    assert ray.gets == [3]
    assert len(st.sink.on(st.cfg.kafka.topics.redacted)) == 3

    ray = FakeRay(lambda t: RuntimeError("boom") if t.pts_ms[0] == 1000 else redacted(t))
    st = process_stage(ray, [raw_chunk(i) for i in range(3)])
    run_until_idle(st.rt)
    assert ray.gets == [3, 1, 1, 1]
    assert st.sink.dlq_reasons(st.cfg.kafka.topics.dlq) == ["redaction_failed"]
    out = [decode_chunk_redacted(p.value, p.headers).chunk_seq for p in st.sink.on(st.cfg.kafka.topics.redacted)]
    assert out == [0, 2]
    assert st.source.committed() == {(RAW, 0): 3}
