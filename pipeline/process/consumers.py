"""Consumer actors: the process stage's Kafka consumers live inside the Ray cluster.

With ``ray.consumers: N`` (production), ``veilstream process`` runs as a Ray job in the
cluster (``ray job submit -- veilstream process``, or the head's own entrypoint; no Ray
Client), starts N :class:`ConsumerActor`\\ s and only supervises them. Each actor runs the
same :class:`~pipeline.process.worker.ProcessWorker` loop as local mode: it is one member
of the Kafka consumer group, owns the partitions the group gives it, sends each chunk to
the chunk actors and commits what the broker acknowledged. Scaling out is adding
consumer, chunk and detector actors (the Ray autoscaler adds nodes), not pods that
tunnel raw video into the head.

SIGTERM to the job stops every actor's loop (drain, flush, commit). If the job dies the
actors die with it (they are owned by it): the group rebalances and a restarted job
resumes from the committed offsets.

Metrics and probes (job mode): the supervising driver (on the Ray head) serves ONE endpoint on
the configured ``metrics.port`` before it connects to Ray. Every ``poll_s`` it asks each actor
for a :meth:`ConsumerActor.snapshot` (its status and its registry's families as plain data),
waiting at most ``answer_timeout_s``; ``/metrics`` serves the ``veil_process_*`` families of
the actors that answered the latest poll, merged, each sample labelled ``consumer="<index>"``
(names exactly as a single worker exports them, so the chart's alerts read the same series),
plus ``veil_process_consumers`` (configured) and ``veil_process_consumers_up`` (answered).
A consumer that does not answer is absent from ``/metrics`` (never served stale), and the
job fails once it has not answered for ``lost_after_s``. ``/readyz`` is 200 when every
consumer answered and consumes; ``/healthz`` is live while start-up is within its budget,
then while every consumer answers and none has stalled. The actors serve no HTTP themselves
(``metrics.enabled`` off in their copy of the config): several share a node, nothing could
select their ports, and the driver's endpoint carries all they export.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.metrics import Probes, serve_config
from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)

CONSUMER_LABEL = "consumer"

# (name, help, type, unit, [(sample name, labels, value, timestamp)]): what an actor sends
Family = tuple[str, str, str, str, list[tuple[str, dict[str, str], float, float | None]]]


def families_of(registry: Any) -> list[Family]:
    """The families a registry would export, as plain picklable data."""
    return [(m.name, m.documentation, m.type, m.unit,
             [(s.name, dict(s.labels), float(s.value), None if s.timestamp is None else float(s.timestamp))
              for s in m.samples])
            for m in registry.collect()]


class MergedConsumers(Collector):
    """The consumer actors' families merged into one exposition: every sample keeps its name
    and labels and gets ``consumer="<index>"``, so counters and histograms stay valid series
    per consumer and ``sum``/``sum by (le)`` over them is the stage's total."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self._lock = threading.Lock()
        self._latest: dict[int, list[Family]] = {}

    def update(self, answered: dict[int, list[Family]]) -> None:
        """The families of the consumers that answered the latest poll; the others' are dropped."""
        with self._lock:
            self._latest = dict(answered)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            latest = dict(self._latest)
        yield GaugeMetricFamily("veil_process_consumers", "consumer actors the process job runs",
                                value=self.expected)
        yield GaugeMetricFamily("veil_process_consumers_up",
                                "consumer actors that answered the job driver's latest poll", value=len(latest))
        merged: dict[str, Metric] = {}
        for idx in sorted(latest):
            for name, doc, typ, unit, samples in latest[idx]:
                m = merged.get(name)
                if m is None:
                    m = merged[name] = Metric(name, doc, typ, unit)
                elif m.type != typ:  # actors of another version mid-upgrade: keep the first kind
                    continue
                for sname, labels, value, ts in samples:
                    m.add_sample(sname, {**labels, CONSUMER_LABEL: str(idx)}, value, ts)
        yield from merged.values()


class JobMetrics(Probes):
    """The process job driver's ``/metrics`` (merged consumer families) and probes."""

    def __init__(self, consumers: int) -> None:
        super().__init__("process")
        self.consumers = consumers
        self.merged = MergedConsumers(consumers)
        self.registry.register(self.merged)

    def observe(self, answers: dict[int, dict[str, Any]]) -> None:
        """One poll: ``answers`` are the snapshots of the consumers that answered it."""
        self.merged.update({i: a["families"] for i, a in answers.items()})
        everyone = len(answers) == self.consumers
        self.ready = everyone and all(a["ready"] and a["phase"] == "running" for a in answers.values())
        if self.ready:
            self.starting_until = None  # start-up ends once every consumer consumes
        if everyone and not any(a["phase"] == "stalled" for a in answers.values()):
            self.tick()


