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

Scaling on lag (``ray.autoscale`` with ``min_consumers`` < ``max_consumers``): every
``check_interval_s`` the supervisor reads the group's lag on the raw topic and
:func:`~pipeline.process.scaling.desired_consumers` decides the count. One more consumer actor
is started (the group rebalances onto it; the Ray autoscaler adds worker pods for its
placement groups), or the highest-numbered one is stopped exactly as SIGTERM stops one: its
loop pauses, drains what is in flight, flushes, commits and leaves the group, then it is
killed and its placement groups are gone (idle pods go after the autoscaler's idle timeout).
A consumer the scaler added that fails before it ever consumed (no capacity for its actors
within the start-up budget) is dropped and counted as a change, without failing the job.

Metrics and probes (job mode): the supervising driver (on the Ray head) serves ONE endpoint on
the configured ``metrics.port`` before it connects to Ray. Every ``poll_s`` it asks each actor
for a :meth:`ConsumerActor.snapshot` (its status and its registry's families as plain data),
waiting at most ``answer_timeout_s``; ``/metrics`` serves the ``veil_process_*`` families of
the actors that answered the latest poll, merged, each sample labelled ``consumer="<index>"``
(names exactly as a single worker exports them, so the chart's alerts read the same series),
plus ``veil_process_consumers`` (running, stopping ones not counted), ``veil_process_consumers_desired``
(what the scaler last decided; the configured count without autoscaling),
``veil_process_consumers_up`` (answered) and ``veil_process_raw_lag_chunks`` (the lag the scaler
last read; absent without autoscaling).
A consumer that does not answer is absent from ``/metrics`` (never served stale), and the
job fails once it has not answered for ``lost_after_s``. ``/readyz`` is 200 when every
consumer answered and consumes (its consumer completed its group join); ``/healthz`` is live
while start-up is within its budget, then while every consumer answers and none has stalled. The actors serve no HTTP themselves
(``metrics.enabled`` off in their copy of the config): several share a node, nothing could
select their ports, and the driver's endpoint carries all they export.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.metrics import Probes, serve_config
from schemas.errors import VeilStreamError

from .scaling import GroupLagProbe, ScalePolicy, ScaleState, desired_consumers

logger = logging.getLogger(__name__)

CONSUMER_LABEL = "consumer"
CONSUMING_LINE = "process job: every consumer consumes"
"""Logged by the job's driver the first time every consumer actor consumes (its loop runs and its
consumer completed its group join: :meth:`ConsumerActor.consumes`); the submitter reads it in the
job's log to tell it ready (:mod:`.submit`), so a rolling upgrade stops the old job only once the
new one's consumers are members of the group with their partitions assigned."""

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
        self.desired = expected
        self.lag: int | None = None
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
        yield GaugeMetricFamily("veil_process_consumers_desired",
                                "consumer actors the process job's scaler wants (ray.autoscale)", value=self.desired)
        if self.lag is not None:
            yield GaugeMetricFamily("veil_process_raw_lag_chunks",
                                    "raw-topic chunks the process group has not committed, as the scaler read it",
                                    value=self.lag)
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

    def set_consumers(self, running: int, desired: int, lag: int | None) -> None:
        """The consumer count now (scaling), what the scaler wants and the lag it read."""
        self.consumers = running
        self.merged.expected, self.merged.desired, self.merged.lag = running, desired, lag

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
        return {"index": self.index, "ready": self.consumes(), "produced": self.worker.produced,
                "exit_code": self.exit_code, "error": self.error}

    def consumes(self) -> bool:
        """The loop runs AND its consumer completed a group join (got its first assignment).
        The loop alone is ready right after subscribing, while the join it started is still
        rebalancing the group: a new job counted ready then let a rollout stop the old job in
        the middle of that rebalance, its consumers left the group before it completed, and on
        the local broker (tansu) the group never completed it: the new job was never assigned a
        partition and the raw topic was not consumed or committed again."""
        consumer = getattr(self.worker.kafka, "consumer", None)
        return bool(self.worker.metrics.ready) and bool(getattr(consumer, "joined", False))

    def snapshot(self) -> dict[str, Any]:
        """:meth:`status` plus the loop's probe phase and the metric families (plain data)."""
        # a revoked partition's lag sample is gone already (StageKafka.forget_lag on revoke)
        return {**self.status(), "phase": self.worker.metrics.phase(),
                "families": families_of(self.worker.metrics.registry)}

    def stop(self, timeout_s: float = 120.0) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(timeout_s)
        return self.status()


class ConsumerScaler:
    """Starts and stops consumer actors as :func:`desired_consumers` decides (module docstring).

    Args:
        policy: bounds and windows.
        read_lag: () -> (lag in chunks, raw partitions), either None when unknown.
        start: index -> a new consumer actor's handle.
        check_every_s: seconds between two lag readings.
    """

    def __init__(self, policy: ScalePolicy, read_lag: Callable[[], tuple[int | None, int | None]],
                 start: Callable[[int], Any], check_every_s: float) -> None:
        self.state = ScaleState(policy)
        self.read_lag, self.start, self.check_every_s = read_lag, start, check_every_s
        self.next_check = 0.0
        self.desired: int | None = None
        self.lag: int | None = None
        self.stopping: dict[int, tuple[Any, Any]] = {}  # index -> (actor, its stop() ref)
        self.fresh: set[int] = set()  # started by the scaler, not consuming yet

    def step(self, ray: Any, actors: dict[int, Any], now: float) -> None:
        """Reap the consumers that finished stopping; every ``check_every_s``, read the lag and
        start or stop consumers to reach the decided count (``actors`` is updated in place)."""
        self.reap(ray)
        if now < self.next_check:
            return
        self.next_check = now + self.check_every_s
        lag, parts = self.read_lag()
        self.lag = lag
        if parts is not None:
            self.state.partitions = parts
        n, why = desired_consumers(len(actors), lag, now, self.state)
        self.desired = n
        if n == len(actors):
            logger.debug("process job: consumers %d (%s)", n, why)
            return
        logger.info("process job: consumers %d -> %d (%s)", len(actors), n, why)
        while len(actors) < n:
            idx = next(i for i in range(len(actors) + len(self.stopping) + 1)
                       if i not in actors and i not in self.stopping)
            actors[idx] = self.start(idx)
            self.fresh.add(idx)
            logger.info("process job: started consumer %d; the group rebalances onto it", idx)
        while len(actors) > n:
            idx = max(actors)
            actor = actors.pop(idx)
            self.fresh.discard(idx)
            self.stopping[idx] = (actor, actor.stop.remote())
            logger.info("process job: stopping consumer %d (drain, flush, commit, leave the group)", idx)

    def consumed(self, idx: int) -> None:
        self.fresh.discard(idx)

    def abandon(self, ray: Any, actors: dict[int, Any], idx: int, why: str, now: float) -> bool:
        """A consumer the scaler added failed before it ever consumed (its actors found no
        capacity within the start-up budget): drop it and hold for a window, instead of failing
        the job. False for any other consumer (the caller fails the job)."""
        if idx not in self.fresh:
            return False
        self.fresh.discard(idx)
        actor = actors.pop(idx, None)
        if actor is not None:
            ray.kill(actor)
        self.state.changed_at = now
        self.desired = len(actors)
        logger.warning("process job: consumer %d added by the scaler never consumed (%s); running %d", idx, why,
                       len(actors))
        return True

    def reap(self, ray: Any, timeout_s: float = 0.0) -> None:
        for idx, (actor, ref) in list(self.stopping.items()):
            done, _ = ray.wait([ref], num_returns=1, timeout=timeout_s)
            if not done:
                continue
            del self.stopping[idx]
            try:
                st = ray.get(ref)
                logger.info("process job: consumer %d stopped exit_code=%s produced=%s", idx, st["exit_code"],
                            st["produced"])
            except Exception as exc:  # noqa: BLE001 - uncommitted chunks go to the partitions' new owners
                logger.warning("process job: consumer %d did not stop cleanly: %s", idx,
                               str(exc).splitlines()[0][:200])
            ray.kill(actor)


def supervise(config: Any, stop_event: threading.Event, poll_s: float = 2.0, *, answer_timeout_s: float = 5.0,
              lost_after_s: float = 60.0) -> int:
    """Start ``ray.consumers`` consumer actors in the cluster and wait until
    ``stop_event`` (SIGTERM) or until one of them fails; then stop them all (each drains,
    flushes and commits). Returns 0 after a clean stop, 1 when a consumer failed. With
    ``ray.autoscale`` bounds apart, the count follows the raw topic's lag in between.

    Serves the merged metrics and the probes on ``metrics.port`` from before Ray is
    connected (module docstring)."""
    import ray

    rc = config.ray
    policy = ScalePolicy.of(rc)
    metrics = JobMetrics(rc.consumers)
    server = _serve_job_metrics(metrics, config.metrics, stop_event)
    metrics.starting_until = time.monotonic() + float(getattr(config.metrics, "startup_budget_s", 900.0))
    actors: dict[int, Any] = {}
    scaler: ConsumerScaler | None = None
    probe: GroupLagProbe | None = None
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
        actors = {i: cls.remote(config, i) for i in range(rc.consumers)}
        if not policy.fixed:
            probe = GroupLagProbe(config.kafka, config.process.consumer_group, config.kafka.topics.raw)
            scaler = ConsumerScaler(policy, probe.read, lambda i: cls.remote(config, i),
                                    rc.autoscale.check_interval_s)
        logger.info("process job: %d consumer actor(s) started in the cluster%s; code from %s", len(actors),
                    f" (autoscale {policy.min_consumers}..{policy.max_consumers} on lag)" if scaler else "",
                    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # shipped by the submitter?
        failed = _watch(ray, actors, metrics, stop_event, poll_s, answer_timeout_s, lost_after_s, scaler=scaler)
    finally:
        metrics.ready = False
        _stop_all(ray, list(actors.values()), failed,
                  stopping=list(scaler.stopping.values()) if scaler is not None else [])
        if probe is not None:
            probe.close()
        if server is not None:
            server.shutdown()
    if failed:
        raise VeilStreamError(f"process: {failed}")
    return 0


def _serve_job_metrics(metrics: JobMetrics, cfg: Any, stop_event: threading.Event) -> Any:
    """The driver's endpoint on ``metrics.port``. During a rolling upgrade the old job's driver
    still holds that port on the same head: then this one serves nothing until it is free
    (a background thread retries every 2 s), and the old job's endpoint answers meanwhile."""
    try:
        return serve_config(metrics, cfg)  # probes first: live while Ray and actors start
    except OSError as exc:
        logger.warning("process job: metrics.port %s busy (%s): another process job on this head (a rolling "
                       "upgrade?); serving /metrics once it is free", cfg.port, exc.strerror or exc)
    holder: dict[str, Any] = {}

    def retry() -> None:
        while not stop_event.wait(2.0):
            try:
                holder["server"] = serve_config(metrics, cfg)
                logger.info("process job: metrics.port %s free again: serving /metrics", cfg.port)
                return
            except OSError:
                continue

    threading.Thread(target=retry, name="veil-job-metrics-port", daemon=True).start()

    class _Later:
        def shutdown(self) -> None:
            if "server" in holder:
                holder["server"].shutdown()

    return _Later()


def _watch(ray: Any, actors: list[Any] | dict[int, Any], metrics: JobMetrics, stop_event: threading.Event,
           poll_s: float, answer_timeout_s: float, lost_after_s: float,
           scaler: ConsumerScaler | None = None) -> str | None:
    """Poll the actors until ``stop_event`` or a failure (returned, one line). A call that has
    not answered is not repeated: it stays pending, and the actor is absent from ``/metrics``.
    With a ``scaler``, ``actors`` (index -> handle) changes as it starts and stops consumers."""
    if not isinstance(actors, dict):
        actors = dict(enumerate(actors))
    pending: dict[int, Any] = {}
    last_answer = dict.fromkeys(actors, time.monotonic())
    announced = False
    while not stop_event.is_set():
        if scaler is not None:
            scaler.step(ray, actors, time.monotonic())
        for i in list(pending):
            if i not in actors:  # stopped by the scaler: its stop() answers, not its snapshot
                del pending[i]
        for i, a in actors.items():
            last_answer.setdefault(i, time.monotonic())
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
                why = f"consumer actor {i} lost: {str(exc).splitlines()[0][:200]}"
                if scaler is not None and scaler.abandon(ray, actors, i, why, now):
                    continue
                return why
            if s["exit_code"] not in (None, 0) or s["error"]:
                why = f"consumer {s['index']} failed: {s['error']}"
                if scaler is not None and scaler.abandon(ray, actors, i, why, now):
                    continue
                return why
            if scaler is not None and s["ready"]:
                scaler.consumed(i)
            answers[i] = s
            last_answer[i] = now
        for i in list(last_answer):
            if i not in actors:
                del last_answer[i]
        if scaler is not None:
            metrics.set_consumers(len(actors), scaler.desired if scaler.desired is not None else len(actors),
                                  scaler.lag)
        metrics.observe(answers)
        if metrics.ready and not announced:
            logger.info("%s (%d)", CONSUMING_LINE, len(actors))
            announced = True
        silent = sorted(i for i, t in last_answer.items() if now - t > lost_after_s)
        if silent:
            return f"consumer actor(s) {silent} did not answer for {lost_after_s:g} s"
        stop_event.wait(poll_s)
    return None


def _stop_all(ray: Any, actors: list[Any], failed: str | None, stopping: list[tuple[Any, Any]] | None = None) -> None:
    stopping = stopping or []
    if not actors and not stopping:
        return
    logger.info("process job stopping %d consumer actor(s)%s", len(actors) + len(stopping),
                f" ({failed})" if failed else "")
    t0 = time.monotonic()
    clean, produced = 0, 0
    for a, ref in [(a, a.stop.remote()) for a in actors] + list(stopping):
        try:
            st = ray.get(ref, timeout=max(5.0, 180.0 - (time.monotonic() - t0)))
            clean += int(st["exit_code"] == 0)
            produced += int(st["produced"])
        except Exception as exc:  # noqa: BLE001
            logger.warning("consumer actor did not stop cleanly: %s", str(exc).splitlines()[0][:200])
        ray.kill(a)
    logger.info("process job stopped: %d of %d consumer(s) drained and committed, produced=%d", clean,
                len(actors) + len(stopping), produced)
