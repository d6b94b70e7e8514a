"""``veilstream process``: consume raw chunks, redact them on Ray, produce redacted chunks.

The driver owns the Kafka consumer and producer (so offsets are committed by the one
process that knows what is durable) and orchestrates Ray actors:

    poll raw ──► ChunkWorker.decode (CPU) ──► DetectorActor.detect_chunks (batched
    across cameras) ──► ChunkWorker.finish (fallback, fill, mask, encode) ──► produce
    redacted ──► broker ack ──► offset finished ──► commit

* Bounded work: at most ``max_inflight_chunks`` chunks in flight, and per partition
  ``max_inflight_per_partition``; full partitions are paused, resumed at half.
* Completion order: ``ray.wait`` drains whatever finished first; per partition the
  results are produced in offset order (so a camera's chunks stay in order downstream).
* Fail closed: a detection call that raises, times out, or whose actor dies, masks every
  frame of its chunks whole and flags them. A chunk that cannot be decoded, masked or
  encoded goes to the DLQ with the reason. Nothing is produced unmasked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.kafka import ChunkConsumer, ChunkProducer, Delivery, kafka_settings
from pipeline.metrics import StatusLine, WorkerMetrics, serve_config
from pipeline.offsets import OffsetTracker, should_pause, should_resume
from pipeline.stage import root_cause
from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessPolicy:
    """What the process worker stamps and applies: from ``policies_dir`` or the process keys."""

    policy_id: str
    version: int
    on_failure: str  # mask | drop
    overrides: dict[str, Any]  # RedactionConfig fields the policy sets
    zones: dict[str, Any] | None


@dataclass(frozen=True)
class PolicySet:
    """Every policy this worker serves. ``routed``: chunks are redacted by their camera's
    ``policy_id`` (``policies_dir`` set); otherwise every chunk gets ``default``."""

    default_id: str
    policies: dict[str, ProcessPolicy]
    routed: bool

    @property
    def default(self) -> ProcessPolicy:
        return self.policies[self.default_id]

    def for_chunk(self, policy_id: str | None) -> ProcessPolicy | None:
        """The chunk's policy; ``None`` when its camera names one that does not exist."""
        if not self.routed or not policy_id:
            return self.default
        return self.policies.get(policy_id)


# Detector -> the policy classes that need it, and the RedactionConfig threshold it reads.
_DETECTOR_NEEDS = {"face": ({"face"}, "face_threshold"), "person": ({"face", "person"}, "person_threshold"),
                   "text": ({"plate", "text"}, "text_threshold")}


def _from_policy(pol: Any, zones: dict[str, Any] | None) -> ProcessPolicy:
    th, pad = pol.thresholds, pol.padding
    ov: dict[str, Any] = {"classes": pol.classes, "style": pol.style, "strength": pol.strength}
    for cls in ("face", "person"):
        if cls in th:
            ov[f"{cls}_threshold"] = th[cls]
    # one text model finds plate characters and other text: the lower threshold is the safe one
    text_th = [th[c] for c in ("plate", "text") if c in th]
    if text_th:
        ov["text_threshold"] = min(text_th)
    for cls in ("face", "plate", "person", "head"):
        if cls in pad:
            ov[f"{cls}_padding"] = pad[cls]
    return ProcessPolicy(pol.policy_id, pol.version, pol.on_failure, ov, pol.zones_document(zones))


def resolve_policies(cfg: Any) -> PolicySet:
    """Every policy of ``policies_dir`` (routed by the chunk's ``policy_id``, default
    ``process.policy_id``), or (no directory) the inline ``process`` keys for every chunk.
    A missing default policy is a ``ConfigError`` that names both keys."""
    p = cfg.process
    pdir = getattr(cfg, "policies_dir", None)
    if not pdir:
        inline = ProcessPolicy(p.policy_id, p.policy_version, "mask",
                               {"classes": tuple(p.classes), "style": p.style}, p.zones)
        return PolicySet(p.policy_id, {p.policy_id: inline}, routed=False)
    from schemas.errors import ConfigError
    from schemas.policy import load_policies

    policies = load_policies(pdir)
    if p.policy_id not in policies:
        raise ConfigError(f"process.policy_id: no policy {p.policy_id!r} in policies_dir {pdir} "
                          f"(found: {', '.join(sorted(policies)) or 'none'})")
    return PolicySet(p.policy_id, {pid: _from_policy(pol, p.zones) for pid, pol in policies.items()}, routed=True)


