"""``veilstream ingest``: own the cameras of the registry partitions this worker is
assigned, read them, and produce one message per chunk to the raw topic.

Threads: the caller's thread runs the stage runtime (:mod:`pipeline.runtime`) on the camera
registry (group membership, assignment callbacks, registry records as ``Emit()`` outcomes,
reconciling reader threads; read whole on every assignment, nothing committed; the runtime's
drain stops the cameras, then the producer is flushed); one thread serves producer delivery
reports; one thread per owned camera reads it (``CameraReader``) and produces its chunks.

A fatal librdkafka error (the idempotent producer's ``OUT_OF_ORDER_SEQUENCE_NUMBER``, found in a
100-camera load run) leaves that producer instance refusing every message for good: the delivery
thread then replaces it with a new one from the same factory (under a lock, while no camera thread
is inside a produce call on it; backoff between replacements that follow each other).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException

from pipeline.kafka import (
    ABANDON_S,
    RECREATE_BASE_S,
    RECREATE_MAX_S,
    RECREATE_RESET_S,
    Delivery,
    KafkaDeliveryError,
    ProducerRenewal,
    abandon_producer,
    is_fatal,
)
from pipeline.metrics import StatusLine, serve_config
from pipeline.runtime import BaseHandler, Completion, Emit, Outcome, Record
from pipeline.stage import producer_for
from schemas.config import CameraConfig
from schemas.messages import ChunkCaptured, SchemaError, decode_camera, encode_chunk
from schemas.safety import chunk_limit_problem

from .backpressure import InflightLimiter
from .metrics import IngestMetrics
from .registry import CameraRegistry, publish_cameras
from .source import CameraReader

logger = logging.getLogger(__name__)

STOP_JOIN_S = 10.0  # how long a revoke waits for a camera thread blocked in a read
# the replacement schedule after a fatal producer error is pipeline.kafka's (shared with the stages)
__all__ = ["ABANDON_S", "RECREATE_BASE_S", "RECREATE_MAX_S", "RECREATE_RESET_S", "IngestWorker"]


class IngestWorker:
    """One ingest process (or thread, in tests). ``run()`` blocks until ``stop_event`` is set.

    Args:
        config: the parsed ``PipelineConfig``.
        stop_event: set (e.g. by SIGTERM) to stop reading, flush the producer and return 0.
        worker_id: this worker's name in logs and its Kafka ``client.id``.
        metrics: where to count (a fresh ``IngestMetrics`` by default).
        publish_static: publish ``config.ingest.cameras`` to the registry topic at start.
        producer: a producer with ``ChunkProducer``'s ``produce``/``poll``/``flush`` (tests);
            built from the config in ``run()`` by default.
        producer_factory: makes a new producer, after a fatal error of the current one (and in
            ``run()`` when ``producer`` is None); ``producer_for`` of the config by default.
    """

    def __init__(self, config: Any, stop_event: threading.Event | None = None, worker_id: str = "",
                 metrics: IngestMetrics | None = None, publish_static: bool = True,
                 producer: Any = None, producer_factory: Callable[[], Any] | None = None) -> None:
        ic = config.ingest
        self.cfg = config
        self.stop_event = stop_event or threading.Event()
        self.worker_id = worker_id or f"ingest-{id(self) % 100000}"
        self.metrics = metrics or IngestMetrics()
        self.publish_static = publish_static
        self.producer = producer
        self.producer_factory = producer_factory
        # the producer's swap after a fatal error: generation, produce calls running per generation
        self._producer_cond = threading.Condition()
        self._producing: dict[int, int] = {}
        self._producer_ok = threading.Event()
        self._producer_ok.set()
        # when a fatal producer is replaced (generation, backoff); guarded by _producer_cond;
        # the clock is read through this module's ``time`` (tests replace it)
        self._renewal = ProducerRenewal(clock=lambda: time.monotonic())
        self.registry = CameraRegistry()
        self.limiter = InflightLimiter(ic.max_inflight_per_camera, ic.max_inflight_chunks)
        self.readers: dict[str, CameraReader] = {}
        self._lock = threading.Lock()
        self._changed = False
        self._joined = False
        self.produced = 0
        self.failed_deliveries = 0
        self.status = StatusLine(ic.status_interval_s)
        self._poller: threading.Thread | None = None
        self._poller_stop: threading.Event | None = None
        self._last_gauges = 0.0

    # ------------------------------------------------------------ ownership
    def owned_cameras(self) -> list[str]:
        """Camera ids this worker runs a reader for now (sorted)."""
        with self._lock:
            return sorted(self.readers)

    def camera_states(self) -> dict[str, str]:
        """``camera id -> connecting | streaming | retrying | finished | stopped``."""
        with self._lock:
            return {cid: r.state for cid, r in sorted(self.readers.items())}

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        for tp in partitions:
            tp.offset = OFFSET_BEGINNING  # compacted registry: read the new partitions whole
        self.registry.assign(tp.partition for tp in partitions)
        consumer.incremental_assign(partitions)
        self._joined = True
        self._changed = True
        self.metrics.rebalances.labels(change="assign").inc()
        self.metrics.partitions.set(len(self.registry.partitions))
        logger.info("registry assigned worker=%s added=%s partitions=%s", self.worker_id,
                    ",".join(str(tp.partition) for tp in partitions) or "-",
                    ",".join(map(str, self.registry.partitions)) or "-")

    def _on_revoke(self, consumer: Any, partitions: list[Any], change: str = "revoke") -> None:
        self.registry.revoke(tp.partition for tp in partitions)
        # stop those cameras now: the group hands the partitions to another worker only
        # after this callback returns, so a camera never runs on two workers
        self._reconcile()
        try:
            consumer.incremental_unassign(partitions)
        except Exception as exc:  # noqa: BLE001 - closing or already unassigned: nothing left to do
            logger.debug("incremental_unassign worker=%s error=%s", self.worker_id, exc)
        self.metrics.rebalances.labels(change=change).inc()
        self.metrics.partitions.set(len(self.registry.partitions))
        logger.info("registry %s worker=%s removed=%s partitions=%s", "lost" if change == "lost" else "revoked",
                    self.worker_id, ",".join(str(tp.partition) for tp in partitions) or "-",
                    ",".join(map(str, self.registry.partitions)) or "-")

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # our session expired (e.g. the process was frozen): the partitions may already run elsewhere
        logger.warning("registry partitions lost worker=%s partitions=%s", self.worker_id,
                       ",".join(str(tp.partition) for tp in partitions))
        self._on_revoke(consumer, partitions, change="lost")

    def _reconcile(self) -> None:
        """Start and stop reader threads so they match the registry's owned cameras."""
        want = self.registry.owned()
        with self._lock:
            stale = [cid for cid, r in self.readers.items() if want.get(cid) != r.cam]
        self._stop_cameras(stale)
        with self._lock:
            new = [cam for cid, cam in sorted(want.items()) if cid not in self.readers]
        self._size_limiter(len(new))  # before they start: their first chunks may come at once
        for cam in new:
            self._start_camera(cam)
        self.metrics.cameras.set(len(self.readers))

    def _size_limiter(self, starting: int = 0) -> None:
        """Every owned camera may have one chunk in flight whatever ``max_inflight_chunks`` says:
        cameras deliver in bursts (all at the same instant, for cameras started together), and
        a fixed bound under the camera count dropped healthy chunks as "backpressure" (100
        cameras against the default 64 dropped 12% of their frames with the broker keeping up)."""
        with self._lock:
            n = len(self.readers) + starting
        self.limiter.resize(max(self.cfg.ingest.max_inflight_chunks, n))

    def _start_camera(self, cam: CameraConfig) -> None:
        ic = self.cfg.ingest
        r = CameraReader(cam, self._emit, chunk_seconds=ic.chunk_seconds, jpeg_quality=ic.jpeg_quality,
                         reconnect_initial_s=ic.reconnect_initial_s, reconnect_max_s=ic.reconnect_max_s,
                         on_event=self._on_camera_event,
                         max_pixels=getattr(getattr(self.cfg, "limits", None), "max_pixels_per_frame", None))
        with self._lock:
            self.readers[cam.camera_id] = r
        r.start()
        logger.info("camera started worker=%s camera=%s kind=%s codec=%s", self.worker_id, cam.camera_id, cam.kind,
                    cam.codec)

    def _stop_cameras(self, camera_ids: list[str], join_s: float = STOP_JOIN_S) -> None:
        """Stop readers in parallel; wait for them up to ``join_s`` in all."""
        with self._lock:
            readers = [self.readers.pop(cid) for cid in camera_ids if cid in self.readers]
        for r in readers:
            r.stop()
        deadline = time.monotonic() + join_s
        for r in readers:
            r.join(max(0.0, deadline - time.monotonic()))
            if r.is_alive():
                # blocked in a read: it exits at its read timeout; _emit refuses its chunks meanwhile
                logger.warning("camera thread still blocked worker=%s camera=%s", self.worker_id, r.cam.camera_id)
            logger.info("camera stopped worker=%s camera=%s chunks=%d frames=%d dropped_frames=%d reconnects=%d",
                        self.worker_id, r.cam.camera_id, r.chunks, r.frames, r.dropped_total, r.reconnects)
        if readers:
            self.metrics.cameras.set(len(self.readers))

    def _on_camera_event(self, reader: CameraReader, kind: str, value: Any) -> None:
        if kind == "reconnect":
            self.metrics.reconnects.inc()
        elif kind == "skipped":
            # frames before the first keyframe of a connection cannot be decoded on their own
            self.metrics.dropped("before_keyframe", int(value), chunks=0)
        elif kind == "unfinished" and value:
            self.metrics.dropped("stopping", int(value))

    # ------------------------------------------------------------ produce
    def _emit(self, reader: CameraReader, msg: ChunkCaptured) -> bool:
        """Hand one chunk to the producer (called from camera threads).

        Returns False when the chunk is dropped; every drop is counted with its reason.
        """
        cid, frames = msg.camera_id, len(msg.pts_ms)

        def cancelled() -> bool:
            return reader.stop_event.is_set() or self.stop_event.is_set()

        if cancelled():
            # a revoked camera's thread may still be finishing a read: its chunks stay out
            self.metrics.dropped("stopping", frames)
            return False
        try:
            value, headers = encode_chunk(msg)
        except SchemaError as exc:
            logger.error("invalid chunk camera=%s chunk_seq=%d error=%s", cid, msg.chunk_seq, exc)
            self.metrics.dropped("invalid", frames)
            return False
        over = chunk_limit_problem(getattr(self.cfg, "limits", None), width=msg.width, height=msg.height,
                                   frames=len(msg.pts_ms), payload_bytes=len(value))
        if over:  # process would only dead-letter it: drop it here, counted, with the reason logged
            logger.error("chunk over limits camera=%s chunk_seq=%d: %s", cid, msg.chunk_seq, over)
            self.metrics.dropped("limit", frames)
            return False
        size = len(value) + len(cid) + sum(len(k) + len(v) for k, v in headers)
        limit = self.cfg.kafka.message_max_bytes
        if size > limit:
            logger.error("chunk over message_max_bytes camera=%s chunk_seq=%d bytes=%d limit=%d (shorten "
                         "ingest.chunk_seconds or raise kafka.message_max_bytes)", cid, msg.chunk_seq, size, limit)
            self.metrics.dropped("oversize", frames)
            return False
        if not self._producer_ok.is_set():  # a fatal error: a new producer is on its way
            if not reader.may_block:
                logger.debug("dropped chunk camera=%s chunk_seq=%d reason=produce_failed (producer being "
                             "replaced)", cid, msg.chunk_seq)
                self.metrics.dropped("produce_failed", frames)
                return False
            while not self._producer_ok.wait(0.2):  # a file camera waits for it, like for the broker
                if cancelled():
                    self.metrics.dropped("stopping", frames)
                    return False
        if reader.may_block:
            if not self.limiter.acquire(cid, cancelled):
                self.metrics.dropped("stopping", frames)
                return False
        elif not self.limiter.try_acquire(cid):
            # a live camera does not wait: what cannot be delivered is dropped and counted
            log = logger.warning if reader.dropped_frames == 0 else logger.debug
            log("camera dropping chunks camera=%s chunk_seq=%d frames=%d reason=backpressure inflight=%d/%d "
                "worker_inflight=%d/%d", cid, msg.chunk_seq, frames, self.limiter.inflight(cid),
                self.limiter.per_camera, self.limiter.inflight(), self.limiter.total)
            self.metrics.dropped("backpressure", frames)
            return False
        t0 = time.monotonic()
        payload_bytes = len(value)
        producer, gen = self._producer_enter()

        def done(d: Delivery) -> None:
            self.limiter.release(cid)
            if d.error:
                if d.fatal:
                    self._producer_fatal(gen, d.error)
                self.failed_deliveries += 1
                self.metrics.dropped("produce_failed", frames)
                self.metrics.errors.labels(kind="produce").inc()
                logger.error("produce failed camera=%s chunk_seq=%d error=%s", cid, msg.chunk_seq, d.error)
                return
            self.produced += 1
            self.metrics.chunks_out.labels(camera="all").inc()
            self.metrics.frames_out.inc(frames)
            self.metrics.bytes_out.inc(payload_bytes)
            self.metrics.stage_seconds.observe(time.monotonic() - t0)
            self.metrics.latency.observe(max(0.0, time.time() - msg.captured_at_ms / 1000.0))

        try:
            # a live camera gives the full local queue only a moment before dropping
            producer.produce(self.cfg.kafka.topics.raw, value, cid, headers, on_done=done,
                             retries=50 if reader.may_block else 2)
        except KafkaDeliveryError as exc:
            self.limiter.release(cid)
            logger.warning("dropped chunk camera=%s chunk_seq=%d reason=producer_full error=%s", cid, msg.chunk_seq,
                           exc)
            self.metrics.dropped("producer_full", frames)
            return False
        except Exception as exc:  # noqa: BLE001 - refused locally (size, topic): counted, never silent
            if is_fatal(exc):
                self._producer_fatal(gen, str(exc))
            self.limiter.release(cid)
            self.failed_deliveries += 1
            logger.error("produce refused camera=%s chunk_seq=%d error=%s", cid, msg.chunk_seq, exc)
            self.metrics.errors.labels(kind="produce").inc()
            self.metrics.dropped("produce_failed", frames)
            return False
        finally:
            self._producer_exit(gen)
        self.metrics.chunks_in.labels(camera="all").inc()
        self.metrics.frames_in.inc(frames)
        return True

    def _poll_deliveries(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._producer_cond:
                producer, gen = self.producer, self._renewal.gen
            try:
                producer.poll(0.1)
            except KafkaException as exc:
                # confluent-kafka can raise librdkafka's fatal error out of poll (tansu's
                # OUT_OF_ORDER_SEQUENCE_NUMBER ended this thread in a make load run): replace it
                if not is_fatal(exc):
                    raise
                self._producer_fatal(gen, str(exc.args[0] if exc.args else exc))
            self._heal_producer()

    # ------------------------------------------------------------ producer replacement
    def _producer_enter(self) -> tuple[Any, int]:
        """The current producer and its generation, counted as in use until :meth:`_producer_exit`."""
        with self._producer_cond:
            gen = self._renewal.gen
            self._producing[gen] = self._producing.get(gen, 0) + 1
            return self.producer, gen

    def _producer_exit(self, gen: int) -> None:
        with self._producer_cond:
            n = self._producing.get(gen, 0) - 1
            if n > 0:
                self._producing[gen] = n
            else:
                self._producing.pop(gen, None)
                self._producer_cond.notify_all()

    @property
    def producers_recreated(self) -> int:
        """Producers replaced after a fatal error so far."""
        return self._renewal.replaced

    def _producer_fatal(self, gen: int, reason: str) -> None:
        """Producer ``gen`` had a fatal error: schedule its replacement (once per producer)."""
        with self._producer_cond:
            delay = self._renewal.note_fatal(gen, reason)
            if delay is None:
                return  # an older producer's (already replaced), or already known
            self._producer_ok.clear()
        self.metrics.errors.labels(kind="producer_fatal").inc()
        logger.error("kafka producer fatal error worker=%s reason=%s: replacing the producer in %.1fs; until then "
                     "live chunks are dropped as produce_failed, file cameras wait", self.worker_id, reason, delay)

    def _heal_producer(self) -> None:
        """Replace the producer when it had a fatal error and its backoff has passed (delivery thread)."""
        with self._producer_cond:
            producer, gen = self.producer, self._renewal.gen
        reason = getattr(producer, "fatal", None)  # ChunkProducer's error_cb saw one
        if isinstance(reason, str) and reason:
            self._producer_fatal(gen, reason)
        with self._producer_cond:
            if not self._renewal.due():
                return
            if self.producer_factory is None:
                logger.error("kafka producer fatal error worker=%s: no producer factory to replace it with",
                             self.worker_id)
                self._renewal.never()
                return
        try:
            new = self.producer_factory()
        except Exception as exc:  # noqa: BLE001 - e.g. a config the client refuses: retried with backoff
            with self._producer_cond:
                delay = self._renewal.creation_failed()
            logger.error("kafka producer could not be created worker=%s error=%s (next try in %.1fs)",
                         self.worker_id, exc, delay)
            return
        with self._producer_cond:
            old, old_gen = self.producer, self._renewal.gen
            self.producer = new
            reason = self._renewal.swapped()
            # camera threads still inside produce() on the old one: it refuses at once, so this is short
            deadline = time.monotonic() + ABANDON_S
            while self._producing.get(old_gen) and deadline > time.monotonic():
                self._producer_cond.wait(deadline - time.monotonic())
        self._producer_ok.set()
        self.metrics.producer_recreated.inc()
        # what the old one still held gets its delivery reports now: failed, counted as produce_failed
        left = abandon_producer(old, ABANDON_S)
        log = logger.error if left else logger.warning
        log("kafka producer replaced worker=%s reason=%s replacements=%d reports_missing=%d", self.worker_id,
            reason, self.producers_recreated, left)

    # ------------------------------------------------------------ loop
    def run(self) -> int:
        """Join the group, run owned cameras until ``stop_event``; returns 0 after a clean stop."""
        from pipeline.runtime import RuntimeSettings, StageRuntime
        from pipeline.stage import StageKafka, registry_consumer_for

        k = self.cfg.kafka
        if self.publish_static and self.cfg.ingest.cameras:
            publish_cameras(self.cfg, self.cfg.ingest.cameras)
        built = self.producer is None
        if built:
            client_id = f"veil-ingest-{self.worker_id}"
            factory = self.producer_factory or (lambda: producer_for(k, client_id))
            self.producer_factory = factory  # the same factory replaces it after a fatal error
            self.producer = factory()
        self._poller_stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_deliveries, args=(self._poller_stop,), daemon=True,
                                        name=f"ingest-deliveries-{self.worker_id}")
        self._poller.start()
        stage = StageKafka(self.cfg, "ingest", self.metrics, float(self.cfg.ingest.status_interval_s))
        stage.consumer = RegistryReader(registry_consumer_for(k, self.cfg.ingest.consumer_group,
                                                              f"veil-ingest-{self.worker_id}"),
                                        [k.topics.cameras], self)
        # the producer stays this worker's (the camera threads and the delivery poller use it)
        runtime = StageRuntime(stage, _RegistryHandler(self), RuntimeSettings(
            group=self.cfg.ingest.consumer_group, topics=(k.topics.cameras,), poll_max=256, poll_s=0.2,
            track_offsets=False, produces=False), stop_event=self.stop_event)
        server = serve_config(self.metrics, self.cfg.metrics)
        logger.info("ingest started worker=%s group=%s registry=%s raw=%s", self.worker_id,
                    self.cfg.ingest.consumer_group, k.topics.cameras, k.topics.raw)
        try:
            return runtime.run()
        finally:
            if built:
                self.producer = None  # let librdkafka's threads and sockets go with the object
            if server is not None:
                server.shutdown()
            # the final counts, for whoever reads the log after the metrics endpoint is gone
            logger.info("ingest stopped worker=%s produced=%d failed=%d producers_replaced=%d frames_out=%d "
                        "dropped_frames=%s", self.worker_id, self.produced, self.failed_deliveries,
                        self.producers_recreated,
                        int(self.metrics.value("veil_ingest_frames_out_total") or 0),
                        ",".join(f"{r}:{n}" for r, n in self.drop_counts().items()) or "-")

    def _stop_all(self) -> None:
        """Stop every camera, then the delivery poller; flush what they produced."""
        with self._lock:
            cids = list(self.readers)
        self._stop_cameras(cids)
        if self._poller_stop is not None and self._poller is not None:
            self._poller_stop.set()
            self._poller.join(5.0)
            self._poller_stop = self._poller = None
            left = self.producer.flush(30.0)
            if left:
                logger.error("ingest stopping with undelivered chunks=%d worker=%s", left, self.worker_id)

    def drop_counts(self) -> dict[str, int]:
        """Frames dropped so far per reason (``veil_ingest_dropped_frames_total``), zeros left out."""
        from .metrics import DROP_REASONS

        out = {}
        for reason in DROP_REASONS:
            n = int(self.metrics.value("veil_ingest_dropped_frames_total", {"reason": reason}) or 0)
            if n:
                out[reason] = n
        return out

    def _apply_record(self, rec: Any) -> None:
        """One registry record (a :class:`pipeline.runtime.Record`): the camera it names, or a
        bad record counted and skipped."""
        cid = (rec.key or b"").decode("utf-8", "replace")
        try:
            cam = decode_camera(None if rec.tombstone else rec.value)
        except SchemaError as exc:
            logger.warning("bad camera record key=%s partition=%d offset=%d error=%s", cid, rec.src.partition,
                           rec.src.offset, exc)
            self.metrics.errors.labels(kind="bad_camera_record").inc()
            return
        self.registry.update(rec.src.partition, cid, cam)
        self._changed = True

    def _update_gauges(self) -> None:
        with self._lock:
            readers = list(self.readers.values())
        self.metrics.cameras.set(len(readers))
        self.metrics.cameras_failing.set(sum(1 for r in readers if r.state == "retrying"))
        self.metrics.inflight.set(self.limiter.inflight())

    def _log_status(self) -> None:
        with self._lock:
            readers = sorted(self.readers.items())
        states: dict[str, int] = {}
        for _cid, r in readers:
            states[r.state] = states.get(r.state, 0) + 1
        failing = [f"{cid}({r.last_error or '?'}"[:80] + ")" for cid, r in readers if r.state == "retrying"]
        logger.info("status worker=%s partitions=%s cameras=%d%s produced=%d failed=%d dropped_frames=%d "
                    "inflight=%d%s", self.worker_id, ",".join(map(str, self.registry.partitions)) or "-",
                    len(readers), "".join(f" {s}={n}" for s, n in sorted(states.items())), self.produced,
                    self.failed_deliveries, sum(r.dropped_total for _c, r in readers), self.limiter.inflight(),
                    (" retrying=" + ",".join(failing[:10])) if failing else "")


