"""The stage runtime with a toy handler: list in, list out, no Kafka (pipeline.runtime)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.runtime import (
    HOLD,
    BaseHandler,
    Completion,
    DeadLetter,
    Emit,
    Outcome,
    Record,
    Retry,
    RuntimeSettings,
    TestingSink,
    TestingSource,
    backoff_s,
    run_until_idle,
    runtime_on_lists,
)
from pipeline.stage import StageKafka
from schemas.config import parse_config

CFG = parse_config({"metrics": {"enabled": False}})
DLQ = CFG.kafka.topics.dlq


class Upper(BaseHandler):
    """b"bad" -> DeadLetter, b"down" -> Retry until ``outage`` attempts passed, b"slow" -> Hold
    (finished by the next completions()), else Emit(value.upper())."""

    def __init__(self, outage: int = 0) -> None:
        self.outage = outage
        self.held: list[Record] = []
        self.revoked: list[Any] = []
        self.seen: list[tuple[int, int]] = []

    def handle(self, rec: Record) -> Outcome:
        self.seen.append((rec.src.offset, rec.attempt))
        if rec.value == b"bad":
            return DeadLetter("invalid_message", "not upper-able")
        if rec.value == b"down" and rec.attempt < self.outage:
            return Retry()
        if rec.value == b"slow":
            self.held.append(rec)
            return HOLD
        return Emit(rec.value.upper(), rec.key)

    def completions(self, timeout_s: float) -> Iterable[Completion]:
        out, self.held = [(r, Emit(b"SLOW", r.key)) for r in self.held], []
        return out

    def busy(self) -> bool:
        return bool(self.held)

    def revoke(self, tps: list[Any]) -> None:
        self.revoked.extend(tps)
        self.held = [r for r in self.held if r.tp not in set(tps)]


def _rt(items: list[tuple[Any, ...]], handler: Upper, *, partitions: int = 1, clock: list[float] | None = None,
        **settings: Any) -> tuple[Any, TestingSource, TestingSink]:
    src, sink = TestingSource(items, topic="in", partitions=partitions), TestingSink()
    t = clock if clock is not None else [0.0]
    rt = runtime_on_lists(StageKafka(CFG, "toy"), handler, RuntimeSettings(group="g", topics=("in",),
                                                                          output_topic="out", **settings),
                         src, sink, clock=lambda: t[0])
    return rt, src, sink


def test_a_list_in_comes_out_emitted_dead_lettered_and_committed_once_acked() -> None:
    rt, src, sink = _rt([(b"k", b"a", []), (b"k", b"bad", []), (b"k", b"slow", []), (b"k", b"b", [])], Upper())
    run_until_idle(rt)
    assert [p.value for p in sink.on("out")] == [b"A", b"B", b"SLOW"]  # held: emitted when it completes
    assert sink.dlq_reasons(DLQ) == ["invalid_message"]
    assert src.committed() == {("in", 0): 4}
    assert rt.kafka.tracker.inflight() == 0


def test_an_unacked_emit_holds_its_offset_and_every_offset_above_it() -> None:
    rt, src, sink = _rt([(b"k", b"a", []), (b"k", b"b", [])], Upper())
    sink.auto_ack = False
    rt.step()
    assert not src.committed()
    sink.ack(1)  # the second acked first: still nothing committable
    rt.step()
    assert not src.committed()
    sink.ack(0, error="broker refused")  # not durable: never committed
    rt.step()
    assert not src.committed() and rt.kafka.tracker.inflight() == 1


def test_an_outage_pauses_backs_off_and_is_never_dead_lettered() -> None:
    t = [0.0]
    rt, src, sink = _rt([(b"k", b"down", []), (b"k", b"a", [])], Upper(outage=3), clock=t)
    rt.step()
    assert src.paused == {("in", 0)} and not src.committed()
    waits = []
    for _ in range(3):
        waits.append(rt.waiting[0].due - t[0])
        t[0] = rt.waiting[0].due
        rt.step()
    assert waits == [backoff_s(1), backoff_s(2), backoff_s(3)]
    assert not rt.waiting and not src.paused
    assert [p.value for p in sink.on("out")] == [b"A", b"DOWN"] and not sink.on(DLQ)
    assert src.committed() == {("in", 0): 2}


def test_a_partition_at_its_bound_parks_what_comes_and_is_never_paused() -> None:
    # librdkafka's pause throws away the partition's prefetch (fetched again on resume): the
    # bound parks records locally instead, in order, counted in max_inflight
    h = Upper()
    items = [(0, b"k", b"slow", [])] * 12 + [(1, b"k", b"a", [])]
    rt, src, sink = _rt(items, h, partitions=2, poll_max=8, max_inflight=8, max_inflight_per_partition=4,
                        pause_on_retry=False)
    release = h.completions
    h.completions = lambda timeout_s: ()  # type: ignore[method-assign]  # hold everything
    rt.step()
    assert [r.src.offset for r in h.held] == [0, 1, 2, 3]  # p0 at its bound ...
    assert [m.offset() for m in rt.parked[("in", 0)]] == [4, 5, 6, 7]  # ... the rest of the poll waits
    assert not src.paused and rt.kafka.tracker.inflight() == 4
    rt.step()
    assert len(src.msgs) == 5  # bounded: 4 in flight + 4 parked = max_inflight, nothing more polled
    h.completions = release  # type: ignore[method-assign]
    for _ in range(10):
        rt.step()
    assert not rt.parked and not src.paused and not h.held
    assert [o for o, _attempt in h.seen] == list(range(12)) + [0]  # every record once, p0 in order
    assert len(sink.on("out")) == 13 and src.committed()[("in", 0)] == 12 and src.committed()[("in", 1)] == 1


def test_parked_records_of_a_revoked_partition_are_left_to_its_new_owner() -> None:
    h = Upper()
    rt, src, _ = _rt([(0, b"k", b"slow", [])] * 6, h, poll_max=8, max_inflight=8, max_inflight_per_partition=4,
                     pause_on_retry=False)
    h.completions = lambda timeout_s: ()  # type: ignore[method-assign]
    rt.step()
    assert rt.parked_count() == 2
    src.revoke([("in", 0)])
    assert not rt.parked and h.revoked == [("in", 0)] and src.committed() == {}


def test_the_drain_leaves_parked_records_unhandled_and_uncommitted() -> None:
    h = Upper()
    rt, src, sink = _rt([(0, b"k", b"slow", [])] * 6, h, poll_max=8, max_inflight=8, max_inflight_per_partition=4,
                        pause_on_retry=False)
    release = h.completions
    h.completions = lambda timeout_s: ()  # type: ignore[method-assign]
    rt.step()
    h.completions = release  # type: ignore[method-assign]
    rt.shutdown()
    assert len(sink.on("out")) == 4 and rt.parked_count() == 2
    assert src.committed() == {("in", 0): 4}  # offsets 4 and 5 are read again by the next owner


def test_a_revoke_commits_what_is_durable_and_forgets_the_rest() -> None:
    h = Upper(outage=99)
    rt, src, _ = _rt([(0, b"k", b"a", []), (0, b"k", b"down", []), (1, b"k", b"b", [])], h, partitions=2)
    rt.step()
    assert rt.waiting
    src.revoke([("in", 0)])
    assert h.revoked == [("in", 0)] and not rt.waiting
    assert src.committed() == {("in", 0): 1, ("in", 1): 1}
    assert rt.kafka.tracker.inflight() == 0


def test_the_drain_finishes_held_records_and_leaves_outages_uncommitted_past_its_bound() -> None:
    t = [0.0]
    h = Upper(outage=99)
    rt, src, sink = _rt([(b"k", b"slow", []), (b"k", b"down", [])], h, clock=t, drain_timeout_s=0.0)
    release = h.completions
    h.completions = lambda timeout_s: ()  # type: ignore[method-assign]  # held until the drain
    rt.step()
    assert h.busy() and rt.waiting and not sink.out
    h.drain = lambda: release(0.0)  # type: ignore[method-assign]
    rt.shutdown()
    assert [p.value for p in sink.on("out")] == [b"SLOW"] and not sink.on(DLQ)
    assert src.committed() == {("in", 0): 1}  # the outage's offset stays uncommitted
    assert src.paused == {("in", 0)}
