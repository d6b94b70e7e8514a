"""``veilstream process``: consume raw chunks, redact them on Ray, produce redacted chunks.

:class:`ProcessWorker` starts the Ray actors and runs :class:`~.handler.ProcessHandler` on
the stage runtime (:mod:`pipeline.runtime`), which owns the Kafka consumer and producer, so
offsets are committed by the one process that knows what is durable. It runs in a consumer actor inside the Ray cluster (production: :mod:`.consumers`) or in the
``veilstream process`` process on the local Ray (local mode, tests): the same code. Per
chunk it makes one remote call, and decoded frames never come back to it::

    poll raw ──► handle: ChunkActor.redact(ChunkTask), Hold ──► [decode ─► DetectorActor.detect
    (batched across callers) ─► mask ─► encode] ──► ChunkResult ──► completions: Emit(redacted)
    ──► the runtime produces ──► broker ack ──► offset finished ──► commit

* Bounded work: at most ``max_inflight_chunks`` chunks in flight, and per partition
  ``max_inflight_per_partition``; what arrives for a full partition waits, in order, in the
  runtime's bounded ``parked`` queue (not a pause: librdkafka's pause drops its prefetch).
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
from dataclasses import dataclass
from typing import Any

from pipeline.metrics import WorkerMetrics, serve_config
from pipeline.runtime import RuntimeSettings, StageRuntime
from pipeline.stage import StageKafka, root_cause, stop_on_signals
from schemas.errors import VeilStreamError

from .actors import ChunkTask
from .batching import BatchLimits, task_pixels
from .handler import Job, OutageError, ProcessHandler, retry_delay_s
from .plan import MaskingPlan, build_plan

logger = logging.getLogger(__name__)

_root_cause = root_cause  # the name earlier tests and callers use
__all__ = ["Job", "OutageError", "ProcessWorker", "capacity_problem", "cluster_can_grow", "demand_summary",
           "node_local_groups", "retry_delay_s"]

PENDING_WARN_S = 30.0
"""How often start-up says, while actors wait for resources, what they ask and what the cluster has."""


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


def _num(x: float) -> str:
    """0.5 -> "0.5", 2 -> "2.0", 0.25 -> "0.25": the numbers as the config spells them."""
    return f"{x:.1f}" if abs(x * 10 - round(x * 10)) < 1e-9 else f"{x:g}"


def demand_summary(rc: Any) -> str:
    """What the process stage's actors ask of Ray, with the config keys that set it, e.g.
    ``chunk_workers 2 x worker_num_cpus 0.5 + detector.replicas 2 x detector.num_cpus 1.0 = 3.0 CPUs``."""
    det = rc.detector
    cpus = rc.chunk_workers * rc.worker_num_cpus + det.replicas * det.num_cpus
    out = (f"chunk_workers {rc.chunk_workers} x worker_num_cpus {_num(rc.worker_num_cpus)} + detector.replicas "
           f"{det.replicas} x detector.num_cpus {_num(det.num_cpus)} = {_num(cpus)} CPUs")
    if det.num_gpus > 0:
        out += f", detector.replicas {det.replicas} x detector.num_gpus {_num(det.num_gpus)} = " \
               f"{_num(det.replicas * det.num_gpus)} GPUs"
    return out


def _fits(items: list[dict[str, float]], nodes: list[dict[str, float]]) -> bool:
    """First-fit decreasing of ``items`` (each wholly on one node) onto the nodes' totals. Exact
    for one node; on several it may miss a packing that exists (only ever a warning there)."""
    free = [dict(n) for n in nodes]
    for item in sorted(items, key=lambda r: (r.get("GPU", 0.0), r.get("CPU", 0.0)), reverse=True):
        for node in free:
            if all(node.get(k, 0.0) + 1e-9 >= v for k, v in item.items()):
                for k, v in item.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            return False
    return True


def capacity_problem(rc: Any, nodes: list[dict[str, float]]) -> str | None:
    """Why the actors of ``rc`` (a ``RayConfig``) can never all be placed on ``nodes`` (the
    resources of each live node: ``{"CPU": 2.0, "GPU": 1.0, ...}``), as one line naming the
    config keys and numbers; ``None`` when they fit. Totals first, then per node: with
    ``placement: node_local`` each detector and its chunk actors must fit on ONE node."""
    det = rc.detector
    have_cpu = sum(n.get("CPU", 0.0) for n in nodes)
    have_gpu = sum(n.get("GPU", 0.0) for n in nodes)
    need_cpu = rc.chunk_workers * rc.worker_num_cpus + det.replicas * det.num_cpus
    need_gpu = det.replicas * det.num_gpus
    if need_cpu > have_cpu + 1e-9:
        return (f"ray: chunk_workers {rc.chunk_workers} x worker_num_cpus {_num(rc.worker_num_cpus)} + "
                f"detector.replicas {det.replicas} x detector.num_cpus {_num(det.num_cpus)} = {_num(need_cpu)} CPUs, "
                f"the cluster has {_num(have_cpu)}: lower ray.detector.num_cpus or replicas, "
                f"or ray.chunk_workers or worker_num_cpus")
    if need_gpu > have_gpu + 1e-9:
        return (f"ray: detector.replicas {det.replicas} x detector.num_gpus {_num(det.num_gpus)} = "
                f"{_num(need_gpu)} GPUs, the cluster has {_num(have_gpu)}: lower ray.detector.num_gpus or replicas")
    if rc.placement == "node_local":
        groups = node_local_groups(det.replicas, rc.chunk_workers, det_cpus=det.num_cpus, det_gpus=det.num_gpus,
                                   worker_cpus=rc.worker_num_cpus)
        items = [{k: sum(b.get(k, 0.0) for b in g.bundles) for k in ("CPU", "GPU") if any(k in b for b in g.bundles)}
                 for g in groups]
        if not _fits(items, nodes):
            big = max(items, key=lambda r: r.get("CPU", 0.0))
            k = len(groups[0].bundles) - 1
            sizes = ", ".join(_num(n.get("CPU", 0.0)) for n in nodes)
            gpu = f" + detector.num_gpus {_num(det.num_gpus)} GPUs" if det.num_gpus > 0 else ""
            return (f"ray: placement node_local packs each detector (detector.num_cpus {_num(det.num_cpus)}) with up to "
                    f"{k} chunk actors x worker_num_cpus {_num(rc.worker_num_cpus)} = {_num(big.get('CPU', 0.0))} CPUs"
                    f"{gpu} onto one node, {det.replicas} such groups; the nodes have {sizes} CPUs: lower "
                    f"ray.detector.num_cpus, replicas or ray.worker_num_cpus, or set ray.placement spread")
        return None
    actors = ([{k: v for k, v in (("CPU", det.num_cpus), ("GPU", det.num_gpus)) if v > 0}] * det.replicas
              + [{"CPU": rc.worker_num_cpus} if rc.worker_num_cpus > 0 else {}] * rc.chunk_workers)
    if not _fits(actors, nodes):
        sizes = ", ".join(_num(n.get("CPU", 0.0)) for n in nodes)
        return (f"ray: {demand_summary(rc)} do not fit the nodes ({sizes} CPUs; an actor runs on one node): "
                f"lower ray.detector.num_cpus or ray.worker_num_cpus")
    return None


def cluster_can_grow(address: str | None) -> bool:
    """Whether the Ray cluster may gain nodes after start-up, so actors that do not fit now may
    fit later: a cluster address (KubeRay's head Service, ``auto`` in a Ray job: the autoscaler
    adds worker pods, and fixed worker pods may still be joining). A Ray this process starts
    (``ray.address`` null) or one on loopback (``make demo``/``make load``'s local stack) has
    what it has: there, actors that cannot fit are an error at start, not a silent hang."""
    from pipeline.raynet import is_loopback_address

    return bool(address) and not is_loopback_address(address)


def _live_nodes(ray: Any) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in (n.get("Resources") or {}).items()}
            for n in ray.nodes() if n.get("Alive", n.get("alive", False))]


class ProcessWorker:
    """Ray actors plus :class:`~.handler.ProcessHandler` on the stage runtime. ``run()`` blocks
    until ``stop_event`` is set.

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
        self.detectors: list[Any] = []
        self.workers: list[Any] = []
        self.placement_groups: list[Any] = []
        self.model_ids: list[dict[str, str]] = []
        self._rr = 0
        self._sent: dict[Any, tuple[int, int]] = {}  # ref -> (chunk actor, decoded pixels) of chunks in flight
        self.batch = BatchLimits()  # small chunks several to a chunk-actor call (.batching)
        self.handler: ProcessHandler | None = None
        self.runtime: StageRuntime | None = None

    @property
    def tracker(self) -> Any:
        return self.kafka.tracker

    @property
    def inflight(self) -> dict[Any, Job]:
        """Ray ref -> chunk, of the chunks on Ray now."""
        return self.handler.inflight if self.handler is not None else {}

    @property
    def produced(self) -> int:
        return self.handler.produced if self.handler is not None else 0

    def settings(self) -> RuntimeSettings:
        """How the process stage runs on the runtime: bounded in flight (a full partition's
        records parked in order), outages retried per chunk without pausing the others."""
        k, p = self.cfg.kafka, self.cfg.process
        return RuntimeSettings(group=p.consumer_group, topics=(k.topics.raw,), output_topic=k.topics.redacted,
                               poll_max=p.max_inflight_chunks, poll_s=0.2, busy_poll_s=0.02,
                               max_inflight=p.max_inflight_chunks,
                               max_inflight_per_partition=p.max_inflight_per_partition, pause_on_retry=False,
                               drain_timeout_s=p.drain_timeout_s)

    def _submit_task(self, task: ChunkTask) -> Any:
        """One chunk to the chunk actor with the least work outstanding, counted in decoded pixels
        (frames x width x height) of the chunks sent to it that are still in flight; ties go in
        turn. Returns its Ray ref.

        Not plain round-robin: chunks differ by orders of magnitude (``make demo``: a 4 s chunk
        of 176x144 against a 2.4 s one of 640x272 on a street, ~10x the CPU), and each chunk actor
        sends to its own group's detector, so turn-taking can leave one detector with every large
        chunk while the other idles."""
        w = self._least_loaded()
        ref = self.workers[w].redact.remote(task)
        self._sent[ref] = (w, task_pixels(len(task.pts_ms), task.width, task.height))
        return ref

    def _submit_batch(self, tasks: list[ChunkTask]) -> list[Any]:
        """Several small chunks to the least-loaded chunk actor in one ``redact_many`` call
        (:mod:`.batching`); one Ray ref per chunk (``num_returns``), so the handler follows each
        chunk on its own."""
        w = self._least_loaded()
        # one argument per chunk: each small one travels inline in the call (a list of eight
        # one-frame chunks is just over Ray's 100 KiB inline limit: the object store)
        out = self.workers[w].redact_many.options(num_returns=len(tasks)).remote(*tasks)
        refs = list(out) if len(tasks) > 1 else [out]
        for ref, t in zip(refs, tasks):
            self._sent[ref] = (w, task_pixels(len(t.pts_ms), t.width, t.height))
        return refs

    def _least_loaded(self) -> int:
        """The chunk actor with the fewest decoded pixels in flight; ties go in turn."""
        live = self.handler.inflight if self.handler is not None else {}
        self._sent = {ref: sent for ref, sent in self._sent.items() if ref in live}
        n = len(self.workers)
        load = [0] * n
        for w, px in self._sent.values():
            load[w] += px
        first = (self._rr + 1) % n
        w = min(((first + i) % n for i in range(n)), key=lambda j: (load[j], (j - first) % n))
        self._rr = w
        return w

    # ---------------------------------------------------------------- Ray
    def _start_ray(self) -> None:
        import ray

        from .actors import ChunkActor, DetectorActor

        rc = self.cfg.ray
        if not ray.is_initialized():
            from pipeline.raynet import keep_ray_on_loopback

            if keep_ray_on_loopback(rc.address):  # a local Ray stays on 127.0.0.1 (Ray has no authentication)
                # and, like `veilstream up`'s head, skips the observability work nothing reads (raysettings)
                from .raysettings import apply_quiet_ray_env

                apply_quiet_ray_env(os.environ)
            kw: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True,
                                  "log_to_driver": True, "configure_logging": False}
            if rc.address:
                ray.init(address=rc.address, **kw)
            else:
                ray.init(num_cpus=rc.num_cpus, object_store_memory=rc.object_store_mb * 1024 * 1024, **kw)
        self._check_capacity(ray)
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
                        timeout_s=p.detector_timeout_s, small_lanes=det.small_lanes))
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
                        local=[g] if groups else None, split_min_frames=det.split_min_frames))
        logger.info("policies %s default=%s routed=%s", self.plan.describe(), self.plan.default_id, self.plan.routed)
        # Building sessions and warming up takes seconds: wait here, not at the first chunk. Actors
        # needing a GPU wait for the node the cluster autoscaler adds: as long as the start-up
        # budget /healthz grants (metrics.startup_budget_s), not a fixed 300 s that would
        # crash-loop the pod while the node joins.
        ready = self._wait_ready(ray, [d.ready.remote() for d in self.detectors]
                                 + [w.ready.remote() for w in self.workers],
                                 float(getattr(self.cfg.metrics, "startup_budget_s", 300.0)))
        self.model_ids = ready[0] if self.detectors else []
        logger.info("ray ready detectors=%d chunk_actors=%d concurrency=%d models=%s", len(self.detectors),
                    len(self.workers), rc.chunk_concurrency, ",".join(m["id"] for m in self.model_ids))

    def _check_capacity(self, ray: Any) -> None:
        """Before any actor is created: actors that ask more than the cluster can ever offer wait
        in Ray's queue forever (the stage polls, submits, and nothing happens). On a cluster that
        cannot grow (:func:`cluster_can_grow`) that is an error naming the keys and numbers; on
        one that may, a warning, and :meth:`_wait_ready` keeps saying it while they wait."""
        problem = capacity_problem(self.cfg.ray, _live_nodes(ray))
        if problem is None:
            return
        if not cluster_can_grow(self.cfg.ray.address):
            raise VeilStreamError(problem)
        logger.warning("%s (now; waiting for the cluster to add nodes)", problem)

    def _wait_ready(self, ray: Any, refs: list[Any], budget_s: float) -> list[Any]:
        """The actors' ``ready()`` answers, waited for at most ``budget_s`` (the start-up budget
        /healthz grants: actors needing a GPU wait for the node the autoscaler adds). Every
        :data:`PENDING_WARN_S` without them, a warning says what they ask and what the cluster
        has; at the end, an error saying the same. An actor whose ``__init__`` failed is an error
        at once, in one line."""
        deadline = time.monotonic() + budget_s
        pending = list(refs)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                nodes = _live_nodes(ray)
                raise VeilStreamError(
                    f"ray: {len(pending)} of {len(refs)} process actors not started after {budget_s:g}s "
                    f"(metrics.startup_budget_s): {demand_summary(self.cfg.ray)}; the cluster has "
                    f"{_num(sum(n.get('CPU', 0.0) for n in nodes))} CPUs, "
                    f"{_num(sum(n.get('GPU', 0.0) for n in nodes))} GPUs on {len(nodes)} nodes")
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=min(left, PENDING_WARN_S))
            try:
                ray.get(done)
            except Exception as exc:  # noqa: BLE001 - an actor's __init__ failed: say why in one line
                raise VeilStreamError(f"process actors failed to start: {root_cause(exc)}") from None
            if pending and deadline - time.monotonic() > 0:
                nodes = _live_nodes(ray)
                logger.warning("ray: %d of %d process actors still pending after %.0fs: %s; the cluster has %s CPUs, "
                               "%s GPUs on %d nodes", len(pending), len(refs), budget_s - (deadline - time.monotonic()),
                               demand_summary(self.cfg.ray), _num(sum(n.get("CPU", 0.0) for n in nodes)),
                               _num(sum(n.get("GPU", 0.0) for n in nodes)), len(nodes))
        try:
            return list(ray.get(refs))
        except Exception as exc:  # noqa: BLE001 - as above
            raise VeilStreamError(f"process actors failed to start: {root_cause(exc)}") from None

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        import ray

        # Probes first: /healthz is live while Ray, the actors and their models start (a GPU
        # node may still be joining), /readyz turns 200 only once the loop consumes.
        # The start-up phase begins before the server answers: its very first /healthz says
        # "starting", never "running" (a probe racing the phase's start saw "running" before).
        server = None
        try:
            with self.metrics.starting(getattr(self.cfg.metrics, "startup_budget_s", 900.0)):
                server = serve_config(self.metrics, self.cfg.metrics)
                self._start_ray()
        except BaseException:
            self._release_actors(ray)
            if server is not None:
                server.shutdown()
            raise
        stop_on_signals(self.stop_event)  # ray.init installed its own SIGTERM handler: take it back
        self.handler = ProcessHandler(self.cfg, self.plan, self.metrics, self._submit_task, ray,
                                      detectors=self.detectors, model_ids=self.model_ids,
                                      submit_many=self._submit_batch, batch=self.batch, workers=len(self.workers))
        self.runtime = StageRuntime(self.kafka, self.handler, self.settings(), stop_event=self.stop_event)
        try:
            return self.runtime.run()
        finally:
            self._release_actors(ray)
            if server is not None:
                server.shutdown()

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
