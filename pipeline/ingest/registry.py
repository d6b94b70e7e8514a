"""The camera registry on the compacted cameras topic: pure bookkeeping, backoff, publishing.

A registry record is keyed by camera id (so Kafka's default partitioner puts a camera on
partition ``murmur2(id) % partitions``) with a ``camera.schema.json`` JSON value; a
tombstone (``None`` value) removes the camera, ``enabled: false`` parks it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.kafka import client_settings
from schemas.config import CameraConfig
from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)


class RegistryUnavailableError(VeilStreamError):
    """The camera registry cannot be read: its broker did not answer (one line naming it)."""


class _DebugLog:
    """librdkafka's log callback (``logger`` setting) at DEBUG: a reader that cannot reach the
    broker says so once, in :class:`RegistryUnavailableError`, instead of one stderr line
    per reconnect attempt."""

    def log(self, level: int, fmt: str, *args: Any) -> None:
        logger.debug("librdkafka level=%d: %s", level, fmt % args if args else fmt)


RegistryRecord = tuple[int, str, CameraConfig | None]
"""``(partition, camera_id, record)``; ``record`` is ``None`` for a tombstone."""


class CameraRegistry:
    """Latest camera record per (partition, camera id) for the partitions this worker owns.

    ``assign``/``revoke`` follow the consumer group; ``update`` applies one registry
    message in offset order (the latest record per camera wins); ``owned()`` is the set of
    enabled cameras this worker must run. Pure: no Kafka in here.
    """

    def __init__(self) -> None:
        self._records: dict[int, dict[str, CameraConfig]] = {}

    def assign(self, partitions: Iterable[int]) -> None:
        """Take partitions; their records are (re)read from the beginning by the caller."""
        for p in partitions:
            self._records[p] = {}

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._records.pop(p, None)

    def update(self, partition: int, camera_id: str, cam: CameraConfig | None) -> None:
        """Apply one record: ``cam`` is ``None`` for a tombstone (camera removed)."""
        recs = self._records.get(partition)
        if recs is None:
            return  # a late message of a partition this worker no longer owns
        if cam is None:
            recs.pop(camera_id, None)
        elif cam.camera_id != camera_id:
            # the key decides the partition, hence the owner: a value naming another camera
            # would let two workers run one camera, so the record is ignored
            logger.warning("camera record ignored: key=%s names camera=%s", camera_id, cam.camera_id)
        else:
            recs[camera_id] = cam

    @property
    def partitions(self) -> list[int]:
        return sorted(self._records)

    def owned(self) -> dict[str, CameraConfig]:
        return {cid: cam for recs in self._records.values() for cid, cam in recs.items() if cam.enabled}


def owned_cameras(partitions: Iterable[int], records: Iterable[RegistryRecord]) -> dict[str, CameraConfig]:
    """The cameras a worker assigned ``partitions`` runs, given registry ``records`` in
    offset order: latest record per camera wins; tombstones and disabled cameras are out."""
    reg = CameraRegistry()
    reg.assign(partitions)
    for partition, camera_id, cam in records:
        reg.update(partition, camera_id, cam)
    return reg.owned()


def backoff_s(attempt: int, initial_s: float, max_s: float, jitter: float = 0.0,
              rand: Callable[[], float] = random.random) -> float:
    """Delay before reconnect ``attempt`` (1-based): ``initial_s * 2**(attempt-1)``, capped at
    ``max_s``, then shortened by up to ``jitter`` (a fraction) so that thousands of cameras
    behind one failed switch do not all reconnect in the same instant."""
    if attempt < 1:
        return 0.0
    base = float(min(max_s, initial_s * (2.0 ** min(attempt - 1, 62))))
    if jitter <= 0:
        return base
    return base * (1.0 - min(jitter, 1.0) * rand())


def publish_cameras(cfg: Any, cameras: Iterable[CameraConfig], remove: Iterable[str] = (),
                    timeout_s: float = 30.0) -> int:
    """Write camera records (and tombstones for the ids in ``remove``) to the registry topic
    ``cfg.kafka.topics.cameras`` and wait for the broker's acks.

    Idempotent: publishing the same record twice changes nothing for the workers.

    Returns:
        How many records were written.

    Raises:
        KafkaDeliveryError: a record was not acknowledged within ``timeout_s``.
    """
    from pipeline.kafka import Delivery, KafkaDeliveryError
    from pipeline.stage import producer_for
    from schemas.messages import encode_camera

    k = cfg.kafka
    topic = k.topics.cameras
    removed = list(remove)
    producer = producer_for(k, "veil-cameras")
    deliveries: list[tuple[str, Delivery]] = []
    for cam in cameras:
        key, value, headers = encode_camera(cam)
        deliveries.append((cam.camera_id, producer.produce(topic, value, key, headers)))
    for cid in removed:
        # a tombstone: the key with no value (compaction then drops the camera for good)
        deliveries.append((cid, producer.produce(topic, None, cid.encode("utf-8"), [])))  # type: ignore[arg-type]
    left = producer.flush(timeout_s)
    failed = [f"{cid}: {d.error or 'no ack'}" for cid, d in deliveries if d.error or not d.done]
    if left or failed:
        raise KafkaDeliveryError(f"camera registry topic={topic}: {len(failed)} record(s) not written: "
                                 + "; ".join(failed[:5]))
    logger.info("published camera records=%d removed=%d topic=%s", len(deliveries) - len(removed),
                len(removed), topic)
    return len(deliveries)


QUIET_S = 1.0


def read_registry(cfg: Any, timeout_s: float = 10.0) -> dict[str, CameraConfig]:
    """The registry as ingest workers see it: the latest record per camera id on the
    compacted cameras topic (tombstones remove), read from the beginning by assignment
    (no consumer group, nothing committed)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    from schemas.messages import SchemaError, decode_camera

    k = cfg.kafka
    c = Consumer({**client_settings(k), "group.id": "veil-cameras-reader", "enable.auto.commit": False,
                  "logger": _DebugLog()})
    try:
        try:
            md = c.list_topics(k.topics.cameras, timeout=timeout_s)
            meta = md.topics.get(k.topics.cameras)
            if meta is None or meta.error is not None:
                return {}
            parts = [TopicPartition(k.topics.cameras, p) for p in meta.partitions]
            ends = {}
            for tp in parts:
                _lo, hi = c.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
                ends[tp.partition] = hi
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            reason = str(err.str() if hasattr(err, "str") else err).splitlines()[0][:200]
            raise RegistryUnavailableError(
                f"cannot read the camera registry (topic {k.topics.cameras}): Kafka broker {k.bootstrap_servers} "
                f"did not answer within {timeout_s:g}s ({reason}); is it running and reachable "
                "(kafka.bootstrap_servers)?") from None
        c.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in parts])
        latest: dict[str, CameraConfig | None] = {}
        done = {p for p, hi in ends.items() if hi <= 0}
        deadline = time.monotonic() + timeout_s
        # the local broker's high watermark can under-report (it counts batches), so reaching
        # it proves nothing: keep reading until the partitions stay quiet for a moment
        quiet_until = None
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                if len(done) == len(parts):
                    quiet_until = quiet_until or time.monotonic() + QUIET_S
                    if time.monotonic() >= quiet_until:
                        break
                continue
            quiet_until = None
            cid = (m.key() or b"").decode("utf-8", "replace")
            try:
                latest[cid] = decode_camera(m.value())
            except SchemaError as exc:
                logger.warning("bad camera record key=%s offset=%d error=%s", cid, m.offset(), exc)
            part, off = int(m.partition() or 0), int(m.offset() or 0)
            if off + 1 >= ends[part]:
                done.add(part)
        return {cid: cam for cid, cam in sorted(latest.items()) if cam is not None}
    finally:
        c.close()
