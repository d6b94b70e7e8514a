"""``veilstream raw-sink``: raw chunks -> the encrypted raw vault, for policies that keep them.

    poll veil.chunks.raw ──► decode ──► policy of the camera keeps raw footage? (raw_days > 0)
        no  ──► counted (``veil_rawsink_chunks_total{outcome="policy_keeps_no_raw"}``), finished
        yes ──► seal (AES-256-GCM, per camera-day data key) ──► PUT under object lock for
                raw_days ──► finished
    ──► commit what ``OffsetTracker`` allows

* On the stage runtime (:mod:`pipeline.runtime`): :class:`RawSinkHandler` returns ``Emit()``
  once a chunk is stored (or counted as one the policy does not keep), ``Retry`` when the
  object store or KMS is down; the runtime finishes, commits, pauses every assigned
  partition and backs off (Kafka is the buffer, and the raw topic's short retention is why
  the vault must keep up).
* Invalid messages are not dead-lettered here: the process stage reads the same topic and
  owns the DLQ for them. The raw sink counts them (``outcome="invalid_message"``).
* Its own consumer group: the raw sink never slows or reorders the redaction path.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from pipeline.runtime import (
    BaseHandler,
    Emit,
    Outcome,
    Record,
    Retry,
    RuntimeSettings,
    StageRuntime,
    backoff_s,
)

from .vault import RawVault

logger = logging.getLogger(__name__)


class RawSinkHandler(BaseHandler):
    """The raw sink's work per record, on the stage runtime (:mod:`pipeline.runtime`): every
    record is finished in :meth:`handle` (``Emit()`` once stored or counted) or retried."""

    def __init__(self, config: Any, vault: RawVault, metrics: Any, clock: Callable[[], float]) -> None:
        self.cfg = config
        self.vault = vault
        self.metrics = metrics
        self.clock = clock
        self.policies: dict[str, Any] = {}
        if getattr(config, "policies_dir", None):
            from schemas.policy import load_policies

            self.policies = load_policies(config.policies_dir)
        self.outcomes = Counter("veil_rawsink_chunks_total", "raw chunks handled, per outcome", ["outcome"],
                                registry=metrics.registry)
        self.stored_keys: list[str] = []

    def _policy_for(self, chunk: Any) -> tuple[str, Any]:
        pid = chunk.policy_id or self.cfg.process.policy_id
        return pid, self.policies.get(pid)

    def handle(self, rec: Record) -> Outcome:
        from schemas.messages import HEADER_META, SchemaError, decode_chunk_captured

        try:
            chunk = decode_chunk_captured(rec.value, list(rec.headers))
        except SchemaError as exc:
            logger.warning("raw chunk invalid offset=%d error=%s (the process stage dead-letters it)",
                           rec.src.offset, exc)
            return self._done("invalid_message")
        pid, policy = self._policy_for(chunk)
        if policy is None or policy.retention.raw_days <= 0:
            return self._done("unknown_policy" if policy is None and self.policies else "policy_keeps_no_raw")
        meta = json.loads(dict(rec.headers)[HEADER_META])
        meta.setdefault("policy_id", pid)
        return self._store(rec, meta, bytes(chunk.payload), policy)

    def _done(self, outcome: str) -> Emit:
        return Emit(on_acked=lambda: self.outcomes.labels(outcome=outcome).inc())

    def _store(self, rec: Record, meta: dict[str, Any], payload: bytes, pol: Any) -> Outcome:
        from pipeline.objectstore import RetentionSpec

        until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=pol.retention.raw_days)).replace(microsecond=0)
        try:
            key = self.vault.put_chunk(meta, payload, tags={"policy-id": pol.policy_id,
                                                            "camera": str(meta["camera_id"])},
                                       retention=RetentionSpec(pol.retention.mode, until))
        except Exception as exc:  # noqa: BLE001 - S3 / KMS outage: retry, never skip
            from pipeline.stage import root_cause

            delay = backoff_s(rec.attempt + 1)
            self.metrics.errors.labels(kind="store").inc()
            logger.error("raw store failed camera=%s chunk_seq=%s attempt=%d retry_in=%.1fs error=%s",
                         meta.get("camera_id"), meta.get("chunk_seq"), rec.attempt + 1, delay, root_cause(exc)[:300])
            return Retry(delay)
        self.stored_keys.append(key)
        self.metrics.chunks_out.labels(camera="all").inc()
        return self._done("stored")

    def status(self) -> dict[str, Any]:
        return {"stored": len(self.stored_keys)}

    def summary(self) -> dict[str, Any]:
        return self.status()


class RawSinkWorker:
    """The raw sink: :class:`RawSinkHandler` on the stage runtime.

    Args:
        config: the ``PipelineConfig`` (reads ``kafka``, ``raw_vault``, ``policies_dir``, ``metrics``).
        vault: where sealed chunks go.
        consumer: a consumer to use instead of connecting (tests pass ``tests.fakes`` or
            :class:`pipeline.runtime.TestingSource` ones).
    """

    def __init__(self, config: Any, vault: RawVault, *, consumer: Any = None,
                 stop_event: threading.Event | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        from pipeline.stage import StageKafka

        self.cfg = config
        self.k = StageKafka(config, "rawsink", status_interval_s=float(config.raw_vault.status_interval_s))
        self.k.consumer = consumer
        self.metrics = self.k.metrics
        self.handler = RawSinkHandler(config, vault, self.metrics, clock)
        self.policies = self.handler.policies
        self.outcomes = self.handler.outcomes
        self.stored_keys = self.handler.stored_keys
        # invalid messages are the process stage's to dead-letter; this stage produces nothing
        self.runtime = StageRuntime(self.k, self.handler, RuntimeSettings(
            group=config.raw_vault.consumer_group, topics=(config.kafka.topics.raw,), poll_max=32, poll_s=0.2,
            pause_on_retry=True, backoff_cap_s=30.0, drain_timeout_s=30.0), stop_event=stop_event, clock=clock)
        self.stop_event = self.runtime.stop_event
        if consumer is not None and hasattr(consumer, "on_revoke"):
            consumer.on_revoke = self.runtime.on_revoke

    def stop(self) -> None:
        self.stop_event.set()

    def run(self, exit_when_idle_s: float | None = None) -> int:
        self.runtime.connect()
        self.k.serve_metrics()
        try:
            return self.runtime.run(exit_when_idle_s)
        finally:
            self.k.producer = None  # unused by this stage: release its broker connections now
            self.k.close()  # the probe server with it

    def step(self) -> None:
        self.runtime.step()


def raw_store(config: Any) -> Any:
    """The raw bucket's store: always under object lock (raw footage is never overwritten
    or deleted before its policy's raw_days)."""
    from pipeline.objectstore import MinioSegmentStore

    store = MinioSegmentStore.from_config(config.object_store)
    store.bucket = config.object_store.raw_bucket
    store.object_lock = True
    return store


def build_raw_sink(config: Any, stop_event: threading.Event | None = None) -> RawSinkWorker:
    from .rules import raw_lifecycle_rules
    from .vault import LocalKeyFileProvider, key_provider_from_config

    provider = key_provider_from_config(config.raw_vault)
    if isinstance(provider, LocalKeyFileProvider):
        _ = provider.key_id  # an unreadable or malformed key file fails at start, not at the first chunk
    store = raw_store(config)
    store.ensure_bucket()
    vault = RawVault(store, provider)
    worker = RawSinkWorker(config, vault, stop_event=stop_event)
    rules = raw_lifecycle_rules(worker.policies.values())
    if rules:
        store.set_lifecycle(rules)
    if not any(p.retention.raw_days > 0 for p in worker.policies.values()):
        logger.warning("no policy keeps raw footage (retention.raw_days is 0 everywhere): the raw sink only "
                       "counts chunks")
    return worker


def run_raw_sink(config: Any, stop_event: threading.Event | None = None) -> int:
    return build_raw_sink(config, stop_event).run()
