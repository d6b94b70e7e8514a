"""Ingest after a fatal librdkafka producer error (the idempotent producer's
OUT_OF_ORDER_SEQUENCE_NUMBER in a 100-camera load run): the broken instance refuses every
message for good, so ingest replaces it from the same factory, counts what the old one lost,
and backs off between replacements that follow each other."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import pipeline.ingest.worker as worker_mod
from pipeline.ingest.source import CameraReader, RawChunk
from pipeline.ingest.worker import IngestWorker
from pipeline.kafka import ChunkProducer, Delivery, is_fatal
from schemas.config import parse_camera, parse_config
from tests.fakes import FakeProducer

OOS = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "broker: out of order sequence number", fatal=True)


class BrokenProducer(FakeProducer):
    """A producer that turns fatal: ``fail_after`` produces succeed, then every produce raises
    ``_FATAL`` (as librdkafka does); ``abandon`` fails what it still holds (like purge + flush)."""

    def __init__(self, auto_ack: bool = False, fail_after: int | None = None) -> None:
        super().__init__(auto_ack=auto_ack)
        self.fail_after = fail_after
        self.fatal: str | None = None
        self.abandoned = False

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_done: Any = None,
                retries: int = 50) -> Any:
        if self.fail_after is not None and len(self.sent) >= self.fail_after:
            self.fatal = self.fatal or str(OOS)
            raise KafkaException(KafkaError(KafkaError._FATAL, "fatal error raised", fatal=True))
        return super().produce(topic, value, key, headers, on_done, retries)

    def ack_fatal(self, i: int = 0) -> None:
        idx, cb = self.unacked.pop(i)
        cb(Delivery(done=True, error=str(OOS), fatal=is_fatal(OOS), offset=idx))

    def abandon(self, timeout_s: float = 5.0) -> int:
        self.abandoned = True
        while self.unacked:
            idx, cb = self.unacked.pop(0)
            cb(Delivery(done=True, error="Local: Purged in queue", offset=idx))
        return 0


class Factory:
    def __init__(self, make: Any = None) -> None:
        self.made: list[Any] = []
        self.make = make or (lambda: FakeProducer(auto_ack=True))

    def __call__(self) -> Any:
        p = self.make()
        self.made.append(p)
        return p


def cam(cid: str, **kw: Any) -> Any:
    return parse_camera({"camera_id": cid, "url": f"/v/{cid}.mp4", **kw})


def make_worker(first: Any, factory: Any) -> IngestWorker:
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"},
                        "ingest": {"max_inflight_per_camera": 4}, "metrics": {"enabled": False}})
    return IngestWorker(cfg, threading.Event(), producer=first, producer_factory=factory)


def reader_for(w: IngestWorker, c: Any, chunks: list[RawChunk]) -> CameraReader:
    r = CameraReader(c, w._emit, chunk_seconds=1.0, jpeg_quality=90, reconnect_initial_s=0.01,
                     reconnect_max_s=0.01, on_event=w._on_camera_event)
    r._chunks = lambda: iter(chunks)  # type: ignore[method-assign]
    w.readers[c.camera_id] = r
    return r


def raw(i: int, n: int = 10) -> RawChunk:
    return RawChunk(b"x", "h264", tuple(i * 1000 + k * 100 for k in range(n)), 10.0, 64, 48)


def value(w: IngestWorker, name: str, labels: dict[str, str] | None = None) -> float:
    return float(w.metrics.value(name, labels) or 0)


def test_fatal_delivery_error_replaces_the_producer_and_later_chunks_are_delivered():
    first, factory = BrokenProducer(), Factory()
    w = make_worker(first, factory)
    live = reader_for(w, cam("live", kind="rtsp", url="rtsp://h/x"), [raw(0), raw(1)])
    live._one_pass_or_connection()
    assert len(first.sent) == 2
    first.ack_fatal(0)  # the broker's OUT_OF_ORDER_SEQUENCE_NUMBER, reported as fatal
    assert value(w, "veil_ingest_errors_total", {"kind": "producer_fatal"}) == 1
    # until the replacement, a live chunk is dropped and counted, not handed to the broken instance
    live._chunks = lambda: iter([raw(2)])  # type: ignore[method-assign]
    live._one_pass_or_connection()
    assert len(first.sent) == 2
    w._heal_producer()
    assert w.producer is factory.made[0] and first.abandoned
    assert value(w, "veil_ingest_producer_recreated_total") == 1
    # the fatal one, the one dropped meanwhile, the one the old instance still held: all counted
    assert value(w, "veil_ingest_dropped_frames_total", {"reason": "produce_failed"}) == 30
    assert w.limiter.inflight() == 0
    live._chunks = lambda: iter([raw(3), raw(4)])  # type: ignore[method-assign]
    live._one_pass_or_connection()
    assert len(factory.made[0].sent) == 2 and value(w, "veil_ingest_frames_out_total") == 20
    # a late fatal report of the replaced instance does not replace the new one
    w._producer_fatal(0, "late report of the old producer")
    assert w._producer_ok.is_set() and value(w, "veil_ingest_errors_total", {"kind": "producer_fatal"}) == 1
    w._heal_producer()
    assert len(factory.made) == 1 and w.producers_recreated == 1


def test_error_cb_fatal_is_seen_by_the_delivery_thread_and_a_file_camera_waits_for_the_new_producer():
    # the first producer refuses from its third chunk on (its error_cb noted the fatal error)
    first, factory = BrokenProducer(auto_ack=True, fail_after=2), Factory()
    w = make_worker(first, factory)
    stop = threading.Event()
    poller = threading.Thread(target=w._poll_deliveries, args=(stop,), daemon=True)
    r = reader_for(w, cam("file"), [raw(i) for i in range(6)])
    poller.start()
    try:
        t = threading.Thread(target=r._one_pass_or_connection, daemon=True)
        t.start()
        t.join(10)
        waited_forever = t.is_alive()
    finally:
        r.stop()  # a camera still waiting for a producer gives up, so a failure cannot hang the suite
        stop.set()
        poller.join(5)
    assert not waited_forever
    assert len(factory.made) == 1 and w.producer is factory.made[0]
    assert len(first.sent) == 2
    # the refused chunk is counted as before; the file camera waited for the rest
    assert value(w, "veil_ingest_dropped_frames_total", {"reason": "produce_failed"}) == 10
    assert len(factory.made[0].sent) == 3 and value(w, "veil_ingest_frames_out_total") == 50
    assert value(w, "veil_ingest_producer_recreated_total") == 1


def test_a_fatal_error_raised_out_of_poll_replaces_the_producer_and_the_delivery_thread_goes_on():
    # confluent-kafka raised tansu's OUT_OF_ORDER_SEQUENCE_NUMBER out of poll() in a make load run:
    # it ended this thread, and with it every delivery report and replacement

    class RaisingPoll(FakeProducer):
        def poll(self, timeout_s: float = 0.0) -> int:
            raise KafkaException(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "out of order", fatal=True))

        def abandon(self, timeout_s: float = 5.0) -> int:
            return 0

    first, factory = RaisingPoll(auto_ack=True), Factory()
    w = make_worker(first, factory)
    stop = threading.Event()
    poller = threading.Thread(target=w._poll_deliveries, args=(stop,), daemon=True)
    poller.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not factory.made:
        time.sleep(0.02)
    alive = poller.is_alive()
    stop.set()
    poller.join(5)
    assert alive and len(factory.made) == 1 and w.producer is factory.made[0]
    assert value(w, "veil_ingest_producer_recreated_total") == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()

    def sleep(self, s: float) -> None:
        self.now += s


def test_producers_failing_again_are_replaced_with_backoff_not_in_a_tight_loop(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(worker_mod, "time", clock)
    factory = Factory(lambda: BrokenProducer(auto_ack=True, fail_after=0))
    w = make_worker(BrokenProducer(auto_ack=True, fail_after=0), factory)
    live = reader_for(w, cam("live", kind="rtsp", url="rtsp://h/x"), [raw(0)])

    def fail_once() -> None:
        live._chunks = lambda: iter([raw(0)])  # type: ignore[method-assign]
        live._one_pass_or_connection()

    fail_once()
    w._heal_producer()
    assert len(factory.made) == 1  # the first fatal error: replaced at once
    for expected_wait in (worker_mod.RECREATE_BASE_S, 2 * worker_mod.RECREATE_BASE_S, 4 * worker_mod.RECREATE_BASE_S):
        made = len(factory.made)
        fail_once()  # the new one fails as well
        for _ in range(1000):  # the delivery thread's loop, many times within the backoff
            w._heal_producer()
        clock.now += expected_wait * 0.99
        w._heal_producer()
        assert len(factory.made) == made  # still waiting
        clock.now += expected_wait * 0.02
        w._heal_producer()
        assert len(factory.made) == made + 1
    assert value(w, "veil_ingest_errors_total", {"kind": "producer_fatal"}) == 4
    assert value(w, "veil_ingest_producer_recreated_total") == 4
    # long after the last replacement, a new fatal error is replaced at once again
    clock.now += worker_mod.RECREATE_RESET_S
    fail_once()
    w._heal_producer()
    assert len(factory.made) == 5


def test_a_factory_that_fails_is_retried_with_backoff(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(worker_mod, "time", clock)
    calls: list[int] = []

    def make() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no")
        return FakeProducer(auto_ack=True)

    w = make_worker(BrokenProducer(auto_ack=True, fail_after=0), Factory(make))
    live = reader_for(w, cam("live", kind="rtsp", url="rtsp://h/x"), [raw(0)])
    live._one_pass_or_connection()
    w._heal_producer()
    w._heal_producer()
    assert len(calls) == 1 and w.producers_recreated == 0
    clock.now += 60.0
    w._heal_producer()
    assert len(calls) == 2 and w.producers_recreated == 1 and w._producer_ok.is_set()


@pytest.mark.parametrize("err,fatal", [
    (OOS, True),
    (KafkaException(KafkaError(KafkaError._FATAL, "fatal error", fatal=True)), True),
    (KafkaException(KafkaError(KafkaError._FATAL)), True),
    (KafkaError(KafkaError._TRANSPORT, "broker down"), False),
    (KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)), False),
    (RuntimeError("x"), False),
])
def test_is_fatal(err, fatal):
    assert is_fatal(err) is fatal


def test_chunk_producer_notes_a_fatal_error_and_abandon_fails_what_it_held():
    p = ChunkProducer("127.0.0.1:9", client_id="t")
    p._on_error(KafkaError(KafkaError._TRANSPORT, "broker down"))
    assert p.fatal is None
    p._on_error(OOS)
    assert p.fatal is not None and "OUT_OF_ORDER_SEQUENCE_NUMBER" in p.fatal
    reports: list[Delivery] = []
    p.produce("t", b"v", "k", [], on_done=reports.append)
    assert p.abandon(5.0) == 0
    assert len(reports) == 1 and reports[0].error and not reports[0].fatal
