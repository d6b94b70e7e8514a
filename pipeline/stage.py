"""The skeleton every stage worker (ingest, process, sink, raw vault) is built on.

A stage reads Kafka messages, works on them, and writes somewhere durable; only then is
a message's offset finished and committed. What every stage shares lives here once:

* :func:`consumer_for` / :func:`producer_for` / :func:`registry_consumer_for`: client
  settings from one function (:func:`client_settings`: bootstrap, security, message size),
  so no stage builds librdkafka settings by hand.
* :class:`StageKafka`: the consumer, the producer, the :class:`OffsetTracker`, DLQ
  routing (:meth:`StageKafka.to_dlq`: one error-length limit, the real cause), commit,
  revoke, the status line and the stage metrics.
* :func:`stop_on_signals`: SIGTERM / SIGINT stop consuming; the worker then drains,
  flushes, commits and exits 0 (the Kubernetes pod stop path).
* :func:`root_cause`: one readable line for an exception, also for Ray's nested ones.

The loop itself (poll, flow control, backoff, commit after durable, revoke, drain,
shutdown) is :class:`pipeline.runtime.StageRuntime`'s: stages supply handlers.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from pipeline.kafka import (
    ChunkConsumer,
    ChunkProducer,
    Delivery,
    RenewingProducer,
    chunk_producer,
    client_settings,
)
from pipeline.metrics import StatusLine, WorkerMetrics, serve_config
from pipeline.offsets import OffsetTracker

logger = logging.getLogger(__name__)

TopicPart = tuple[str, int]

DLQ_ERROR_MAX_CHARS = 2000
"""A DLQ record's ``error`` is cut here (every stage the same)."""


def consumer_for(kafka: Any, group: str, topics: list[str], *,
                 on_assign: Callable[[list[TopicPart]], None] | None = None,
                 on_revoke: Callable[[list[TopicPart]], None] | None = None,
                 extra: dict[str, Any] | None = None) -> ChunkConsumer:
    """A manual-commit consumer-group member of ``group`` on ``topics``; ``extra`` librdkafka
    settings win (e.g. ``partition.assignment.strategy``)."""
    settings = {**client_settings(kafka), **(extra or {})}
    bootstrap = settings.pop("bootstrap.servers")
    return ChunkConsumer(bootstrap, group, topics, message_max_bytes=kafka.message_max_bytes,
                         session_timeout_ms=kafka.session_timeout_ms, on_assign=on_assign, on_revoke=on_revoke,
                         extra=settings)


def registry_consumer_for(kafka: Any, group: str, client_id: str) -> Any:
    """A confluent-kafka consumer-group member for a compacted registry that is read whole on
    every assignment and never committed (ingest's camera registry). Incremental
    (cooperative-sticky): a joining or leaving member moves only the partitions that change
    hands, so cameras on the others keep streaming through the rebalance."""
    from pipeline.kafka import plain_consumer

    return plain_consumer(kafka, group, **{
        "client.id": client_id, "auto.offset.reset": "earliest", "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": max(500, kafka.session_timeout_ms // 6),
        "partition.assignment.strategy": "cooperative-sticky"})


def producer_for(kafka: Any, client_id: str) -> ChunkProducer:
    """An idempotent chunk producer (acks=all, ordered, large messages)."""
    return chunk_producer(kafka, client_id)


def root_cause(exc: BaseException) -> str:
    """One line for an exception: ``Type: message`` of the innermost cause; for Ray's
    errors (which nest the remote traceback in their text) the last ``SomeError: ...``
    line, so a missing model reads as the model error, not as a Ray traceback."""
    for _ in range(8):  # RayTaskError / RayActorError carry the remote exception as .cause
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException) or cause is exc:
            break
        exc = cause
    if not type(exc).__name__.startswith("Ray") and str(exc) and "\n" not in str(exc).strip():
        return f"{type(exc).__name__}: {str(exc).strip()}"
    while exc.__cause__ is not None and not str(exc):
        exc = exc.__cause__
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head and "RayTaskError" not in head \
                and "ActorDiedError" not in head:
            return ln.split(":", 1)[1].strip() if ":" in ln else ln
    if lines and len(lines) == 1:
        return f"{type(exc).__name__}: {lines[0]}"
    return lines[-1] if lines else type(exc).__name__


