"""Ingest metrics: the common worker metrics plus what only ingest knows.

All on the one registry that ``pipeline.metrics.serve`` exposes. Names follow
``veil_ingest_<quantity>_<unit>``; labels stay low-cardinality (no camera label: a worker
may own thousands; per-camera detail goes to the periodic status log line).

Common (``WorkerMetrics("ingest")``), as ingest uses them:
    veil_ingest_chunks_in_total{camera="all"}  chunks handed to the producer
    veil_ingest_chunks_out_total{camera="all"} chunks acknowledged by the broker
    veil_ingest_frames_in_total / _frames_out_total  their frames
    veil_ingest_dropped_frames_total{reason}   frames dropped on purpose: backpressure,
        producer_full, oversize, produce_failed, invalid, stopping, before_keyframe
    veil_ingest_latency_seconds                first frame captured -> chunk acknowledged
    veil_ingest_step_seconds                   produce call -> acknowledgement
    veil_ingest_inflight_chunks                unacknowledged chunks now
    veil_ingest_cameras                        cameras owned (reader threads) now
    veil_ingest_errors_total{kind}             produce, producer_fatal, bad_camera_record
    veil_ingest_producer_recreated_total       producers replaced after a fatal librdkafka error
Ingest only:
    veil_ingest_produced_bytes_total           payload bytes acknowledged
    veil_ingest_dropped_chunks_total{reason}   chunks dropped, same reasons
    veil_ingest_reconnects_total               camera connection failures (each retried)
    veil_ingest_cameras_failing                cameras waiting to reconnect now
    veil_ingest_registry_partitions            registry partitions assigned to this worker
    veil_ingest_rebalances_total{change}       group assignment changes (assign / revoke / lost)
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from pipeline.metrics import WorkerMetrics

DROP_REASONS = ("backpressure", "producer_full", "oversize", "produce_failed", "invalid", "stopping",
                "before_keyframe")


class IngestMetrics(WorkerMetrics):
    """``WorkerMetrics("ingest")`` plus ingest-only counters (see the module doc)."""

    def __init__(self) -> None:
        super().__init__("ingest")
        r = self.registry
        self.bytes_out = Counter("veil_ingest_produced_bytes_total", "chunk payload bytes acknowledged by the broker",
                                 registry=r)
        self.chunk_drops = Counter("veil_ingest_dropped_chunks_total", "chunks dropped on purpose, per reason",
                                   ["reason"], registry=r)
        self.reconnects = Counter("veil_ingest_reconnects_total", "camera connection failures (each is retried "
                                  "with exponential backoff)", registry=r)
        self.cameras_failing = Gauge("veil_ingest_cameras_failing", "owned cameras waiting to reconnect",
                                     registry=r)
        self.partitions = Gauge("veil_ingest_registry_partitions", "camera registry partitions assigned",
                                registry=r)
        self.rebalances = Counter("veil_ingest_rebalances_total", "registry assignment changes", ["change"],
                                  registry=r)
        for reason in DROP_REASONS:  # export zeros, so a dashboard sees every reason from the start
            self.drops.labels(reason=reason)
            self.chunk_drops.labels(reason=reason)

    def dropped(self, reason: str, frames: int, chunks: int = 1) -> None:
        self.drops.labels(reason=reason).inc(frames)
        if chunks:
            self.chunk_drops.labels(reason=reason).inc(chunks)
