"""The camera registry on the compacted cameras topic: pure bookkeeping + publishing."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from schemas.config import CameraConfig

logger = logging.getLogger(__name__)


class CameraRegistry:
    """Latest camera record per (partition, camera id) for the partitions this worker owns.

    ``update`` applies a registry message; ``revoke`` forgets partitions handed to another
    worker; ``owned()`` is the set of enabled cameras to run. Pure: no Kafka in here.
    """

    def __init__(self) -> None:
        self._records: dict[int, dict[str, CameraConfig]] = {}

    def assign(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._records.setdefault(p, {})

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._records.pop(p, None)

    def update(self, partition: int, camera_id: str, cam: CameraConfig | None) -> None:
        """Apply one record: ``cam`` is ``None`` for a tombstone (camera removed)."""
        recs = self._records.get(partition)
        if recs is None:
            return  # a late message of a partition we no longer own
        if cam is None:
            recs.pop(camera_id, None)
        else:
            recs[camera_id] = cam

    @property
    def partitions(self) -> list[int]:
        return sorted(self._records)

    def owned(self) -> dict[str, CameraConfig]:
        return {cid: cam for recs in self._records.values() for cid, cam in recs.items() if cam.enabled}


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Delay before reconnect ``attempt`` (1-based): doubling from ``initial_s``, capped."""
    if attempt < 1:
        return 0.0
    return float(min(max_s, initial_s * (2 ** (attempt - 1))))


def publish_cameras(cfg: Any, cameras: Iterable[CameraConfig], remove: Iterable[str] = ()) -> int:
    """Write camera records (and tombstones for ``remove``) to the registry topic and wait
    for the broker's ack. Returns how many records were written."""
    from pipeline.kafka import ChunkProducer
    from schemas.messages import encode_camera

    producer = ChunkProducer(cfg.kafka.bootstrap_servers, message_max_bytes=cfg.kafka.message_max_bytes,
                             client_id="veil-cameras")
    topic = cfg.kafka.topics.cameras
    n = 0
    for cam in cameras:
        key, value, headers = encode_camera(cam)
        producer.produce_sync(topic, value, key, headers)
        n += 1
    for cid in remove:
        producer.produce_sync(topic, None, cid, [])  # type: ignore[arg-type]
        n += 1
    producer.flush(30.0)
    logger.info("published camera records=%d topic=%s", n, topic)
    return n