def stop_on_signals(event: threading.Event | None = None) -> threading.Event:
    """SIGTERM / SIGINT set ``event`` (a new one by default): the worker stops consuming,
    drains, flushes, commits and exits 0. A second signal exits at once, and so does a
    shutdown stuck past ``$VEILSTREAM_STOP_GRACE_S`` (180 s; an unreachable broker): offsets
    are committed only after durable writes, so a forced exit loses nothing. Call again
    after a library (Ray) installed its own handlers. A no-op outside the main thread."""
    ev = event or threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return ev
    grace_s = float(os.environ.get("VEILSTREAM_STOP_GRACE_S", "180"))

    def handler(signum: int, _frame: Any) -> None:
        if ev.is_set():  # a second signal: the operator means it
            logger.warning("signal %d again: exiting now (uncommitted input is re-read on restart)", signum)
            os._exit(128 + signum)
        logger.info("signal %d: stopping", signum)
        ev.set()
        def give_up() -> None:
            logger.error("shutdown exceeded %.0fs: exiting", grace_s)
            os._exit(3)

        timer = threading.Timer(grace_s, give_up)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return ev


@dataclass(frozen=True)
class Source:
    """Where a message came from: its offset is what gets committed once it is durable."""

    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TopicPart:
        return (self.topic, self.partition)

    @staticmethod
    def of(msg: Any) -> Source:
        return Source(str(msg.topic()), int(msg.partition()), int(msg.offset()))


