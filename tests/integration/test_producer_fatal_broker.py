"""A stage's producer replaced after a fatal librdkafka error, on the real broker (tansu): the
process stage's runtime with real clients; the running ``ChunkProducer`` is told of a fatal
``OUT_OF_ORDER_SEQUENCE_NUMBER`` (through its ``error_cb``, as librdkafka reports it; a broker
cannot be made to send one on demand) while it still holds records. The stage replaces it,
produces again what it held, and commits every input offset only after its output is on the
broker: every input reaches the output topic, none the DLQ."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.kafka import ChunkProducer
from pipeline.runtime import BaseHandler, Emit, Outcome, Record, RuntimeSettings, StageRuntime
from pipeline.stage import StageKafka
from schemas.config import parse_config

N = 30
FATAL_AT = 12  # from this offset on, the first record handled while the producer holds unacked ones turns it fatal


def _topics(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        fut.result(30)


def _read_all(bootstrap: str, topic: str, group: str, want: int, timeout_s: float = 60.0) -> list[bytes]:
    # the topic's one partition assigned, not subscribed: a group join on tansu takes ~3 s (half of
    # session.timeout.ms), which the 3 s "nothing in the DLQ" read spent joining instead of reading
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(set(got)) < want and time.monotonic() < deadline:
            for m in c.consume(64, 0.5):
                if m.error() is None:
                    got.append(m.value())
    finally:
        c.close()
    return got


class Upper(BaseHandler):
    """Emit(value.upper()); from offset FATAL_AT on, the first record handled while the stage's
    producer instance holds unacknowledged records turns that instance fatal first."""

    def __init__(self, kafka: StageKafka) -> None:
        self.kafka = kafka
        self.turned: list[ChunkProducer] = []

    def handle(self, rec: Record) -> Outcome:
        current = self.kafka.producer.current
        if rec.src.offset >= FATAL_AT and not self.turned and len(current) > 0:
            current._on_error(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "out of order sequence number",
                                         fatal=True))
            self.turned.append(current)
        return Emit(rec.value.upper(), rec.key)


def test_the_process_stage_replaces_a_fatal_producer_and_commits_only_what_reached_the_broker(broker, unique_name):
    raw, out, dlq = f"{unique_name}-raw", f"{unique_name}-red", f"{unique_name}-dlq"
    _topics(broker.bootstrap, raw, out, dlq)
    cfg = parse_config({"kafka": {"bootstrap_servers": broker.bootstrap, "session_timeout_ms": 6000,
                                  "topics": {"raw": raw, "redacted": out, "dlq": dlq}},
                        "metrics": {"enabled": False}})
    feed = ChunkProducer(broker.bootstrap, client_id="feed")
    for i in range(N):
        feed.produce(raw, f"chunk-{i:03d}".encode(), "cam", [])
    assert feed.flush(30) == 0
    kafka = StageKafka(cfg, "process")
    handler = Upper(kafka)
    rt = StageRuntime(kafka, handler, RuntimeSettings(group=unique_name, topics=(raw,), output_topic=out, poll_max=4,
                                                      pause_on_retry=False, backoff_cap_s=1.0))
    rt.connect()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            rt.step(0.2)
            if kafka.tracker.committable() == {} and kafka.tracker.inflight() == 0 \
                    and kafka.metrics.value("veil_process_chunks_in_total", {"camera": "all"}) >= N:
                break
        rt.shutdown()
    finally:
        kafka.consumer.close()
    assert handler.turned, "the stage never reached the offset that turns its producer fatal"
    assert kafka.producer.current is not handler.turned[0]
    assert kafka.metrics.value("veil_process_producer_recreated_total") == 1
    assert kafka.metrics.value("veil_process_errors_total", {"kind": "producer_fatal"}) == 1
    # what the fatal instance held came back as failed reports and was produced again
    assert kafka.metrics.value("veil_process_errors_total", {"kind": "produce"}) >= 1
    check = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_name, "enable.auto.commit": False})
    try:
        committed = check.committed([TopicPartition(raw, 0)], timeout=10)[0].offset
    finally:
        check.close()
    assert committed == N
    got = _read_all(broker.bootstrap, out, f"{unique_name}-check", N)
    assert set(got) == {f"CHUNK-{i:03d}".encode() for i in range(N)}  # at-least-once: every one, maybe twice
    assert not _read_all(broker.bootstrap, dlq, f"{unique_name}-dlq", 1, timeout_s=3.0)