def resolve_policy(cfg: Any) -> ProcessPolicy:
    """The default policy (see :func:`resolve_policies`)."""
    return resolve_policies(cfg).default


def _default_threshold(detector: str, face_model: str) -> float:
    """A detector's own default score threshold (what ``None`` means in a RedactionConfig)."""
    import inspect

    from operators.detectors import DETECTORS

    name = {"face": face_model, "person": "yolox_person", "text": "ppocr_text"}[detector]
    return float(inspect.signature(DETECTORS[name]).parameters["threshold"].default)


def policy_configs(pset: PolicySet, base: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(detector config, {policy_id: masking config})`` for a set of policies.

    One set of detectors serves every policy: it runs the union of their classes at the
    lowest threshold any of them asks for. Each policy's masking config then carries its
    own effective threshold for every detector it uses (explicit, or the detector's
    default), so :class:`operators.redactor.Redactor` drops the extra low-score boxes
    that only a more sensitive policy wanted. With one policy both are the same config.
    """
    from operators.redactor import RedactionConfig

    per = {pid: RedactionConfig(**pp.overrides, **base).validate() for pid, pp in pset.policies.items()}
    if len(per) == 1:
        (only,) = per.values()
        return only, per
    face_model = base.get("face_model", "centerface")
    union_classes = tuple(c for c in ("face", "plate", "person", "text")
                          if any(c in r.classes for r in per.values()))
    union: dict[str, Any] = {"classes": union_classes}
    for det, (needs, field_name) in _DETECTOR_NEEDS.items():
        users = [pid for pid, r in per.items() if needs & set(r.classes)]
        if not users:
            continue
        explicit = [getattr(per[pid], field_name) for pid in users]
        if all(v is None for v in explicit):
            continue  # every user takes the detector default: nothing to reconcile
        dflt = _default_threshold(det, face_model)
        eff = {pid: (v if v is not None else dflt) for pid, v in zip(users, explicit)}
        union[field_name] = min(eff.values())
        for pid, v in eff.items():
            per[pid] = replace(per[pid], **{field_name: v})
    first = next(iter(per.values()))
    detector = replace(first, **union, style="fill", strength=None).validate()
    return detector, per


def _root_cause(exc: BaseException) -> str:
    """The last ``SomeError: message`` line of a Ray error (which nests the remote
    traceback), so a missing model reads as the model error, not as a Ray traceback."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head and "RayTaskError" not in head \
                and "ActorDiedError" not in head:
            return ln.split(":", 1)[1].strip() if ":" in ln else ln
    return lines[-1] if lines else type(exc).__name__


@dataclass
class Job:
    tp: tuple[str, int]
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    meta: Any  # ChunkCaptured
    stage: str = "decode"
    frames_ref: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    detect_started: float = 0.0
    result: dict[str, Any] | None = None
    outcome: str | None = None  # "redacted" | "dlq"
    policy: Any = None  # ProcessPolicy
    dlq_reason: str = ""
    worker: Any = None
    started: float = field(default_factory=time.monotonic)


class ProcessWorker:
    """The processing driver. ``run()`` blocks until ``stop_event`` is set."""

    def __init__(self, config: Any, stop_event: threading.Event | None = None,
                 metrics: WorkerMetrics | None = None) -> None:
        self.cfg = config
        self.stop_event = stop_event or threading.Event()
        self.metrics = metrics or WorkerMetrics("process")
        self.tracker = OffsetTracker()
        self.jobs: dict[Any, Job] = {}  # ray ref -> job waiting on it
        self.detect_queue: deque[Job] = deque()
        self.detect_calls: dict[Any, tuple[list[Job], Any, float]] = {}  # ref -> (jobs, actor, started)
        self.order: dict[tuple[str, int], deque[Job]] = {}
        self.produced = 0
        self.status = StatusLine(getattr(config.process, "status_interval_s", 10.0))
        self.policies = resolve_policies(config)
        self.policy = self.policies.default

    # ---------------------------------------------------------------- setup
    def _configs(self) -> tuple[Any, dict[str, Any]]:
        """``(detector config, {policy_id: masking config})`` (see :func:`policy_configs`)."""
        p = self.cfg.process
        det = self.cfg.ray.detector
        base = dict(
            detect_every=p.detect_every,
            providers=tuple(det.providers) if det.providers else None,
            # the driver's $VEILSTREAM_MODEL_DIR travels with the config: actors run in
            # Ray worker processes on other nodes whose environment the user never set
            model_dir=getattr(p, "model_dir", None) or os.environ.get("VEILSTREAM_MODEL_DIR") or None,
            threads=getattr(det, "threads", None),
            face_model=p.face_model, face_max_side=p.face_max_side, text_max_side=p.text_max_side,
        )
        return policy_configs(self.policies, base)

    def _redaction_config(self) -> Any:
        """The default policy's masking config."""
        return self._configs()[1][self.policies.default_id]

    def _start_ray(self) -> None:
        import ray

        from .actors import ChunkWorkerActor, DetectorActor

        rc = self.cfg.ray
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True,
                                  "log_to_driver": True, "configure_logging": False}
            if rc.address:
                ray.init(address=rc.address, **kw)
            else:
                ray.init(num_cpus=rc.num_cpus, object_store_memory=rc.object_store_mb * 1024 * 1024, **kw)
        red, per = self._configs()
        det = rc.detector
        det_cls = ray.remote(DetectorActor)
        self._det_opts = {"num_cpus": det.num_cpus, "num_gpus": det.num_gpus, "max_restarts": 3,
                          "max_task_retries": 0}
        self._det_cls, self._red = det_cls, red
        self.detectors = [det_cls.options(**self._det_opts).remote(red) for _ in range(det.replicas)]
        wk_cls = ray.remote(ChunkWorkerActor)
        pc = self.cfg.process
        dp = self.policy
        others = {pid: (per[pid], pp.zones, pp.on_failure) for pid, pp in self.policies.policies.items()}
        self.workers = [
            wk_cls.options(num_cpus=rc.worker_num_cpus, max_restarts=3).remote(
                per[dp.policy_id], dp.zones, crf=pc.crf, preset=pc.preset, on_failure=dp.on_failure,
                policies=others)
            for _ in range(rc.chunk_workers)
        ]
        logger.info("policies %s default=%s routed=%s", ",".join(
            f"{pid}:v{pp.version}:{'+'.join(per[pid].classes)}" for pid, pp in sorted(self.policies.policies.items())),
            dp.policy_id, self.policies.routed)
        # Building sessions and warming up takes seconds: wait here, not at the first chunk. Actors
        # needing a GPU wait for the node the cluster autoscaler adds: as long as the start-up
        # budget /healthz grants (metrics.startup_budget_s), not a fixed 300 s that would
        # crash-loop the pod while the node joins.
        try:
            models = ray.get([d.ready.remote() for d in self.detectors] + [w.ready.remote() for w in self.workers],
                             timeout=float(getattr(self.cfg.metrics, "startup_budget_s", 300.0)))
        except Exception as exc:  # noqa: BLE001 - an actor's __init__ failed: say why in one line
            raise VeilStreamError(f"process actors failed to start: {_root_cause(exc)}") from None
        self.model_ids = models[0] if self.detectors else []
        self._rr = 0
        self.det_load = {id(d): 0 for d in self.detectors}
        logger.info("ray ready detectors=%d workers=%d models=%s", len(self.detectors), len(self.workers),
                    ",".join(m["id"] for m in self.model_ids))

    def _next_worker(self) -> Any:
        self._rr = (self._rr + 1) % len(self.workers)
        return self.workers[self._rr]

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        import ray

        from schemas.messages import SchemaError, decode_chunk_captured

        k = self.cfg.kafka
        p = self.cfg.process
        # Probes first: /healthz is live while Ray, the actors and their models start (a GPU
        # node may still be joining), /readyz turns 200 only once the loop consumes.
        server = serve_config(self.metrics, self.cfg.metrics)
        try:
            with self.metrics.starting(getattr(self.cfg.metrics, "startup_budget_s", 900.0)):
                self._start_ray()
        except BaseException:
            if server is not None:
                server.shutdown()
            raise
        self._reclaim_signals()
        self.producer = ChunkProducer(k.bootstrap_servers, message_max_bytes=k.message_max_bytes,
                                      client_id="veil-process", extra=kafka_settings(k))
        self.consumer = ChunkConsumer(
            k.bootstrap_servers, p.consumer_group, [k.topics.raw], message_max_bytes=k.message_max_bytes,
            session_timeout_ms=k.session_timeout_ms, on_revoke=self._on_revoke, extra=kafka_settings(k))
        self.metrics.ready = True
        max_total, max_part = p.max_inflight_chunks, p.max_inflight_per_partition
        try:
            while not self.stop_event.is_set():
                self.metrics.tick()
                free = max_total - self.tracker.inflight()
                if free > 0:
                    for msg in self.consumer.poll(0.02 if self.jobs or self.detect_calls else 0.2, free):
                        tp = (msg.topic(), msg.partition())
                        self.tracker.started(tp, msg.offset())
                        self.metrics.chunks_in.labels(camera="all").inc()
                        job = Job(tp, msg.offset(), msg.key(), msg.value() or b"", list(msg.headers() or []), None)
                        self.order.setdefault(tp, deque()).append(job)
                        try:
                            # key = meta camera (key_mismatch), limits before any decoding
                            job.meta = decode_chunk_captured(job.value, job.headers, key=job.key,
                                                             limits=getattr(self.cfg, "limits", None))
                        except SchemaError as exc:
                            self._to_dlq(job, getattr(exc, "reason", "invalid_message"), str(exc))
                            continue
                        job.policy = self.policies.for_chunk(job.meta.policy_id)
                        if job.policy is None:  # nobody decided how to mask it: never guess
                            self._to_dlq(job, "unknown_policy",
                                         f"camera {job.meta.camera_id} names policy {job.meta.policy_id!r}, "
                                         f"which is not in policies_dir {self.cfg.policies_dir} "
                                         f"(found: {', '.join(sorted(self.policies.policies))}); write it, "
                                         f"restart the process workers, and replay the DLQ")
                            continue
                        self.metrics.frames_in.inc(len(job.meta.pts_ms))
                        self._submit_decode(job)
                for tp in list(self.consumer.assigned):
                    n = self.tracker.inflight(tp)
                    if should_pause(n, max_part):
                        self.consumer.pause([tp])
                    elif tp in self.consumer.paused and should_resume(n, max_part):
                        self.consumer.resume([tp])
                self._submit_detection(force=False)
                self._drain(ray, timeout_s=0.01)
                self._check_timeouts()
                self._emit_in_order()
                self.producer.poll(0)
                self._commit()
                self.metrics.inflight.set(self.tracker.inflight())
                if self.status.due():
                    self._log_status()
            self._shutdown(ray)
        finally:
            self.metrics.ready = False
            self.consumer.close()
            if server is not None:
                server.shutdown()
        return 0

    def _reclaim_signals(self) -> None:
        """``ray.init`` installs its own SIGTERM handler in the driver, which kills the
        process mid-chunk; take SIGTERM/SIGINT back so they stop consuming, drain, flush and
        commit (the Kubernetes pod stop path)."""
        import signal

        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: Any) -> None:
            logger.info("signal %d: stopping", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _submit_decode(self, job: Job) -> None:
        w = self._next_worker()
        job.worker = w
        frames_ref, info_ref = w.decode.options(num_returns=2).remote(
            job.meta.codec, job.meta.payload, len(job.meta.pts_ms), (job.meta.width, job.meta.height),
            getattr(getattr(self.cfg, "limits", None), "max_pixels_per_frame", None))
        job.frames_ref = frames_ref
        job.stage = "decode"
        self.jobs[info_ref] = job

    def _submit_detection(self, force: bool) -> None:
        """Send queued chunks to the least loaded detector, several chunks per call."""
        batch_frames = self.cfg.ray.detector.batch_size
        every = max(1, self.cfg.process.detect_every)
        while self.detect_queue:
            d = min(self.detectors, key=lambda a: self.det_load[id(a)])
            if self.det_load[id(d)] >= 2 and not force:
                return  # both pipeline slots of the best actor busy: let the queue grow into a batch
            jobs: list[Job] = []
            n = 0
            while self.detect_queue and (not jobs or n < batch_frames):
                j = self.detect_queue.popleft()
                jobs.append(j)
                n += -(-j.info["frames"] // every) + 1
            ref = d.detect_chunks.remote(*[j.frames_ref for j in jobs])
            now = time.monotonic()
            for j in jobs:
                j.stage, j.detect_started = "detect", now
            self.detect_calls[ref] = (jobs, d, now)
            self.det_load[id(d)] += 1

    def _drain(self, ray: Any, timeout_s: float) -> None:
        refs = list(self.jobs) + list(self.detect_calls)
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s, fetch_local=False)
        for ref in ready:
            if ref in self.detect_calls:
                jobs, actor, _t = self.detect_calls.pop(ref)
                self.det_load[id(actor)] = max(0, self.det_load.get(id(actor), 1) - 1)
                try:
                    results = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - RayTaskError, RayActorError: fail closed
                    logger.error("detection failed chunks=%d error=%s: failing closed", len(jobs),
                                 str(exc).splitlines()[0][:200])
                    self.metrics.errors.labels(kind="detector").inc()
                    results = [self._all_failed(j, "detector error") for j in jobs]
                for j, r in zip(jobs, results):
                    self._submit_finish(j, r)
                continue
            job = self.jobs.pop(ref)
            if job.stage == "decode":
                try:
                    info = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - worker died: the DLQ says why
                    info = {"error": f"decode worker failed: {root_cause(exc)[:500]}"}
                if info.get("error"):
                    self._to_dlq(job, "decode_failed", info["error"])
                    continue
                job.info = info
                job.stage = "queued"
                self.detect_queue.append(job)
            elif job.stage == "finish":
                try:
                    job.result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001
                    # the cause, not Ray's colour banner ("ray::ChunkWorkerActor.finish() ...")
                    self._to_dlq(job, "redaction_failed", root_cause(exc)[:1000])
                    continue
                job.outcome = "redacted"
                job.stage = "done"
        self._submit_detection(force=False)

    def _all_failed(self, job: Job, why: str) -> tuple[list[Any], list[int], list[str]]:
        n = job.info["frames"]
        return [None] * n, list(range(n)), [why]

    def _check_timeouts(self) -> None:
        limit = self.cfg.process.detector_timeout_s
        now = time.monotonic()
        for ref, (jobs, actor, started) in list(self.detect_calls.items()):
            if now - started < limit:
                continue
            del self.detect_calls[ref]
            logger.error("detection timed out after %.1fs chunks=%d: failing closed, restarting detector",
                         limit, len(jobs))
            self.metrics.errors.labels(kind="detector_timeout").inc()
            self._restart_detector(actor)
            for j in jobs:
                self._submit_finish(j, self._all_failed(j, f"detector timeout after {limit}s"))

    def _restart_detector(self, actor: Any) -> None:
        import ray

        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001
            pass
        idx = next((i for i, d in enumerate(self.detectors) if d is actor), None)
        self.det_load.pop(id(actor), None)
        new = self._det_cls.options(**self._det_opts).remote(self._red)
        if idx is None:
            self.detectors.append(new)
        else:
            self.detectors[idx] = new
        self.det_load[id(new)] = 0
        # calls still queued on the killed actor fail with RayActorError -> fail closed there
        for ref, (jobs, a, t) in list(self.detect_calls.items()):
            if a is actor:
                self.detect_calls[ref] = (jobs, new, t)

    def _submit_finish(self, job: Job, detected: Any) -> None:
        m = job.meta
        ref = job.worker.finish.remote(job.frames_ref, detected, m.camera_id, m.fps, list(m.pts_ms),
                                       job.policy.policy_id)
        job.stage = "finish"
        self.jobs[ref] = job

    def _emit_in_order(self) -> None:
        from schemas.messages import ChunkRedacted, encode_chunk

        topic = self.cfg.kafka.topics.redacted
        for q in self.order.values():
            while q and q[0].stage == "done" and q[0].outcome is not None:
                job = q.popleft()
                if job.outcome != "redacted":
                    continue  # DLQ'd: its offset is finished by the DLQ ack
                r = job.result or {}
                m = job.meta
                fail_closed = tuple(r.get("fail_closed_frames", ()))
                dropped = int(r.get("dropped", 0) or 0)
                if dropped:  # the policy drops frames whose detection failed: counted, never silent
                    self.metrics.drops.labels(reason="detection_failed").inc(dropped)
                if r.get("payload") is None:
                    logger.warning("chunk dropped whole camera=%s chunk_seq=%d offset=%d frames=%d: detection "
                                   "failed and the policy drops such frames", m.camera_id, m.chunk_seq,
                                   job.offset, dropped)
                    self.tracker.finished(job.tp, job.offset)
                    job.frames_ref = None
                    continue
                pts = tuple(r.get("pts_ms", m.pts_ms))
                out = ChunkRedacted(
                    camera_id=m.camera_id, chunk_seq=m.chunk_seq, pts_ms=pts, fps=m.fps,
                    width=m.width, height=m.height, codec="h264", captured_at_ms=m.captured_at_ms,
                    payload=r["payload"], masks_per_class=dict(r.get("masks_per_class", {})),
                    fail_closed_frames=fail_closed, models=tuple(self.model_ids),
                    policy_id=job.policy.policy_id, policy_version=job.policy.version,
                    dropped_frames=int(getattr(m, "dropped_frames", 0) or 0) + dropped,
                )
                value, headers = encode_chunk(out)
                self.producer.produce(topic, value, m.camera_id, headers,
                                      on_done=self._acked(job, len(pts), r, fail_closed))
                job.frames_ref = None

    def _acked(self, job: Job, frames: int, r: dict[str, Any], fail_closed: tuple[int, ...]) -> Any:
        def cb(d: Delivery) -> None:
            if d.error:
                # Not durable: leave the offset in flight so it is never committed; the chunk
                # is redone after a restart or rebalance (at-least-once).
                logger.error("produce failed camera=%s offset=%d error=%s", job.meta.camera_id, job.offset, d.error)
                self.metrics.errors.labels(kind="produce").inc()
                return
            self.tracker.finished(job.tp, job.offset)
            self.produced += 1
            self.metrics.chunks_out.labels(camera="all").inc()
            self.metrics.frames_out.inc(frames)
            for cls, n in r.get("masks_per_class", {}).items():
                self.metrics.frames_masked.labels(cls=cls).inc(n)
            if fail_closed:
                self.metrics.fail_closed.inc(len(fail_closed))
            self.metrics.latency.observe(max(0.0, time.time() - job.meta.captured_at_ms / 1000.0))
            self.metrics.stage_seconds.observe(time.monotonic() - job.started)
        return cb

    def _to_dlq(self, job: Job, reason: str, error: str) -> None:
        from schemas.messages import DlqRecord, encode_dlq

        logger.warning("dlq reason=%s topic=%s partition=%d offset=%d error=%s", reason, job.tp[0], job.tp[1],
                       job.offset, error)
        rec = DlqRecord(reason=reason, error=error[:2000], source_topic=job.tp[0], source_partition=job.tp[1],
                        source_offset=job.offset, headers={k: v.decode("utf-8", "replace") for k, v in job.headers},
                        at_ms=int(time.time() * 1000), payload_size=len(job.value))
        value, headers = encode_dlq(rec, job.value)
        job.stage, job.outcome, job.dlq_reason = "done", "dlq", reason
        job.frames_ref = None

        def cb(d: Delivery) -> None:
            if d.error:
                logger.error("dlq produce failed offset=%d error=%s", job.offset, d.error)
                return
            self.tracker.finished(job.tp, job.offset)
            self.metrics.dlq.labels(reason=reason).inc()

        self.producer.produce(self.cfg.kafka.topics.dlq, value, job.key, headers, on_done=cb)

    def _commit(self) -> None:
        offsets = self.tracker.committable()
        if offsets:
            self.consumer.commit(offsets)
            self.tracker.mark_committed(offsets)

    def _on_revoke(self, tps: list[tuple[str, int]]) -> None:
        self.producer.flush(10.0)  # acks of already produced chunks still count
        self._commit()
        abandoned = self.tracker.revoke(tps)
        for tp in tps:
            for job in self.order.pop(tp, deque()):
                job.stage, job.outcome = "abandoned", "abandoned"
        if abandoned:
            logger.info("revoked partitions abandoned %d in-flight chunks to their new owner", abandoned)

    def _log_status(self) -> None:
        lag = self.consumer.lag()
        for (_t, p), v in lag.items():
            self.metrics.lag.labels(partition=str(p)).set(v)
        logger.info("status inflight=%d produced=%d dlq=%d fail_closed=%d lag=%d",
                    self.tracker.inflight(), self.produced, int(sum(
                        s.value for mf in self.metrics.dlq.collect() for s in mf.samples if s.name.endswith("_total"))),
                    int(self.metrics.value("veil_process_fail_closed_frames_total")), sum(lag.values()))

    def _shutdown(self, ray: Any) -> None:
        """Stop consuming, finish what is in flight (bounded), flush, commit."""
        deadline = time.monotonic() + self.cfg.process.drain_timeout_s
        for tp in list(self.consumer.assigned):
            self.consumer.pause([tp])
        while (self.jobs or self.detect_calls or self.detect_queue) and time.monotonic() < deadline:
            self._submit_detection(force=True)
            self._drain(ray, timeout_s=0.05)
            self._check_timeouts()
            self._emit_in_order()
            self.producer.poll(0)
        self._emit_in_order()
        self.producer.flush(30.0)
        self._commit()
        logger.info("process stopped produced=%d inflight_left=%d", self.produced, self.tracker.inflight())