class StageKafka:
    """Consumer, producer, offsets, DLQ, status and metrics of one stage worker.

    Args:
        config: the ``PipelineConfig`` (reads ``kafka`` and ``metrics``).
        name: the stage (``process``, ``sink``, ...): metric prefix and client id.
        metrics: the stage's metrics (``WorkerMetrics(name)`` by default).
        status_interval_s: seconds between status lines.
    """

    def __init__(self, config: Any, name: str, metrics: WorkerMetrics | None = None,
                 status_interval_s: float = 10.0) -> None:
        self.cfg = config
        self.name = name
        self.metrics = metrics or WorkerMetrics(name)
        self.tracker = OffsetTracker()
        self.status = StatusLine(status_interval_s)
        self.consumer: Any = None
        self.producer: Any = None
        self._lag_labels: set[str] = set()  # partitions whose lag this stage reports
        self.server: ThreadingHTTPServer | None = None  # serve_metrics()'s, until close()

    # ---------------------------------------------------------------- wiring
    def connect(self, group: str, topics: list[str], *, on_revoke: Callable[[list[TopicPart]], None],
                on_assign: Callable[[list[TopicPart]], None] | None = None,
                extra: dict[str, Any] | None = None) -> None:
        """Create the producer and the consumer (tests set ``consumer`` / ``producer`` to
        the fakes of ``tests.fakes`` or :mod:`pipeline.runtime`'s testing ones instead)."""
        k = self.cfg.kafka
        self.producer = self.renewing_producer(lambda: producer_for(k, f"veil-{self.name}"))

        def revoked(parts: list[TopicPart]) -> None:
            self.forget_lag(parts)
            on_revoke(parts)

        self.consumer = consumer_for(k, group, topics, on_revoke=revoked, on_assign=on_assign, extra=extra)

    def renewing_producer(self, factory: Callable[[], Any]) -> RenewingProducer:
        """The stage's producer from ``factory``, replaced by a new instance after a fatal
        librdkafka error (counted: ``veil_<stage>_producer_recreated_total`` and
        ``errors{kind=producer_fatal}``); what the broken one held is produced again by the
        runtime, its input offsets uncommitted until then."""
        m = self.metrics
        return RenewingProducer(factory, name=self.name, on_replaced=m.producer_recreated.inc,
                                on_fatal=lambda _reason: m.errors.labels(kind="producer_fatal").inc())

    def forget_lag(self, parts: list[TopicPart]) -> None:
        """Drop the lag samples of revoked partitions at once: their new owner reports them, and
        a stale value here would count them twice in every sum over the group (and pin KEDA)."""
        for _t, p in parts:
            label = str(p)
            if label in self._lag_labels:
                self.metrics.lag.remove(label)
                self._lag_labels.discard(label)

    def serve_metrics(self) -> ThreadingHTTPServer | None:
        """Start the stage's probe / metrics server as the config's ``metrics`` section says
        (``None``: disabled), once; it is kept, and :meth:`close` stops it."""
        if self.server is None:
            self.server = serve_config(self.metrics, self.cfg.metrics)
        return self.server

    def close(self) -> None:
        """Stop the probe / metrics server (its port is free again); the consumer and producer are
        the runtime's to close. Safe to call twice, or with no server."""
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # ---------------------------------------------------------------- offsets
    def started(self, src: Source) -> None:
        self.tracker.started(src.tp, src.offset)
        self.metrics.chunks_in.labels(camera="all").inc()

    def finished(self, src: Source) -> None:
        """``src`` is durable downstream: its offset may be committed."""
        self.tracker.finished(src.tp, src.offset)

    def commit(self) -> None:
        offsets = self.tracker.committable()
        if offsets:
            done = self.consumer.commit(offsets)
            # only what the broker took: a refused commit (a rebalance in progress) is offered
            # again, by the next step or the revoke callback, instead of counting as done (the
            # test fakes return None: all of it)
            self.tracker.mark_committed(offsets if done is None else done)

    def revoke(self, tps: list[TopicPart]) -> int:
        """Partitions are going: flush (acks of what was produced still count), commit,
        and forget their in-flight offsets (their new owner redoes them). Returns how many."""
        if self.producer is not None:
            self.producer.flush(10.0)
        if self.consumer is not None:
            self.commit()
        return self.tracker.revoke(tps)

    def pause_all(self) -> None:
        if self.consumer is not None and self.consumer.assigned:
            self.consumer.pause(sorted(self.consumer.assigned))

    # ---------------------------------------------------------------- DLQ
    def to_dlq(self, src: Source, key: Any, value: bytes, headers: Iterable[tuple[str, Any]], reason: str,
               error: str, on_acked: Callable[[], None] | None = None,
               on_failed: Callable[[str], None] | None = None) -> None:
        """Send ``value`` (the original message, untouched) to the DLQ topic with ``reason``
        and ``error`` (cut at :data:`DLQ_ERROR_MAX_CHARS`); its offset is finished only
        once the DLQ record is acked (not durable: stays in flight; ``on_failed(error)`` lets the
        runtime produce it again, else it is redone after a restart)."""
        from schemas.messages import DlqRecord, encode_dlq

        logger.warning("dlq reason=%s topic=%s partition=%d offset=%d error=%s", reason, src.topic, src.partition,
                       src.offset, error[:300])
        rec = DlqRecord(reason=reason, error=error[:DLQ_ERROR_MAX_CHARS], source_topic=src.topic,
                        source_partition=src.partition, source_offset=src.offset,
                        headers={k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or ""))
                                 for k, v in headers},
                        at_ms=int(time.time() * 1000), payload_size=len(value))
        dvalue, dheaders = encode_dlq(rec, value)

        def cb(d: Delivery) -> None:
            if d.error:
                logger.error("dlq produce failed offset=%d error=%s", src.offset, d.error)
                self.metrics.errors.labels(kind="dlq_produce").inc()
                if on_failed is not None:
                    on_failed(d.error)
                return
            self.finished(src)
            self.metrics.dlq.labels(reason=reason).inc()
            if on_acked is not None:
                on_acked()

        self.producer.produce(self.cfg.kafka.topics.dlq, dvalue, key, dheaders, on_done=cb)

    def dlq_message(self, msg: Any, reason: str, error: str) -> None:
        """:meth:`to_dlq` for a consumed message."""
        self.to_dlq(Source.of(msg), msg.key(), msg.value() or b"", list(msg.headers() or []), reason, error)

    # ---------------------------------------------------------------- status
    def dlq_total(self) -> int:
        return int(sum(s.value for mf in self.metrics.dlq.collect() for s in mf.samples if s.name.endswith("_total")))

    def log_status(self, **fields: Any) -> dict[tuple[str, int], int]:
        """``status k=v ... inflight=.. dlq=.. lag=..`` (lag also goes to the lag gauge); returns
        the lag per partition."""
        lag = self.consumer.lag() if self.consumer is not None else {}
        owned = {str(p) for (_t, p) in lag}
        self.forget_lag([("", int(p)) for p in self._lag_labels - owned])  # revoked while we looked away
        self._lag_labels = owned
        for (_t, p), v in lag.items():
            self.metrics.lag.labels(partition=str(p)).set(v)
        parts = [f"{k}={v}" for k, v in fields.items()]
        logger.info("status %s inflight=%d dlq=%d lag=%d", " ".join(parts), self.tracker.inflight(),
                    self.dlq_total(), sum(lag.values()))
        return lag

