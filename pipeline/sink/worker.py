"""The sink loop (``veilstream sink``, built by ``pipeline.sinkapp``): redacted chunks ->
per-camera MP4 segments in object storage.

    poll veil.chunks.redacted ──► decode (bad ─► DeadLetter) ──► SegmentAssembler (per camera,
    windows of the camera clock; Hold) ──► segment complete ──► SegmentWriter (remux MP4, PUT
    mp4, PUT manifest, plug-ins) ──► Emit() per chunk ──► commit what ``OffsetTracker`` allows

* Commit after durable: a chunk's offset is finished only once the segment holding it is
  stored (or its DLQ record is acked). Open segments hold their offsets back, so a crash
  re-reads them and the replay rewrites the same keys.
* Replays are idempotent: keys are a pure function of the data, and before writing the
  sink reads the manifest already under the key (:func:`segments.plan_write`) so a replay
  of a window's tail never overwrites a fuller segment.
* On the stage runtime (:mod:`pipeline.runtime`): a chunk is ``Hold`` while its segment is
  open and ``Emit()`` once the segment is stored; the runtime commits, revokes and drains.
* Object store down: the segment's first chunk is a ``Retry``; the runtime pauses every
  assigned partition and backs off until it is stored (Kafka is the buffer, not memory).
* Rebalance: open segments of revoked partitions are dropped (not committed: their new
  owner rebuilds them from the last committed offset).
* Bounded memory: open segments keep at most ``sink.max_buffered_bytes`` of chunk payload in
  RAM; the rest waits in spool files under ``sink.spool_dir`` (:mod:`.spool`), a cache that
  is emptied at start (Kafka, not the spool, holds what is not yet stored).
* What governs a stored segment (hash chain, retention, notice, audit) is not here: it comes
  in as plug-ins (:mod:`.plugins`) that the :class:`~.writer.SegmentWriter` runs around each
  write; this package never imports ``pipeline.governance``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.kafka import ChunkConsumer, ChunkProducer
from pipeline.metrics import Counter, Gauge, WorkerMetrics
from pipeline.objectkeys import SegmentError, format_ts, segment_key
from pipeline.objectstore import ObjectStore
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
    StageRuntime,
    backoff_s,
)
from pipeline.stage import Source, StageKafka, consumer_for, producer_for

from .plugins import SegmentPlugin
from .segments import CompletedSegment, SegmentAssembler, SourceOffset, window_of
from .spool import ChunkSpool, SpoolError, materialize
from .writer import SegmentWriter

logger = logging.getLogger(__name__)

POISON_ERRORS = (SegmentError, ValueError, OverflowError, KeyError, TypeError, IndexError)
"""Errors a segment raises from its own data (a retry can never succeed): isolated to the
DLQ. Anything else (S3Error, connection errors, timeouts) is an outage: retried."""
S3_DATA_ERRORS = frozenset({"InvalidArgument", "MetadataTooLarge", "InvalidTag", "KeyTooLongError",
                            "EntityTooLarge", "InvalidObjectName"})
"""S3 error codes about the object itself (its key, metadata, tags, size): the same PUT fails
the same way forever, so the segment is isolated like a data error. AccessDenied, SlowDown,
5xx and the like are outages: retried."""


KEYABLE_MAX = 4096
"""(camera, window) pairs whose segment key the sink remembers as checked (:meth:`SinkWorker.handle`)."""


def is_poison(exc: BaseException) -> bool:
    """True when storing failed because of the segment's own data (see above)."""
    return isinstance(exc, POISON_ERRORS) or getattr(exc, "code", None) in S3_DATA_ERRORS


@dataclass
class _Pending:
    """A segment whose write hit an outage; ``rec`` (its first chunk) is what the runtime retries."""

    segment: CompletedSegment
    rec: Record
    attempts: int = 0


def _record(src: SourceOffset) -> Record:
    """The runtime's handle on a chunk held in a segment (its offset is what is finished)."""
    return Record(Source(*src), None, b"")