class ConsumerActor:
    """Runs a :class:`ProcessWorker` loop in a thread of this actor."""

    def __init__(self, config: Any, index: int) -> None:
        import dataclasses

        from .worker import ProcessWorker

        # No HTTP server per actor: several share a node and nothing could select their ports;
        # the supervising job driver serves their merged families and probes (snapshot()).
        config = dataclasses.replace(config, metrics=dataclasses.replace(config.metrics, enabled=False))
        self.index = index
        self.stop_event = threading.Event()
        self.worker = ProcessWorker(config, self.stop_event)
        self.error: str | None = None
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name=f"veil-consumer-{index}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.exit_code = self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the supervising job
            from pipeline.stage import root_cause

            self.error = root_cause(exc)
            self.exit_code = 1
            logger.error("consumer %d failed: %s", self.index, self.error)

    def status(self) -> dict[str, Any]:
        return {"index": self.index, "ready": bool(self.worker.metrics.ready), "produced": self.worker.produced,
                "exit_code": self.exit_code, "error": self.error}

    def snapshot(self) -> dict[str, Any]:
        """:meth:`status` plus the loop's probe phase and the metric families (plain data)."""
        # a revoked partition's lag sample is gone already (StageKafka.forget_lag on revoke)
        return {**self.status(), "phase": self.worker.metrics.phase(),
                "families": families_of(self.worker.metrics.registry)}

    def stop(self, timeout_s: float = 120.0) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(timeout_s)
        return self.status()


def supervise(config: Any, stop_event: threading.Event, poll_s: float = 2.0, *, answer_timeout_s: float = 5.0,
              lost_after_s: float = 60.0) -> int:
    """Start ``ray.consumers`` consumer actors in the cluster and wait until
    ``stop_event`` (SIGTERM) or until one of them fails; then stop them all (each drains,
    flushes and commits). Returns 0 after a clean stop, 1 when a consumer failed.

    Serves the merged metrics and the probes on ``metrics.port`` from before Ray is
    connected (module docstring)."""
    import ray

    rc = config.ray
    metrics = JobMetrics(rc.consumers)
    try:
        server = serve_config(metrics, config.metrics)  # probes first: live while Ray and actors start
    except OSError as exc:
        raise VeilStreamError(f"process job: metrics.port {config.metrics.port}: cannot listen "
                              f"({exc.strerror or exc}); expected a free port on the Ray head") from None
    metrics.starting_until = time.monotonic() + float(getattr(config.metrics, "startup_budget_s", 900.0))
    actors: list[Any] = []
    failed: str | None = None
    try:
        if not ray.is_initialized():
            from pipeline.raynet import keep_ray_on_loopback

            if rc.address:  # "auto" (a job on the head) inherits the head's environment
                keep_ray_on_loopback(rc.address)
            ray.init(address=rc.address or "auto", include_dashboard=False, configure_logging=False,
                     log_to_driver=True)
        from pipeline.stage import stop_on_signals

        stop_on_signals(stop_event)  # ray.init replaced our SIGTERM handler
        cls: Any = ray.remote(ConsumerActor).options(num_cpus=0.25, max_restarts=0, max_concurrency=4)
        actors = [cls.remote(config, i) for i in range(rc.consumers)]
        logger.info("process job: %d consumer actor(s) started in the cluster", len(actors))
        failed = _watch(ray, actors, metrics, stop_event, poll_s, answer_timeout_s, lost_after_s)
    finally:
        metrics.ready = False
        _stop_all(ray, actors, failed)
        if server is not None:
            server.shutdown()
    if failed:
        raise VeilStreamError(f"process: {failed}")
    return 0


def _watch(ray: Any, actors: list[Any], metrics: JobMetrics, stop_event: threading.Event, poll_s: float,
           answer_timeout_s: float, lost_after_s: float) -> str | None:
    """Poll the actors until ``stop_event`` or a failure (returned, one line). A call that has
    not answered is not repeated: it stays pending, and the actor is absent from ``/metrics``."""
    pending: dict[int, Any] = {}
    last_answer = [time.monotonic()] * len(actors)
    while not stop_event.is_set():
        for i, a in enumerate(actors):
            if i not in pending:
                pending[i] = a.snapshot.remote()
        done, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=answer_timeout_s)
        done_ids = {ref.hex() for ref in done}
        answers: dict[int, dict[str, Any]] = {}
        now = time.monotonic()
        for i, ref in list(pending.items()):
            if ref.hex() not in done_ids:
                continue
            del pending[i]
            try:
                s = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a consumer actor died: the group rebalances
                return f"consumer actor {i} lost: {str(exc).splitlines()[0][:200]}"
            if s["exit_code"] not in (None, 0) or s["error"]:
                return f"consumer {s['index']} failed: {s['error']}"
            answers[i] = s
            last_answer[i] = now
        metrics.observe(answers)
        silent = [i for i, t in enumerate(last_answer) if now - t > lost_after_s]
        if silent:
            return f"consumer actor(s) {silent} did not answer for {lost_after_s:g} s"
        stop_event.wait(poll_s)
    return None


def _stop_all(ray: Any, actors: list[Any], failed: str | None) -> None:
    if not actors:
        return
    logger.info("process job stopping %d consumer actor(s)%s", len(actors), f" ({failed})" if failed else "")
    t0 = time.monotonic()
    clean, produced = 0, 0
    for a, ref in [(a, a.stop.remote()) for a in actors]:
        try:
            st = ray.get(ref, timeout=max(5.0, 180.0 - (time.monotonic() - t0)))
            clean += int(st["exit_code"] == 0)
            produced += int(st["produced"])
        except Exception as exc:  # noqa: BLE001
            logger.warning("consumer actor did not stop cleanly: %s", str(exc).splitlines()[0][:200])
        ray.kill(a)
    logger.info("process job stopped: %d of %d consumer(s) drained and committed, produced=%d", clean, len(actors),
                produced)