class _RegistryHandler(BaseHandler):
    """Ingest's handler on the stage runtime: registry records in, camera threads reconciled;
    nothing is produced through the runtime (camera threads produce) and nothing committed."""

    def __init__(self, worker: IngestWorker) -> None:
        self.w = worker

    def handle(self, rec: Record) -> Outcome:
        self.w._apply_record(rec)
        return Emit()

    def completions(self, timeout_s: float) -> Iterable[Completion]:
        w = self.w
        if w._changed:
            w._changed = False
            w._reconcile()
        now = time.monotonic()
        if now - w._last_gauges >= 1.0:
            w._last_gauges = now
            w._update_gauges()
        return ()

    def ready(self) -> bool:
        return self.w._joined and not self.w.stop_event.is_set()

    def drain(self) -> Iterable[Completion]:
        self.w.metrics.ready = False
        self.w._stop_all()  # cameras first: nothing new is produced while the producer flushes
        return ()

    def status(self) -> None:
        self.w._log_status()

    def close(self) -> None:
        self.w._stop_all()


class RegistryReader:
    """The registry consumer as the runtime's consumer: every assigned partition is read from
    its beginning (a compacted registry), nothing is committed, and the worker's callbacks
    see assignments, revocations and lost partitions as they happen."""

    def __init__(self, consumer: Any, topics: list[str], worker: IngestWorker) -> None:
        self._c = consumer
        self.w = worker
        self.assigned: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()
        consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost)

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        self.w._on_assign(consumer, partitions)
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)
        self.w._on_revoke(consumer, partitions)

    def _lost(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)
        self.w._on_lost(consumer, partitions)

    def poll(self, timeout_s: float, max_messages: int = 256) -> list[Any]:
        from confluent_kafka import KafkaError

        out = []
        for msg in self._c.consume(max_messages, timeout_s):
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                self.w.metrics.errors.labels(kind="registry").inc()
                logger.warning("registry consume error worker=%s error=%s", self.w.worker_id, err)
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        return None  # read whole on every assignment: nothing to commit

    def pause(self, tps: list[tuple[str, int]]) -> None:
        return None  # stopping: the worker leaves the group right after

    def resume(self, tps: list[tuple[str, int]]) -> None:
        return None

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def close(self) -> None:
        self._c.close()  # leaves the group now: the others take our cameras without waiting