class SinkWorker(BaseHandler):
    """The sink's handler on the stage runtime (:mod:`pipeline.runtime`), and its shell:
    ``run()`` blocks until ``stop()`` (or the stop event), then flushes.

    A chunk is ``Hold`` while its segment is open; a stored segment finishes its chunks with
    ``Emit()``; chunks that cannot be stored are ``DeadLetter`` (with the chunk re-encoded from
    the spool); an outage is ``Retry`` of the segment's first chunk (the runtime pauses every
    partition and backs off; :meth:`handle` then writes the segment again).

    Args:
        config: a ``schemas.config.PipelineConfig`` (reads ``kafka``, ``sink``, ``metrics``).
        store: where segments go (``MinioSegmentStore`` or ``tests.fakes.InMemoryObjectStore``).
        consumer_factory: ``f(on_revoke) -> ChunkConsumer``-like; default subscribes to
            ``kafka.topics.redacted`` with group ``sink.consumer_group``.
        producer_factory: ``f() -> ChunkProducer``-like for DLQ records and audit events; called
            again for a new instance after a fatal librdkafka error (``RenewingProducer``).
        clock: monotonic seconds (idle flush, retry backoff); injectable for tests.
        plugins: what governs each stored segment (hash chain, retention, notice, audit:
            :mod:`pipeline.sink.plugins`), run in this order by the :class:`SegmentWriter`;
            the edge that builds the sink picks them (``pipeline.sinkapp``).
    """

    def __init__(self, config: Any, store: ObjectStore,
                 consumer_factory: Callable[[Callable[[list[tuple[str, int]]], None]], Any] | None = None,
                 *, producer_factory: Callable[[], Any] | None = None,
                 stop_event: threading.Event | None = None, metrics: WorkerMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic, plugins: Sequence[SegmentPlugin] = ()) -> None:
        self.cfg = config
        self.store = store
        self.writer = SegmentWriter(store, plugins, dead_letter=self._dead_letter_chunk)
        self.stop_event = stop_event or threading.Event()
        self.metrics = metrics or WorkerMetrics("sink")
        self.clock = clock
        s = config.sink
        self.segment_seconds = float(s.segment_seconds)
        # A live camera's clock runs with ours: after a window's length plus a grace of
        # silence, no chunk of its open window can still come, so flushing cannot split it.
        self.idle_s = self.segment_seconds + float(s.idle_flush_s)
        self.max_open = int(getattr(s, "max_open_segments", 1024))
        self.assembler = SegmentAssembler(self.segment_seconds)
        self.spool = ChunkSpool(getattr(s, "spool_dir", None), getattr(s, "max_buffered_bytes", None))
        self.kafka = StageKafka(config, "sink", self.metrics, float(getattr(s, "status_interval_s", 10.0)))
        self.tracker = self.kafka.tracker
        self.pending: list[_Pending] = []
        self.max_pending = max(4, self.max_open)
        self._consumer_factory = consumer_factory or self._default_consumer
        self._producer_factory = producer_factory or self._default_producer
        r = self.metrics.registry
        self.segments_written = Counter("veil_sink_segments_written_total", "segments stored, per outcome",
                                        ["outcome"], registry=r)
        self.bytes_written = Counter("veil_sink_bytes_written_total", "bytes stored (mp4 + manifest)",
                                     registry=r)
        self.open_gauge = self.metrics.inflight
        # The autoscaling signal (KEDA's Prometheus trigger): chunks not yet durable that are work
        # to do: unread on the assigned partitions plus those in closed segments waiting for an
        # upload. Chunks of open segments (state "open") wait for their segment to fill: about
        # cameras x segment/chunk at steady state, which is why committed-offset lag is no signal.
        self.backlog = Gauge("veil_sink_backlog_chunks", "chunks not yet durable, per state (unread, "
                             "pending_upload, open)", ["state"], registry=r)
        self.buffered_gauge = Gauge("veil_sink_buffered_bytes", "chunk payload bytes held for open and pending "
                                    "segments, per place (memory, spool)", ["place"], registry=r)
        self.written_keys: list[str] = []
        self._keyable: set[tuple[str, int]] = set()  # (camera, window start) whose segment key was checked
        self.done: list[Completion] = []  # outcomes the runtime takes at the next completions()
        for plugin in self.writer.plugins:
            plugin.attach(self)
        self.runtime = StageRuntime(self.kafka, self, RuntimeSettings(
            group=s.consumer_group, topics=(config.kafka.topics.redacted,), poll_max=64, poll_s=0.2, busy_poll_s=0.2,
            pause_on_retry=True, backoff_cap_s=30.0, drain_timeout_s=60.0, report_inflight=False),
            stop_event=self.stop_event, clock=clock)

    # ---------------------------------------------------------------- wiring
    def _default_consumer(self, on_revoke: Callable[[list[tuple[str, int]]], None]) -> ChunkConsumer:
        return consumer_for(self.cfg.kafka, self.cfg.sink.consumer_group, [self.cfg.kafka.topics.redacted],
                            on_revoke=on_revoke,
                            # incremental rebalancing: a scale event revokes only the partitions
                            # that move, so the other partitions' open segments stay open
                            extra={"partition.assignment.strategy": "cooperative-sticky"})

    def _default_producer(self) -> ChunkProducer:
        return producer_for(self.cfg.kafka, "veil-sink")

    # the stage skeleton owns the clients; tests may set them by hand (tests.fakes)
    @property
    def consumer(self) -> Any:
        return self.kafka.consumer

    @consumer.setter
    def consumer(self, value: Any) -> None:
        self.kafka.consumer = value

    @property
    def producer(self) -> Any:
        return self.kafka.producer

    @producer.setter
    def producer(self, value: Any) -> None:
        self.kafka.producer = value

    def stop(self) -> None:
        self.stop_event.set()

    def count_error(self, kind: str) -> None:
        """``veil_sink_errors_total{kind}`` (for plug-ins: :class:`pipeline.sink.plugins.SinkHandle`)."""
        self.metrics.errors.labels(kind=kind).inc()

    # ---------------------------------------------------------------- loop
    def run(self, exit_when_idle_s: float | None = None) -> int:
        """Consume until stopped; then flush open segments, store them, commit, return 0.

        Args:
            exit_when_idle_s: also stop once nothing arrived for this long and nothing is
                open or pending (batch / test use).
        """
        # replaced by a new instance after a fatal librdkafka error (veil_sink_producer_recreated_total)
        self.producer = self.kafka.renewing_producer(self._producer_factory)
        self.consumer = self._consumer_factory(self.runtime.on_revoke)
        self.kafka.serve_metrics()
        try:
            return self.runtime.run(exit_when_idle_s)
        finally:
            self.producer = None  # flushed in the drain; release its broker connections now
            self.kafka.close()  # the probe server with it

    def step(self, poll_s: float = 0.2) -> None:
        """One loop iteration of the runtime (public for tests that drive the worker by hand)."""
        self.runtime.step(poll_s)

    def shutdown(self) -> None:
        """The runtime's drain: stop consuming, store every open segment (bounded retries), commit."""
        self.runtime.shutdown()

    def handle(self, rec: Record) -> Outcome:
        if rec.attempt > 0:  # the runtime's retry of a segment that hit an outage
            p = next((p for p in self.pending if p.rec.src == rec.src), None)
            if p is not None:  # (None: its segment went with a revoked partition)
                self.pending.remove(p)
                self._store(p.segment, p)
            return HOLD
        from schemas.messages import SchemaError, decode_chunk_redacted

        try:
            # the key must name the meta's camera: a sender cannot pick another camera's prefix
            chunk = decode_chunk_redacted(rec.value, list(rec.headers), key=rec.key,
                                          limits=getattr(self.cfg, "limits", None))
        except SchemaError as exc:
            return DeadLetter(getattr(exc, "reason", "invalid_message"), str(exc))
        if chunk.codec != "h264":
            return DeadLetter("unsupported_codec", f"sink remuxes h264 chunks only, got {chunk.codec}")
        if not chunk.pts_ms:
            return DeadLetter("empty_chunk", "chunk has no frames")
        try:  # everything the object key is made of must be representable before it is held
            start, end = window_of(int(chunk.pts_ms[0]), self.segment_seconds)
            last = int(chunk.pts_ms[-1])
            if (chunk.camera_id, start) not in self._keyable or not start <= last < end:
                segment_key(chunk.camera_id, start, end)
                format_ts(last)
                self._remember_keyable(chunk.camera_id, start)
        except (SegmentError, ValueError, OverflowError) as exc:
            return DeadLetter("invalid_chunk", str(exc))
        self.metrics.frames_in.inc(len(chunk.pts_ms))
        src = rec.src
        done = self.assembler.add(chunk, (src.topic, src.partition, src.offset), self.clock())
        self.spool.admit(self.assembler.open[chunk.camera_id])  # in memory within the budget, else on disk
        for seg in done:
            self._store(seg)
        return HOLD

    def _remember_keyable(self, camera_id: str, start_ms: int) -> None:
        """The camera's window at ``start_ms`` has a key (camera id, start and end as UTC times):
        its later chunks that end inside the window need no check of their own (a time between
        two representable ones is representable). Bounded: forgotten wholesale past
        :data:`KEYABLE_MAX` (then checked again, as every chunk was before)."""
        if len(self._keyable) >= KEYABLE_MAX:
            self._keyable.clear()
        self._keyable.add((camera_id, start_ms))

    def completions(self, timeout_s: float) -> Iterable[Completion]:
        """Close idle segments (and the quietest ones past ``max_open_segments``), store them;
        every outcome since the last call."""
        done = self.assembler.flush_idle(self.clock(), self.idle_s)
        if len(self.assembler.open) > self.max_open:
            # too many cameras open at once: close the quietest early (a late chunk of its
            # window becomes a "-p" part, never an overwrite)
            quiet = sorted(self.assembler.open.values(), key=lambda s: s.last_seen)
            for seg in quiet[: len(self.assembler.open) - self.max_open]:
                done.append(self.assembler.open.pop(seg.camera_id))
        for seg in done:
            self._store(seg)
        self.open_gauge.set(len(self.assembler.open))
        self.buffered_gauge.labels(place="memory").set(self.spool.buffered_bytes)
        self.buffered_gauge.labels(place="spool").set(self.spool.spooled_bytes)
        out, self.done = self.done, []
        return out

    def busy(self) -> bool:
        return bool(self.assembler.open) or bool(self.done)

    def drain(self) -> Iterable[Completion]:
        for seg in self.assembler.flush_all():
            self._store(seg)
        out, self.done = self.done, []
        return out

    def close(self) -> None:
        self.spool.close()

    # ---------------------------------------------------------------- storing
    def _store(self, seg: CompletedSegment, pending: _Pending | None = None) -> None:
        t0 = time.thread_time()
        try:
            self._write(seg)
        except SpoolError:
            raise  # the sink restarts and re-reads the segment from Kafka (nothing was committed)
        except Exception as exc:  # noqa: BLE001 - S3Error, urllib3 errors: retry, never skip
            if is_poison(exc):
                self._isolate(seg, exc)
            else:
                self._defer(pending or _Pending(seg, _record(seg.sources[0])), exc)
        finally:  # remux + PUTs: what storing a segment costs this stage
            self.metrics.cpu_seconds.labels(step="object_store").inc(time.thread_time() - t0)

    def _isolate(self, seg: CompletedSegment, exc: BaseException) -> None:
        """A segment that fails on its own data (not on storage) would fail the same way on
        every retry and every restart, holding every other camera's offsets: its chunks go
        to the DLQ with the cause, their offsets finish with the DLQ ack, and the sink goes on."""
        why = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        logger.error("segment isolated camera=%s start_ms=%d chunks=%d: %s", seg.camera_id, seg.start_ms,
                     len(seg.chunks), why)
        self.metrics.errors.labels(kind="poison_segment").inc()
        for chunk, src in zip(seg.chunks, seg.sources, strict=True):
            self._dead_letter_chunk(chunk, src, "store_failed", why)
        seg.chunks, seg.sources = [], []
        self.spool.release(seg)

    def _defer(self, p: _Pending, exc: BaseException) -> None:
        """Storage is down: the runtime pauses every partition and retries ``p.rec`` after the backoff."""
        p.attempts += 1
        delay = backoff_s(p.attempts)
        self.metrics.errors.labels(kind="store").inc()
        try:
            key = p.segment.key()
        except Exception:  # noqa: BLE001 - the error path must never raise (it once crash-looped the sink)
            key = f"camera={p.segment.camera_id}/start_ms={p.segment.start_ms}"
        logger.error("store failed camera=%s key=%s attempt=%d retry_in=%.1fs error=%s", p.segment.camera_id,
                     key, p.attempts, delay, str(exc).splitlines()[0][:300] if str(exc) else type(exc))
        p.rec = Record(p.rec.src, None, b"", attempt=p.attempts - 1)
        self.pending.append(p)
        self.done.append((p.rec, Retry(delay)))

    def _write(self, seg: CompletedSegment) -> None:
        """Store one segment through the writer (or dead-letter its bad chunks), then finish
        its offsets; raises on an outage, and then the segment keeps its spooled bytes for
        the retry and nothing is finished."""
        stored = self.writer.write(seg)
        if stored is None:
            self.spool.release(seg)
            return
        if stored.action != "skip":
            self.bytes_written.inc(stored.bytes_written)
            self.written_keys.append(stored.key)
            stored_s = (stored.stored_at_ms or 0) / 1000.0
            for chunk in seg.chunks:
                self.metrics.latency.observe(max(0.0, stored_s - chunk.captured_at_ms / 1000.0))
        self.segments_written.labels(outcome=stored.action).inc()
        self.metrics.chunks_out.labels(camera="all").inc(len(seg.chunks))
        self.metrics.frames_out.inc(seg.frames)
        for cls, n in seg.masks_per_class.items():
            self.metrics.frames_masked.labels(cls=cls).inc(n)
        self.metrics.fail_closed.inc(seg.fail_closed_frames)
        self.done.extend((_record(src), Emit()) for src in seg.sources)
        self.spool.release(seg)

    # ---------------------------------------------------------------- DLQ
    def _dead_letter_chunk(self, chunk: Any, src: SourceOffset, reason: str, error: str) -> None:
        """A chunk of a segment that cannot be stored: a ``DeadLetter`` with the chunk
        re-encoded (a spooled chunk's payload comes back from disk)."""
        from schemas.messages import encode_chunk

        chunk = materialize(chunk)
        try:
            value, headers = encode_chunk(chunk)
        except Exception:  # noqa: BLE001 - keep the payload even if the metadata won't encode
            value, headers = bytes(chunk.payload), []
        self.done.append((_record(src), DeadLetter(reason, error, (chunk.camera_id, value, headers))))

    # ---------------------------------------------------------------- rebalance, status
    def revoke(self, tps: list[tuple[str, int]]) -> None:
        """The runtime flushed, committed and forgot the partitions' offsets: drop their open
        and pending segments (their new owner rebuilds them from Kafka)."""
        dropped = self.assembler.revoke(tps)
        lost = set(tps)
        kept = [p for p in self.pending if not (p.segment.partitions() & lost)]
        dropped_pending = len(self.pending) - len(kept)
        for seg in [*dropped, *(p.segment for p in self.pending if p.segment.partitions() & lost)]:
            self.spool.release(seg)
        self.pending = kept
        self.done = [(r, o) for r, o in self.done if r.tp not in lost]
        if dropped or dropped_pending:
            logger.info("revoked partitions: dropped open_segments=%d pending=%d (the new owner rebuilds them)",
                        len(dropped), dropped_pending)

    def status(self) -> None:
        self.log_status()

    def summary(self) -> dict[str, Any]:
        return {"segments": len(self.written_keys)}

    def log_status(self) -> None:
        lag = self.kafka.log_status(open_segments=len(self.assembler.open), pending=len(self.pending),
                                    segments=len(self.written_keys), buffered_bytes=self.spool.buffered_bytes,
                                    spooled_bytes=self.spool.spooled_bytes)
        self.backlog.labels(state="unread").set(sum(lag.values()))
        self.backlog.labels(state="pending_upload").set(sum(len(p.segment.chunks) for p in self.pending))
        self.backlog.labels(state="open").set(sum(len(seg.chunks) for seg in self.assembler.open.values()))
