"""The process stage's handler on the stage runtime (:mod:`pipeline.runtime`).

    Record ──► decode (bad ─► DeadLetter) ──► policy (unknown ─► DeadLetter) ──► ChunkActor.redact
    ──► Hold ... Ray returns ──► completions():
            redacted           ─► Emit(ChunkRedacted) per partition in offset order
            whole chunk dropped ─► Emit() (counted: the policy drops frames whose detection failed)
            decode/redaction failed ─► DeadLetter(reason)
            actor or node died ─► Retry(retry_delay_s(attempt)); past ``process.outage_retries``
                                  :class:`OutageError` (the worker exits, the offset uncommitted)

The runtime produces, dead-letters, backs off, commits after the broker's ack, revokes and
drains; this handler only decides. ``submit`` (a task -> a Ray ref) and ``ray`` (``wait``,
``get``, ``kill``) are injected, so a test drives the handler with fakes and a
:class:`~pipeline.runtime.TestingSource` / :class:`~pipeline.runtime.TestingSink`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.metrics import WorkerMetrics
from pipeline.runtime import HOLD, BaseHandler, Completion, DeadLetter, Emit, Outcome, Record, Retry
from pipeline.stage import Source, TopicPart, root_cause
from schemas.errors import VeilStreamError

from .actors import ChunkResult, ChunkStage, ChunkTask, is_outage
from .batching import BatchLimits, plan_batches, task_pixels
from .plan import MaskingPlan, PolicyPlan

logger = logging.getLogger(__name__)


class OutageError(VeilStreamError):
    """Ray stayed unavailable for a chunk through every retry: exit, commit nothing more."""


def retry_delay_s(attempt: int) -> float:
    """Backoff before the ``attempt``-th retry of a chunk hit by an outage (1-based)."""
    return float(min(10.0, 0.5 * 2 ** max(0, attempt - 1)))


@dataclass
class Job:
    """One consumed chunk on its way through the stage."""

    rec: Record
    meta: Any = None  # ChunkCaptured
    policy: PolicyPlan | None = None
    stage: ChunkStage = ChunkStage.QUEUED
    result: ChunkResult | None = None
    dlq: bool = False
    attempts: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def src(self) -> Source:
        return self.rec.src

    @property
    def tp(self) -> TopicPart:
        return self.rec.tp


class ProcessHandler(BaseHandler):
    """Decides each raw chunk's outcome (module docstring).

    Args:
        config: the ``PipelineConfig`` (``process``, ``limits``, ``policies_dir``, ``kafka.topics``).
        plan: the masking plan.
        metrics: the stage's metrics.
        submit: ``ChunkTask -> ref`` (a chunk actor's ``redact.remote``, round-robin).
        ray: the ``ray`` module (``wait``, ``get``, ``kill``) or a fake.
        detectors: the detector actors (a timed-out one is restarted through ``ray.kill``).
        model_ids: the detectors' model ids, stamped on every redacted chunk.
        submit_many: ``[ChunkTask] -> [ref]`` (one ref per task): several small chunks to one chunk
            actor in one call (``ChunkActor.redact_many``). With it, the chunks one poll hands
            the handler wait in ``pending`` until :meth:`completions` (same step) and go in
            batches of :func:`~.batching.plan_batches`; each chunk keeps its own ref, result,
            DLQ decision and offset. Without it, every chunk is submitted alone at once.
        batch: the batch limits; ``workers``: how many chunk actors share the batches.
    """

    def __init__(self, config: Any, plan: MaskingPlan, metrics: WorkerMetrics, submit: Callable[[ChunkTask], Any],
                 ray: Any, *, detectors: list[Any] | None = None,
                 model_ids: list[dict[str, str]] | None = None,
                 submit_many: Callable[[list[ChunkTask]], list[Any]] | None = None,
                 batch: BatchLimits | None = None, workers: int = 1) -> None:
        self.cfg = config
        self.plan = plan
        self.metrics = metrics
        self.submit = submit
        self.ray = ray
        self.detectors = detectors if detectors is not None else []
        self.model_ids = model_ids if model_ids is not None else []
        self.inflight: dict[Any, Job] = {}  # ray ref -> job
        self.submit_many = submit_many
        self.batch = batch or BatchLimits()
        self.workers = max(1, workers)
        self.pending: list[tuple[Job, ChunkTask]] = []  # handled, not yet on Ray (submit_many only)
        self.jobs: dict[Source, Job] = {}  # every job not emitted yet (a retry finds its job here)
        self.order: dict[TopicPart, deque[Job]] = {}
        self.produced = 0
        self._restarted_at: dict[int, float] = {}

    # ---------------------------------------------------------------- records in
    def handle(self, rec: Record) -> Outcome:
        if rec.attempt > 0:  # the runtime's retry after an outage (no job: its partition was revoked)
            job = self.jobs.get(rec.src)
            if job is not None:
                self._submit(job)
            return HOLD
        from schemas.messages import SchemaError, decode_chunk_captured

        job = Job(rec)
        self.jobs[rec.src] = job
        self.order.setdefault(rec.tp, deque()).append(job)
        try:
            job.meta = decode_chunk_captured(rec.value, list(rec.headers), key=rec.key,
                                             limits=getattr(self.cfg, "limits", None))
        except SchemaError as exc:  # key_mismatch / limit_exceeded carry their own reason
            return self._dead(job, getattr(exc, "reason", "invalid_message"), str(exc))
        job.policy = self.plan.for_chunk(job.meta.policy_id)
        if job.policy is None:  # nobody decided how to mask it: never guess
            return self._dead(job, "unknown_policy",
                              f"camera {job.meta.camera_id} names policy {job.meta.policy_id!r}, which is not in "
                              f"policies_dir {self.cfg.policies_dir} (found: {', '.join(sorted(self.plan.policies))}); "
                              f"write it, restart the process workers, and replay the DLQ")
        self.metrics.frames_in.inc(len(job.meta.pts_ms))
        self._submit(job)
        return HOLD

    def _submit(self, job: Job) -> None:
        m = job.meta
        limits = getattr(self.cfg, "limits", None)
        task = ChunkTask(codec=m.codec, payload=m.payload, camera_id=m.camera_id, fps=m.fps, pts_ms=tuple(m.pts_ms),
                         width=m.width, height=m.height, policy_id=job.policy.policy_id if job.policy else None,
                         camera_zones=tuple(getattr(m, "zones", ()) or ()),
                         max_pixels=getattr(limits, "max_pixels_per_frame", None),
                         max_decoded_bytes=getattr(limits, "max_decoded_bytes_per_chunk", None))
        if self.submit_many is not None:
            self.pending.append((job, task))
            return
        self.inflight[self.submit(task)] = job
        job.stage = ChunkStage.DECODE

    def flush(self) -> None:
        """Send the pending chunks to Ray, small ones several to a call (:func:`~.batching.plan_batches`)."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        assert self.submit_many is not None
        for idx in plan_batches([task_pixels(len(t.pts_ms), t.width, t.height) for _, t in pending], self.batch,
                                self.workers, len(self.inflight)):
            if len(idx) == 1:
                refs = [self.submit(pending[idx[0]][1])]
            else:
                refs = self.submit_many([pending[i][1] for i in idx])
            if len(refs) != len(idx):
                raise VeilStreamError(f"submit_many returned {len(refs)} refs for {len(idx)} chunks")
            for ref, i in zip(refs, idx):
                job = pending[i][0]
                self.inflight[ref] = job
                job.stage = ChunkStage.DECODE

    def _dead(self, job: Job, reason: str, error: str) -> DeadLetter:
        job.stage, job.dlq = ChunkStage.DONE, True
        self.jobs.pop(job.src, None)
        return DeadLetter(reason, error)

    # ---------------------------------------------------------------- results out
    def busy(self) -> bool:
        return bool(self.inflight) or bool(self.pending)

    def completions(self, timeout_s: float) -> Iterable[Completion]:
        """What Ray finished (in completion order), then every partition's finished head in offset order."""
        self.flush()
        out = list(self._drain(timeout_s))
        for q in self.order.values():
            while q and q[0].stage is ChunkStage.DONE:
                job = q.popleft()
                if not job.dlq:
                    self.jobs.pop(job.src, None)
                    out.append((job.rec, self._emit(job)))
        return out

    def _drain(self, timeout_s: float) -> Iterable[Completion]:
        if not self.inflight:
            return
        ready, _ = self.ray.wait(list(self.inflight), num_returns=len(self.inflight), timeout=timeout_s,
                                 fetch_local=True)
        got = self._get_all(ready)
        for i, ref in enumerate(ready):
            job = self.inflight.pop(ref)
            try:
                res: ChunkResult = got[i] if got is not None else self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - RayTaskError, RayActorError, ...
                if is_outage(exc):
                    yield job.rec, self._outage(job, root_cause(exc))
                else:  # our code raised on this input: it would raise again
                    yield job.rec, self._dead(job, "redaction_failed", root_cause(exc))
                continue
            for step, s in res.cpu_s.items():
                self.metrics.cpu_seconds.labels(step=step).inc(max(0.0, s))
            if res.outage:
                yield job.rec, self._outage(job, res.error)
                continue
            if res.detector_timeout is not None:
                self._restart_detector(res.detector_timeout)
            if res.failed_stage is ChunkStage.DECODE:
                yield job.rec, self._dead(job, res.reason or "decode_failed", res.error)
            elif res.failed_stage is not None:
                yield job.rec, self._dead(job, "redaction_failed", res.error)
            else:
                job.result, job.stage = res, ChunkStage.DONE

    def _get_all(self, refs: list[Any]) -> list[Any] | None:
        """The results of ``refs`` (all ready) from one ``ray.get``: one call into Ray's core
        worker instead of one per chunk. ``None`` when any of them is an error (Ray raises the
        first one for the whole list): the caller then gets each on its own, so every chunk
        keeps its own outcome exactly as before."""
        if len(refs) < 2:
            return None
        try:
            out = self.ray.get(list(refs))
        except Exception:  # noqa: BLE001 - one chunk failed: each is asked on its own (the caller)
            return None
        return list(out) if isinstance(out, list) and len(out) == len(refs) else None

    def _outage(self, job: Job, why: str) -> Retry:
        """An actor or node was unavailable: the runtime retries the chunk later (its offset
        stays in flight, so nothing past it is committed); give up by failing the worker."""
        job.attempts += 1
        self.metrics.errors.labels(kind="ray_outage").inc()
        if job.attempts > self.cfg.process.outage_retries:
            raise OutageError(f"Ray stayed unavailable for chunk {job.src.topic}[{job.src.partition}]@"
                              f"{job.src.offset} through {self.cfg.process.outage_retries} retries ({why}); "
                              f"exiting without committing it: a restarted worker resumes from the committed offset")
        delay = retry_delay_s(job.attempts)
        logger.warning("ray unavailable camera=%s offset=%d attempt=%d retry_in=%.1fs: %s",
                       getattr(job.meta, "camera_id", "?"), job.src.offset, job.attempts, delay, why)
        job.stage = ChunkStage.QUEUED
        return Retry(delay, why)

    def _restart_detector(self, idx: int) -> None:
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
            self.ray.kill(self.detectors[idx], no_restart=False)
        except Exception as exc:  # noqa: BLE001 - already dead or restarting
            logger.warning("detector restart: %s", root_cause(exc))

    def _emit(self, job: Job) -> Emit:
        from schemas.messages import ChunkRedacted, encode_chunk

        r, m = job.result, job.meta
        assert r is not None and job.policy is not None
        if r.dropped:  # the policy drops frames whose detection failed: counted, never silent
            self.metrics.drops.labels(reason="detection_failed").inc(r.dropped)
        if r.payload is None:
            logger.warning("chunk dropped whole camera=%s chunk_seq=%d offset=%d frames=%d: detection failed and "
                           "the policy drops such frames", m.camera_id, m.chunk_seq, job.src.offset, r.dropped)
            return Emit()
        out = ChunkRedacted(
            camera_id=m.camera_id, chunk_seq=m.chunk_seq, pts_ms=r.pts_ms, fps=m.fps, width=m.width,
            height=m.height, codec="h264", captured_at_ms=m.captured_at_ms, payload=r.payload,
            masks_per_class=dict(r.masks_per_class), fail_closed_frames=r.fail_closed_frames,
            models=tuple(self.model_ids), policy_id=job.policy.policy_id, policy_version=job.policy.version,
            dropped_frames=int(getattr(m, "dropped_frames", 0) or 0) + r.dropped)
        value, headers = encode_chunk(out)
        return Emit(value, m.camera_id, headers, self.cfg.kafka.topics.redacted, on_acked=self._acked(job, r))

    def _acked(self, job: Job, r: ChunkResult) -> Callable[[], None]:
        def count() -> None:
            self.produced += 1
            self.metrics.chunks_out.labels(camera="all").inc()
            self.metrics.frames_out.inc(len(r.pts_ms))
            for cls, n in r.masks_per_class.items():
                self.metrics.frames_masked.labels(cls=cls).inc(n)
            if r.fail_closed_frames:
                self.metrics.fail_closed.inc(len(r.fail_closed_frames))
            self.metrics.latency.observe(max(0.0, time.time() - job.meta.captured_at_ms / 1000.0))
            self.metrics.stage_seconds.observe(time.monotonic() - job.started)
        return count

    # ---------------------------------------------------------------- rebalance, status
    def revoke(self, tps: list[TopicPart]) -> None:
        gone = set(tps)
        for tp in tps:
            self.order.pop(tp, None)
        self.jobs = {s: j for s, j in self.jobs.items() if s.tp not in gone}
        self.pending = [(j, t) for j, t in self.pending if j.tp not in gone]
        for ref, job in list(self.inflight.items()):
            if job.tp in gone:
                del self.inflight[ref]  # its result is ignored: the new owner redoes it

    def status(self) -> dict[str, Any]:
        return {"produced": self.produced,
                "fail_closed": int(self.metrics.value("veil_process_fail_closed_frames_total"))}

    def summary(self) -> dict[str, Any]:
        return self.status()
