"""``veilstream process``: consume raw chunks, redact them on Ray, produce redacted chunks.

The consumer loop (this module's :class:`ProcessWorker`) owns the Kafka consumer and
producer, so offsets are committed by the one process that knows what is durable. It
runs in a consumer actor inside the Ray cluster (production: :mod:`.consumers`) or in the
``veilstream process`` process on the local Ray (local mode, tests): the same code. Per
chunk it makes one remote call, and decoded frames never come back to it::

    poll raw ──► ChunkActor.redact(ChunkTask) ──► [decode ─► DetectorActor.detect (batched
    across callers) ─► mask ─► encode] ──► ChunkResult ──► produce redacted ──► broker ack
    ──► offset finished ──► commit

* Bounded work: at most ``max_inflight_chunks`` chunks in flight, and per partition
  ``max_inflight_per_partition``; full partitions are paused, resumed at half.
* Completion order: ``ray.wait`` drains whatever finished first; per partition the
  results are produced in offset order (a camera's chunks stay in order downstream).
* Fail closed: a detector that raises or times out masks its frames whole (flagged); a
  chunk that cannot be decoded or encoded goes to the DLQ with the reason. Nothing is
  produced unmasked.
* Outages are retried, never dead-lettered: a chunk whose actor or node died is
  resubmitted (bounded, with backoff); after ``process.outage_retries`` the worker exits
  non-zero with the offset uncommitted, and a restart resumes from there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pipeline.metrics import WorkerMetrics, serve_config
from pipeline.offsets import should_pause, should_resume
from pipeline.stage import Source, StageKafka, root_cause, stop_on_signals
from schemas.errors import VeilStreamError

from .actors import ChunkResult, ChunkStage, ChunkTask, is_outage
from .plan import MaskingPlan, PolicyPlan, build_plan

logger = logging.getLogger(__name__)

_root_cause = root_cause  # the name earlier tests and callers use


class OutageError(VeilStreamError):
    """Ray stayed unavailable for a chunk through every retry: exit, commit nothing more."""


@dataclass
class Job:
    """One consumed chunk on its way through the stage."""

    src: Source
    key: bytes | None
    value: bytes = field(repr=False)
    headers: list[tuple[str, bytes]]
    meta: Any = None  # ChunkCaptured
    policy: PolicyPlan | None = None
    stage: ChunkStage = ChunkStage.QUEUED
    result: ChunkResult | None = None
    dlq: bool = False
    attempts: int = 0
    retry_at: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def tp(self) -> tuple[str, int]:
        return self.src.tp


@dataclass(frozen=True)
class PipelineGroup:
    """What one node-local group asks of one node: bundle 0 the detector, then one bundle per
    chunk actor (``ray.util.placement_group`` bundles)."""

    bundles: list[dict[str, float]]


def _bundle(cpus: float, gpus: float = 0.0) -> dict[str, float]:
    out = {k: float(v) for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0}
    # a bundle cannot be empty; an actor asking for nothing still fits a sliver of a CPU
    return out or {"CPU": 0.01}


def node_local_groups(replicas: int, chunk_workers: int, *, det_cpus: float, det_gpus: float,
                      worker_cpus: float) -> list[PipelineGroup]:
    """One group per detector replica; chunk actor ``w`` goes to group ``w % replicas``, bundle
    ``1 + w // replicas`` (so every group gets its share, the first ones one more)."""
    replicas = max(1, replicas)
    return [PipelineGroup([_bundle(det_cpus, det_gpus)]
                          + [_bundle(worker_cpus)] * len(range(g, chunk_workers, replicas)))
            for g in range(replicas)]


def retry_delay_s(attempt: int) -> float:
    """Backoff before the ``attempt``-th retry of a chunk hit by an outage (1-based)."""
    return float(min(10.0, 0.5 * 2 ** max(0, attempt - 1)))


