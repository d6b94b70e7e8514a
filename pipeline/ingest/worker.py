"""``veilstream ingest``: own the cameras of the registry partitions this worker is
assigned, read them, and produce one message per chunk to the raw topic."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pipeline.kafka import ChunkProducer, Delivery
from pipeline.metrics import StatusLine, WorkerMetrics, serve
from schemas.config import CameraConfig
from schemas.messages import ChunkCaptured, SchemaError, decode_camera, encode_chunk

from .registry import CameraRegistry, publish_cameras
from .source import CameraReader

logger = logging.getLogger(__name__)


class IngestWorker:
    """One ingest process. ``run()`` blocks until ``stop_event`` is set, returns 0.

    Args:
        config: the parsed pipeline config.
        stop_event: set (e.g. by SIGTERM) to stop reading, flush and exit.
        worker_id: this worker's name in logs and in the group (``client.id``).
        publish_static: publish ``config.ingest.cameras`` to the registry at start.
    """

    def __init__(self, config: Any, stop_event: threading.Event | None = None, worker_id: str = "",
                 metrics: WorkerMetrics | None = None, publish_static: bool = True) -> None:
        self.cfg = config
        self.stop_event = stop_event or threading.Event()
        self.worker_id = worker_id or f"ingest-{id(self) % 100000}"
        self.metrics = metrics or WorkerMetrics("ingest")
        self.publish_static = publish_static
        self.registry = CameraRegistry()
        self.readers: dict[str, CameraReader] = {}
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._inflight_total = 0
        self._running: dict[str, CameraConfig] = {}
        self.produced = 0
        self.failed_deliveries = 0
        self.status = StatusLine(config.ingest.status_interval_s)
        self._assignment_changed = threading.Event()

    # ------------------------------------------------------------ ownership
    def owned_cameras(self) -> list[str]:
        """Camera ids this worker is reading now."""
        with self._lock:
            return sorted(self._running)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        for tp in partitions:
            tp.offset = OFFSET_BEGINNING  # compacted registry: always read it whole
        self.registry.assign(tp.partition for tp in partitions)
        consumer.assign(partitions)
        self._assignment_changed.set()
        logger.info("registry assigned worker=%s partitions=%s", self.worker_id,
                    ",".join(str(tp.partition) for tp in partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.registry.revoke(tp.partition for tp in partitions)
        self._reconcile()  # stop those cameras before another worker starts them
        consumer.unassign()
        logger.info("registry revoked worker=%s partitions=%s", self.worker_id,
                    ",".join(str(tp.partition) for tp in partitions))

    def _reconcile(self) -> None:
        want = self.registry.owned()
        with self._lock:
            running = dict(self._running)
        for cid in running:
            if cid not in want or want[cid] != running[cid]:
                self._stop_camera(cid)
        for cid, cam in want.items():
            if cid not in self.readers:
                self._start_camera(cam)
        self.metrics.cameras.set(len(self.readers))

    def _start_camera(self, cam: CameraConfig) -> None:
        ic = self.cfg.ingest
        r = CameraReader(cam, self._emit, chunk_seconds=ic.chunk_seconds, jpeg_quality=ic.jpeg_quality,
                         reconnect_initial_s=ic.reconnect_initial_s, reconnect_max_s=ic.reconnect_max_s,
                         on_event=lambda kind, why, cid=cam.camera_id: self._on_camera_event(cid, kind, why))
        with self._lock:
            self.readers[cam.camera_id] = r
            self._running[cam.camera_id] = cam
            self._inflight.setdefault(cam.camera_id, 0)
        r.start()
        logger.info("camera started worker=%s camera=%s kind=%s", self.worker_id, cam.camera_id, cam.kind)

    def _stop_camera(self, cid: str, join_s: float = 10.0) -> None:
        with self._lock:
            r = self.readers.pop(cid, None)
            self._running.pop(cid, None)
        if r is None:
            return
        r.stop()
        r.join(join_s)
        logger.info("camera stopped worker=%s camera=%s chunks=%d frames=%d dropped=%d", self.worker_id, cid,
                    r.chunks, r.frames, r.dropped_total)

    def _on_camera_event(self, cid: str, kind: str, why: str) -> None:
        if kind == "reconnect":
            self.metrics.errors.labels(kind="camera_reconnect").inc()

    # ------------------------------------------------------------ produce
    def _emit(self, msg: ChunkCaptured, frames: int) -> bool:
        """Called from a camera thread. Returns False when the chunk is dropped."""
        ic = self.cfg.ingest
        cid = msg.camera_id
        reader = self.readers.get(cid)
        live = reader is None or reader.cam.kind != "file" or reader.cam.realtime
        while True:
            with self._lock:
                full = (self._inflight.get(cid, 0) >= ic.max_inflight_per_camera
                        or self._inflight_total >= ic.max_inflight_chunks)
                if not full:
                    self._inflight[cid] = self._inflight.get(cid, 0) + 1
                    self._inflight_total += 1
                    break
            if live:
                # a live camera does not wait: frames it cannot deliver are dropped and counted
                self.metrics.drops.labels(reason="backpressure").inc(frames)
                logger.warning("dropped chunk camera=%s seq=%d frames=%d reason=backpressure", cid, msg.chunk_seq,
                               frames)
                return False
            if self.stop_event.is_set() or (reader is not None and reader.stop_event.is_set()):
                self.metrics.drops.labels(reason="stopping").inc(frames)
                return False
            time.sleep(0.02)  # a file read faster than real time waits for the broker
        value, headers = encode_chunk(msg)
        t0 = time.monotonic()

        def done(d: Delivery) -> None:
            with self._lock:
                self._inflight[cid] = max(0, self._inflight.get(cid, 1) - 1)
                self._inflight_total = max(0, self._inflight_total - 1)
            if d.error:
                self.failed_deliveries += 1
                self.metrics.drops.labels(reason="produce_failed").inc(frames)
                self.metrics.errors.labels(kind="produce").inc()
                logger.error("produce failed camera=%s seq=%d error=%s", cid, msg.chunk_seq, d.error)
                return
            self.produced += 1
            self.metrics.chunks_out.labels(camera="all").inc()
            self.metrics.frames_out.inc(frames)
            self.metrics.stage_seconds.observe(time.monotonic() - t0)
            self.metrics.latency.observe(max(0.0, time.time() - msg.pts_ms[-1] / 1000.0))

        self.metrics.chunks_in.labels(camera="all").inc()
        self.metrics.frames_in.inc(frames)
        try:
            self.producer.produce(self.cfg.kafka.topics.raw, value, cid, headers, on_done=done)
        except Exception as exc:  # noqa: BLE001 - queue full for too long: counted drop
            done(Delivery(done=True, error=str(exc)))
            return False
        return True

    # ------------------------------------------------------------ loop
    def run(self) -> int:
        from confluent_kafka import Consumer

        k = self.cfg.kafka
        if self.publish_static and self.cfg.ingest.cameras:
            publish_cameras(self.cfg, self.cfg.ingest.cameras)
        self.producer = ChunkProducer(k.bootstrap_servers, message_max_bytes=k.message_max_bytes,
                                      client_id=f"veil-ingest-{self.worker_id}")
        consumer = Consumer({
            "bootstrap.servers": k.bootstrap_servers, "group.id": self.cfg.ingest.consumer_group,
            "client.id": f"veil-ingest-{self.worker_id}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": k.session_timeout_ms,
            "heartbeat.interval.ms": max(500, k.session_timeout_ms // 6),
            "partition.assignment.strategy": "range",
        })
        consumer.subscribe([k.topics.cameras], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        m = self.cfg.metrics
        server = serve(self.metrics, m.port if m.enabled else -1, host=m.host)
        try:
            while not self.stop_event.is_set():
                self.metrics.tick()
                msgs = consumer.consume(64, 0.2)
                changed = self._assignment_changed.is_set()
                for msg in msgs:
                    if msg.error():
                        continue
                    cid = (msg.key() or b"").decode("utf-8", "replace")
                    try:
                        cam = decode_camera(msg.value())
                    except SchemaError as exc:
                        logger.warning("bad camera record key=%s partition=%d offset=%d error=%s", cid,
                                       msg.partition(), msg.offset(), exc)
                        self.metrics.errors.labels(kind="bad_camera_record").inc()
                        continue
                    self.registry.update(msg.partition(), cid, cam)
                    changed = True
                if changed:
                    self._assignment_changed.clear()
                    self._reconcile()
                self.metrics.ready = bool(consumer.assignment()) or bool(self.registry.partitions)
                self.producer.poll(0)
                if self.status.due():
                    self._log_status()
        finally:
            for cid in list(self.readers):
                self._stop_camera(cid)
            left = self.producer.flush(30.0)
            if left:
                logger.error("ingest stopping with %d undelivered chunks", left)
            consumer.close()
            if server is not None:
                server.shutdown()
            logger.info("ingest stopped worker=%s produced=%d", self.worker_id, self.produced)
        return 0

    def _log_status(self) -> None:
        parts = []
        for cid, r in sorted(self.readers.items()):
            state = "done" if r.finished else ("retrying" if r.last_error and r.reconnects else "ok")
            parts.append(f"{cid}:{r.chunks}c/{r.dropped_total}d/{state}")
        logger.info("status worker=%s cameras=%d produced=%d %s", self.worker_id, len(self.readers), self.produced,
                    " ".join(parts))
