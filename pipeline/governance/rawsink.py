"""``veilstream raw-sink``: raw chunks -> the encrypted raw vault, for policies that keep them.

    poll veil.chunks.raw ──► decode ──► policy of the camera keeps raw footage? (raw_days > 0)
        no  ──► counted (``veil_rawsink_chunks_total{outcome="policy_keeps_no_raw"}``), finished
        yes ──► seal (AES-256-GCM, per camera-day data key) ──► PUT under object lock for
                raw_days ──► finished
    ──► commit what ``OffsetTracker`` allows

* Commit after durable: an offset is finished only once its raw object is stored (or the
  chunk is counted as one the policy does not keep). Object store or KMS down: the chunk
  is retried with backoff and every assigned partition paused (Kafka is the buffer, and
  the raw topic's short retention is why the vault must keep up).
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
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from .vault import RawVault

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    src: Any  # pipeline.stage.Source
    meta: dict[str, Any]
    payload: bytes
    policy: Any
    attempts: int = 0
    next_try: float = 0.0


class RawSinkWorker:
    """The raw-sink loop on the shared stage skeleton (:class:`pipeline.stage.StageKafka`).

    Args:
        config: the ``PipelineConfig`` (reads ``kafka``, ``raw_vault``, ``policies_dir``, ``metrics``).
        vault: where sealed chunks go.
        consumer: a consumer to use instead of connecting (tests pass ``tests.fakes`` ones).
    """

    def __init__(self, config: Any, vault: RawVault, *, consumer: Any = None,
                 stop_event: threading.Event | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        from pipeline.stage import StageKafka

        self.cfg = config
        self.vault = vault
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        self.k = StageKafka(config, "rawsink", status_interval_s=float(config.raw_vault.status_interval_s))
        self.k.consumer = consumer
        self.metrics = self.k.metrics
        self.pending: list[_Pending] = []
        self.policies: dict[str, Any] = {}
        if getattr(config, "policies_dir", None):
            from schemas.policy import load_policies

            self.policies = load_policies(config.policies_dir)
        self.outcomes = Counter("veil_rawsink_chunks_total", "raw chunks handled, per outcome", ["outcome"],
                                registry=self.metrics.registry)
        self.stored_keys: list[str] = []
        self.last_message = clock()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self, exit_when_idle_s: float | None = None) -> int:
        if self.k.consumer is None:
            self.k.connect(self.cfg.raw_vault.consumer_group, [self.cfg.kafka.topics.raw], on_revoke=self._on_revoke)
        self.k.serve_metrics()
        self.metrics.ready = True
        consumer = self.k.consumer
        try:
            while not self.stop_event.is_set():
                self.step()
                if not consumer.assigned:
                    self.last_message = self.clock()
                elif (exit_when_idle_s is not None and not self.pending
                        and self.clock() - self.last_message >= exit_when_idle_s):
                    break
            deadline = self.clock() + 30.0
            while self.pending and self.clock() < deadline:
                time.sleep(0.2)
                self._retry()
            if self.pending:
                logger.error("raw-sink stopped with %d chunk(s) not stored: offsets stay uncommitted",
                             len(self.pending))
            self.k.commit()
        finally:
            consumer.close()
            self.k.producer = None  # unused by this stage: release its broker connections now
            self.metrics.ready = False
        return 0

    def step(self, poll_s: float = 0.2) -> None:
        self.metrics.tick()
        self._retry()
        for msg in self.k.consumer.poll(poll_s, 32):
            self._handle(msg)
        self.k.commit()
        if self.k.status.due():
            self.k.log_status(stored=len(self.stored_keys), pending=len(self.pending))

    def _policy_for(self, chunk: Any) -> tuple[str, Any]:
        pid = chunk.policy_id or self.cfg.process.policy_id
        return pid, self.policies.get(pid)

    def _handle(self, msg: Any) -> None:
        from pipeline.stage import Source
        from schemas.messages import HEADER_META, SchemaError, decode_chunk_captured

        src = Source.of(msg)
        self.k.started(src)
        self.last_message = self.clock()
        try:
            chunk = decode_chunk_captured(msg.value(), msg.headers())
        except SchemaError as exc:
            logger.warning("raw chunk invalid offset=%d error=%s (the process stage dead-letters it)", src.offset,
                           exc)
            self._done(src, "invalid_message")
            return
        pid, policy = self._policy_for(chunk)
        if policy is None or policy.retention.raw_days <= 0:
            self._done(src, "unknown_policy" if policy is None and self.policies else "policy_keeps_no_raw")
            return
        meta = json.loads(dict(msg.headers() or [])[HEADER_META])
        meta.setdefault("policy_id", pid)
        self._store(_Pending(src, meta, bytes(chunk.payload), policy))

    def _done(self, src: Any, outcome: str) -> None:
        self.outcomes.labels(outcome=outcome).inc()
        self.k.finished(src)

    def _store(self, p: _Pending) -> None:
        from pipeline.sink.objectstore import RetentionSpec

        pol = p.policy
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=pol.retention.raw_days)).replace(microsecond=0)
        try:
            key = self.vault.put_chunk(p.meta, p.payload, tags={"policy-id": pol.policy_id,
                                                                "camera": str(p.meta["camera_id"])},
                                       retention=RetentionSpec(pol.retention.mode, until))
        except Exception as exc:  # noqa: BLE001 - S3 / KMS outage: retry, never skip
            from pipeline.stage import root_cause

            p.attempts += 1
            delay = min(30.0, 0.5 * 2 ** (p.attempts - 1))
            p.next_try = self.clock() + delay
            self.metrics.errors.labels(kind="store").inc()
            logger.error("raw store failed camera=%s chunk_seq=%s attempt=%d retry_in=%.1fs error=%s",
                         p.meta.get("camera_id"), p.meta.get("chunk_seq"), p.attempts, delay, root_cause(exc)[:300])
            self.pending.append(p)
            self.k.pause_all()
            return
        self.stored_keys.append(key)
        self.metrics.chunks_out.labels(camera="all").inc()
        self._done(p.src, "stored")

    def _retry(self) -> None:
        now = self.clock()
        for p in list(self.pending):
            if p.next_try <= now:
                self.pending.remove(p)
                self._store(p)
        consumer = self.k.consumer
        if consumer is None:
            return
        if self.pending:
            self.k.pause_all()
        elif consumer.paused:
            consumer.resume(sorted(consumer.paused))

    def _on_revoke(self, tps: list[tuple[str, int]]) -> None:
        lost = set(tps)
        self.pending = [p for p in self.pending if p.src.tp not in lost]
        self.k.revoke(tps)


def raw_store(config: Any) -> Any:
    """The raw bucket's store: always under object lock (raw footage is never overwritten
    or deleted before its policy's raw_days)."""
    from pipeline.sink.objectstore import MinioSegmentStore

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