class ProcessWorker:
    """The consumer loop. ``run()`` blocks until ``stop_event`` is set.

    Args:
        config: a ``PipelineConfig``.
        stop_event: set it to stop (SIGTERM does, in the main thread).
        plan: the masking plan (built from ``config`` by default).
    """

    def __init__(self, config: Any, stop_event: threading.Event | None = None,
                 metrics: WorkerMetrics | None = None, plan: MaskingPlan | None = None) -> None:
        self.cfg = config
        self.stop_event = stop_event or threading.Event()
        self.kafka = StageKafka(config, "process", metrics, getattr(config.process, "status_interval_s", 10.0))
        self.metrics = self.kafka.metrics
        # the driver's $VEILSTREAM_MODEL_DIR travels with the plan: actors run in Ray worker
        # processes on other nodes whose environment the user never set
        self.plan = plan or build_plan(config, model_dir=os.environ.get("VEILSTREAM_MODEL_DIR") or None)
        self.inflight: dict[Any, Job] = {}  # ray ref -> job
        self.retrying: list[Job] = []
        self.order: dict[tuple[str, int], deque[Job]] = {}
        self.produced = 0
        self.detectors: list[Any] = []
        self.workers: list[Any] = []
        self.placement_groups: list[Any] = []
        self.model_ids: list[dict[str, str]] = []
        self._rr = 0
        self._restarted_at: dict[int, float] = {}

    @property
    def tracker(self) -> Any:
        return self.kafka.tracker

    # ---------------------------------------------------------------- Ray
    def _start_ray(self) -> None:
        import ray

        from .actors import ChunkActor, DetectorActor

        rc = self.cfg.ray
        if not ray.is_initialized():
            from pipeline.raynet import keep_ray_on_loopback

            keep_ray_on_loopback(rc.address)  # a local Ray stays on 127.0.0.1 (Ray has no authentication)
            kw: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True,
                                  "log_to_driver": True, "configure_logging": False}
            if rc.address:
                ray.init(address=rc.address, **kw)
            else:
                ray.init(num_cpus=rc.num_cpus, object_store_memory=rc.object_store_mb * 1024 * 1024, **kw)
        det = rc.detector
        p = self.cfg.process
        # Node-local processing: one placement group per detector replica, packed onto ONE node
        # (STRICT_PACK), holding that detector and its share of the chunk actors. A chunk's
        # compressed payload travels to its chunk actor; decode, detection (the detector batches
        # the frames of every chunk actor of its group), masking and encode happen on that node;
        # only the H.264 result travels back. If the node dies, Ray reschedules the whole group
        # onto another node together. Restarted actors keep their handles; calls in flight fail
        # with RayActorError, an outage: the chunk is retried, never DLQ'd.
        groups = node_local_groups(det.replicas, rc.chunk_workers, det_cpus=det.num_cpus, det_gpus=det.num_gpus,
                                   worker_cpus=rc.worker_num_cpus) if rc.placement == "node_local" else []
        self.placement_groups = []
        self.detectors, self.workers = [], []
        for g in range(det.replicas):
            strategy: dict[str, Any] = {}
            if groups:
                from ray.util.placement_group import placement_group
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                pg = placement_group(groups[g].bundles, strategy="STRICT_PACK")
                self.placement_groups.append(pg)
                strategy = {"scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)}
            self.detectors.append(
                ray.remote(DetectorActor).options(num_cpus=det.num_cpus, num_gpus=det.num_gpus, max_restarts=-1,
                                                  max_task_retries=0, max_concurrency=64, **strategy)
                .remote(self.plan, max_batch_frames=det.batch_size, max_wait_s=det.max_wait_ms / 1000.0,
                        timeout_s=p.detector_timeout_s))
        for w in range(rc.chunk_workers):
            g = w % det.replicas
            strategy = {}
            if groups:
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                strategy = {"scheduling_strategy": PlacementGroupSchedulingStrategy(
                    self.placement_groups[g], placement_group_bundle_index=1 + w // det.replicas)}
            self.workers.append(
                ray.remote(ChunkActor).options(num_cpus=rc.worker_num_cpus, max_restarts=-1, max_task_retries=0,
                                               max_concurrency=rc.chunk_concurrency, **strategy)
                .remote(self.plan, self.detectors, crf=p.crf, preset=p.preset, detector_timeout_s=p.detector_timeout_s,
                        local=[g] if groups else None))
        logger.info("policies %s default=%s routed=%s", self.plan.describe(), self.plan.default_id, self.plan.routed)
        # Building sessions and warming up takes seconds: wait here, not at the first chunk. Actors
        # needing a GPU wait for the node the cluster autoscaler adds: as long as the start-up
        # budget /healthz grants (metrics.startup_budget_s), not a fixed 300 s that would
        # crash-loop the pod while the node joins.
        try:
            ready = ray.get([d.ready.remote() for d in self.detectors] + [w.ready.remote() for w in self.workers],
                            timeout=float(getattr(self.cfg.metrics, "startup_budget_s", 300.0)))
        except Exception as exc:  # noqa: BLE001 - an actor's __init__ failed: say why in one line
            raise VeilStreamError(f"process actors failed to start: {root_cause(exc)}") from None
        self.model_ids = ready[0] if self.detectors else []
        logger.info("ray ready detectors=%d chunk_actors=%d concurrency=%d models=%s", len(self.detectors),
                    len(self.workers), rc.chunk_concurrency, ",".join(m["id"] for m in self.model_ids))

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        import ray

        k, p = self.cfg.kafka, self.cfg.process
        # Probes first: /healthz is live while Ray, the actors and their models start (a GPU
        # node may still be joining), /readyz turns 200 only once the loop consumes.
        server = serve_config(self.metrics, self.cfg.metrics)
        try:
            with self.metrics.starting(getattr(self.cfg.metrics, "startup_budget_s", 900.0)):
                self._start_ray()
        except BaseException:
            self._release_actors(ray)
            if server is not None:
                server.shutdown()
            raise
        stop_on_signals(self.stop_event)  # ray.init installed its own SIGTERM handler: take it back
        self.kafka.connect(p.consumer_group, [k.topics.raw], on_revoke=self._on_revoke)
        self.metrics.ready = True
        try:
            while not self.stop_event.is_set():
                self.step(ray)
            self._shutdown(ray)
        finally:
            self.metrics.ready = False
            self._release_actors(ray)
            self.kafka.consumer.close()
            if server is not None:
                server.shutdown()
        return 0

    def step(self, ray: Any) -> None:
        """One loop iteration: poll (within the bounds), submit, drain, produce, commit."""
        p = self.cfg.process
        consumer, producer = self.kafka.consumer, self.kafka.producer
        self.metrics.tick()
        free = p.max_inflight_chunks - self.tracker.inflight()
        if free > 0:
            t0 = time.thread_time()
            msgs = consumer.poll(0.02 if self.inflight else 0.2, free)
            self.metrics.cpu_seconds.labels(step="kafka").inc(time.thread_time() - t0)
            for msg in msgs:
                self._accept(msg)
        for tp in list(consumer.assigned):
            n = self.tracker.inflight(tp)
            if should_pause(n, p.max_inflight_per_partition):
                consumer.pause([tp])
            elif tp in consumer.paused and should_resume(n, p.max_inflight_per_partition):
                consumer.resume([tp])
        self._resubmit_due()
        self._drain(ray, timeout_s=0.02)
        t0 = time.thread_time()
        self._emit_in_order()
        producer.poll(0)
        self.kafka.commit()
        self.metrics.cpu_seconds.labels(step="kafka").inc(time.thread_time() - t0)
        self.metrics.inflight.set(self.tracker.inflight())
        if self.kafka.status.due():
            self.kafka.log_status(produced=self.produced, retrying=len(self.retrying),
                                  fail_closed=int(self.metrics.value("veil_process_fail_closed_frames_total")))

    def _accept(self, msg: Any) -> None:
        from schemas.messages import SchemaError, decode_chunk_captured

        src = Source.of(msg)
        self.kafka.started(src)
        job = Job(src, msg.key(), msg.value() or b"", list(msg.headers() or []))
        self.order.setdefault(src.tp, deque()).append(job)
        try:
            job.meta = decode_chunk_captured(job.value, job.headers, key=job.key,
                                             limits=getattr(self.cfg, "limits", None))
        except SchemaError as exc:  # key_mismatch / limit_exceeded carry their own reason
            self._to_dlq(job, getattr(exc, "reason", "invalid_message"), str(exc))
            return
        job.policy = self.plan.for_chunk(job.meta.policy_id)
        if job.policy is None:  # nobody decided how to mask it: never guess
            self._to_dlq(job, "unknown_policy",
                         f"camera {job.meta.camera_id} names policy {job.meta.policy_id!r}, which is not in "
                         f"policies_dir {self.cfg.policies_dir} (found: {', '.join(sorted(self.plan.policies))}); "
                         f"write it, restart the process workers, and replay the DLQ")
            return
        self.metrics.frames_in.inc(len(job.meta.pts_ms))
        self._submit(job)

    def _submit(self, job: Job) -> None:
        m = job.meta
        limits = getattr(self.cfg, "limits", None)
        task = ChunkTask(codec=m.codec, payload=m.payload, camera_id=m.camera_id, fps=m.fps, pts_ms=tuple(m.pts_ms),
                         width=m.width, height=m.height, policy_id=job.policy.policy_id if job.policy else None,
                         camera_zones=tuple(getattr(m, "zones", ()) or ()),
                         max_pixels=getattr(limits, "max_pixels_per_frame", None),
                         max_decoded_bytes=getattr(limits, "max_decoded_bytes_per_chunk", None))
        self._rr = (self._rr + 1) % len(self.workers)
        ref = self.workers[self._rr].redact.remote(task)
        job.stage = ChunkStage.DECODE
        self.inflight[ref] = job

    def _resubmit_due(self) -> None:
        now = time.monotonic()
        due = [j for j in self.retrying if j.retry_at <= now]
        for job in due:
            self.retrying.remove(job)
            self._submit(job)

    def _drain(self, ray: Any, timeout_s: float) -> None:
        if not self.inflight:
            return
        ready, _ = ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=timeout_s,
                            fetch_local=True)
        for ref in ready:
            job = self.inflight.pop(ref)
            try:
                res: ChunkResult = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - RayTaskError, RayActorError, ...
                if is_outage(exc):
                    self._outage(job, root_cause(exc))
                else:  # our code raised on this input: it would raise again
                    self._to_dlq(job, "redaction_failed", root_cause(exc))
                continue
            self._account_cpu(res)
            if res.outage:
                self._outage(job, res.error)
                continue
            if res.detector_timeout is not None:
                self._restart_detector(ray, res.detector_timeout)
            if res.failed_stage is ChunkStage.DECODE:
                self._to_dlq(job, res.reason or "decode_failed", res.error)
                continue
            if res.failed_stage is not None:
                self._to_dlq(job, "redaction_failed", res.error)
                continue
            job.result, job.stage = res, ChunkStage.DONE

    def _account_cpu(self, res: ChunkResult) -> None:
        for step, s in res.cpu_s.items():
            self.metrics.cpu_seconds.labels(step=step).inc(max(0.0, s))

    def _outage(self, job: Job, why: str) -> None:
        """An actor or node was unavailable: retry the chunk later (its offset stays in
        flight, so nothing past it is committed); give up by failing the worker."""
        job.attempts += 1
        self.metrics.errors.labels(kind="ray_outage").inc()
        if job.attempts > self.cfg.process.outage_retries:
            raise OutageError(f"Ray stayed unavailable for chunk {job.src.topic}[{job.src.partition}]@"
                              f"{job.src.offset} through {self.cfg.process.outage_retries} retries ({why}); "
                              f"exiting without committing it: a restarted worker resumes from the committed offset")
        delay = retry_delay_s(job.attempts)
        logger.warning("ray unavailable camera=%s offset=%d attempt=%d retry_in=%.1fs: %s",
                       getattr(job.meta, "camera_id", "?"), job.src.offset, job.attempts, delay, why)
        job.stage, job.retry_at = ChunkStage.QUEUED, time.monotonic() + delay
        self.retrying.append(job)

    def _restart_detector(self, ray: Any, idx: int) -> None:
        """A detector timed out (hung): restart it (Ray keeps the handle). Its calls in
        flight fail as an outage and are retried on the restarted actor."""
        if not (0 <= idx < len(self.detectors)):
            return
        # at most once per window: a detector that is only slow (every call past its
        # deadline) must not be restarted under the chunks it is working on, again and again
        now, window = time.monotonic(), max(30.0, 2 * self.cfg.process.detector_timeout_s)
        if now - self._restarted_at.get(idx, -window) < window:
            return
        self._restarted_at[idx] = now
        logger.error("detector %d stopped answering: restarting it (its chunks failed closed)", idx)
        self.metrics.errors.labels(kind="detector_timeout").inc()
        try:
            ray.kill(self.detectors[idx], no_restart=False)
        except Exception as exc:  # noqa: BLE001 - already dead or restarting
            logger.warning("detector restart: %s", root_cause(exc))

    # ---------------------------------------------------------------- output
    def _emit_in_order(self) -> None:
        for q in self.order.values():
            while q and q[0].stage is ChunkStage.DONE:
                job = q.popleft()
                if not job.dlq:
                    self._produce(job)

    def _produce(self, job: Job) -> None:
        from schemas.messages import ChunkRedacted, encode_chunk

        r, m = job.result, job.meta
        assert r is not None and job.policy is not None
        if r.dropped:  # the policy drops frames whose detection failed: counted, never silent
            self.metrics.drops.labels(reason="detection_failed").inc(r.dropped)
        if r.payload is None:
            logger.warning("chunk dropped whole camera=%s chunk_seq=%d offset=%d frames=%d: detection failed and "
                           "the policy drops such frames", m.camera_id, m.chunk_seq, job.src.offset, r.dropped)
            self.kafka.finished(job.src)
            return
        out = ChunkRedacted(
            camera_id=m.camera_id, chunk_seq=m.chunk_seq, pts_ms=r.pts_ms, fps=m.fps, width=m.width,
            height=m.height, codec="h264", captured_at_ms=m.captured_at_ms, payload=r.payload,
            masks_per_class=dict(r.masks_per_class), fail_closed_frames=r.fail_closed_frames,
            models=tuple(self.model_ids), policy_id=job.policy.policy_id, policy_version=job.policy.version,
            dropped_frames=int(getattr(m, "dropped_frames", 0) or 0) + r.dropped)
        value, headers = encode_chunk(out)
        self.kafka.producer.produce(self.cfg.kafka.topics.redacted, value, m.camera_id, headers,
                                    on_done=self._acked(job, r))

    def _acked(self, job: Job, r: ChunkResult) -> Any:
        def cb(d: Any) -> None:
            if d.error:
                # Not durable: leave the offset in flight so it is never committed; the chunk
                # is redone after a restart or rebalance (at-least-once).
                logger.error("produce failed camera=%s offset=%d error=%s", job.meta.camera_id, job.src.offset,
                             d.error)
                self.metrics.errors.labels(kind="produce").inc()
                return
            self.kafka.finished(job.src)
            self.produced += 1
            self.metrics.chunks_out.labels(camera="all").inc()
            self.metrics.frames_out.inc(len(r.pts_ms))
            for cls, n in r.masks_per_class.items():
                self.metrics.frames_masked.labels(cls=cls).inc(n)
            if r.fail_closed_frames:
                self.metrics.fail_closed.inc(len(r.fail_closed_frames))
            self.metrics.latency.observe(max(0.0, time.time() - job.meta.captured_at_ms / 1000.0))
            self.metrics.stage_seconds.observe(time.monotonic() - job.started)
        return cb

    def _to_dlq(self, job: Job, reason: str, error: str) -> None:
        job.stage, job.dlq = ChunkStage.DONE, True
        self.kafka.to_dlq(job.src, job.key, job.value, job.headers, reason, error)

    # ---------------------------------------------------------------- rebalance, shutdown
    def _on_revoke(self, tps: list[tuple[str, int]]) -> None:
        abandoned = self.kafka.revoke(tps)  # flush (acks still count), commit, forget in flight
        gone = set(tps)
        for tp in tps:
            self.order.pop(tp, None)
        self.retrying = [j for j in self.retrying if j.tp not in gone]
        for ref, job in list(self.inflight.items()):
            if job.tp in gone:
                del self.inflight[ref]  # its result is ignored: the new owner redoes it
        if abandoned:
            logger.info("revoked partitions abandoned %d in-flight chunks to their new owner", abandoned)

    def _shutdown(self, ray: Any) -> None:
        """Stop consuming, finish what is in flight (bounded), flush, commit."""
        deadline = time.monotonic() + self.cfg.process.drain_timeout_s
        self.kafka.pause_all()
        while (self.inflight or self.retrying) and time.monotonic() < deadline:
            self._resubmit_due()
            self._drain(ray, timeout_s=0.05)
            self._emit_in_order()
            self.kafka.producer.poll(0)
        self._emit_in_order()
        self.kafka.producer.flush(30.0)
        self.kafka.commit()
        logger.info("process stopped produced=%d inflight_left=%d", self.produced, self.tracker.inflight())

    def _release_actors(self, ray: Any) -> None:
        """Give the node-local groups back (their actors with them): a placement group outlives
        its actors' handles, and a worker started again in the same Ray would wait for them."""
        if not self.placement_groups:
            return
        from ray.util.placement_group import remove_placement_group

        for pg in self.placement_groups:
            try:
                remove_placement_group(pg)
            except Exception as exc:  # noqa: BLE001 - Ray already gone: nothing left to free
                logger.debug("placement group removal: %s", root_cause(exc))
        self.placement_groups = []
        self.detectors, self.workers = [], []
