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
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)


class ConsumerActor:
    """Runs a :class:`ProcessWorker` loop in a thread of this actor."""

    def __init__(self, config: Any, index: int) -> None:
        import dataclasses

        from .worker import ProcessWorker

        # several consumers may share a node: each serves its probes/metrics on a free port
        config = dataclasses.replace(config, metrics=dataclasses.replace(config.metrics, port=0))
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

    def stop(self, timeout_s: float = 120.0) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(timeout_s)
        return self.status()


def supervise(config: Any, stop_event: threading.Event, poll_s: float = 2.0) -> int:
    """Start ``ray.consumers`` consumer actors in the cluster and wait until
    ``stop_event`` (SIGTERM) or until one of them fails; then stop them all (each drains,
    flushes and commits). Returns 0 after a clean stop, 1 when a consumer failed."""
    import ray

    rc = config.ray
    if not ray.is_initialized():
        ray.init(address=rc.address or "auto", include_dashboard=False, configure_logging=False,
                 log_to_driver=True)
    from pipeline.stage import stop_on_signals

    stop_on_signals(stop_event)  # ray.init replaced our SIGTERM handler
    cls: Any = ray.remote(ConsumerActor).options(num_cpus=0.25, max_restarts=0, max_concurrency=4)
    actors: list[Any] = [cls.remote(config, i) for i in range(rc.consumers)]
    logger.info("process job: %d consumer actor(s) started in the cluster", len(actors))
    failed: str | None = None
    while not stop_event.is_set() and failed is None:
        try:
            states = ray.get([a.status.remote() for a in actors], timeout=60)
        except Exception as exc:  # noqa: BLE001 - a consumer actor died: the group rebalances
            failed = f"consumer actor lost: {str(exc).splitlines()[0][:200]}"
            break
        for s in states:
            if s["exit_code"] not in (None, 0) or s["error"]:
                failed = f"consumer {s['index']} failed: {s['error']}"
        stop_event.wait(poll_s)
    logger.info("process job stopping %d consumer actor(s)%s", len(actors), f" ({failed})" if failed else "")
    t0 = time.monotonic()
    for a, ref in [(a, a.stop.remote()) for a in actors]:
        try:
            ray.get(ref, timeout=max(5.0, 180.0 - (time.monotonic() - t0)))
        except Exception as exc:  # noqa: BLE001
            logger.warning("consumer actor did not stop cleanly: %s", str(exc).splitlines()[0][:200])
        ray.kill(a)
    if failed:
        raise VeilStreamError(f"process: {failed}")
    return 0
