"""Bounded in-flight chunks per camera and per worker: the "may I produce more?" decision.

A chunk is in flight from the moment it is handed to the producer until the broker acks
(or refuses) it. Kafka is the buffer; the worker's memory is not: when a camera already has
``per_camera`` chunks in flight, or the worker has ``total``, a live camera's next chunk is
dropped (and counted by the caller) while a file read faster than real time waits.

Pure bookkeeping (a lock and a condition): no Kafka in here, unit-tested on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def may_admit(camera_inflight: int, total_inflight: int, per_camera: int, total: int) -> bool:
    """Whether one more chunk of a camera may be produced now."""
    return camera_inflight < per_camera and total_inflight < total


class InflightLimiter:
    """Counts unacknowledged chunks per camera and in total; thread-safe.

    ``try_acquire`` never waits (live cameras); ``acquire`` waits until a slot frees or
    ``cancelled()`` turns true (files read faster than real time). Every successful
    acquire must be paired with one ``release`` (the producer's delivery callback).
    """

    def __init__(self, per_camera: int, total: int) -> None:
        if per_camera < 1 or total < 1:
            raise ValueError(f"in-flight bounds must be >= 1, got per_camera={per_camera} total={total}")
        self.per_camera = per_camera
        self.total = total
        self._cv = threading.Condition()
        self._by_camera: dict[str, int] = {}
        self._total = 0

    def resize(self, total: int) -> None:
        """A new worker-wide bound (the worker keeps it at least its camera count)."""
        if total < 1:
            raise ValueError(f"in-flight bound must be >= 1, got total={total}")
        with self._cv:
            self.total = total
            self._cv.notify_all()

    def _admit_locked(self, camera_id: str) -> bool:
        n = self._by_camera.get(camera_id, 0)
        if not may_admit(n, self._total, self.per_camera, self.total):
            return False
        self._by_camera[camera_id] = n + 1
        self._total += 1
        return True

    def try_acquire(self, camera_id: str) -> bool:
        with self._cv:
            return self._admit_locked(camera_id)

    def acquire(self, camera_id: str, cancelled: Callable[[], bool], timeout_s: float | None = None,
                poll_s: float = 0.1) -> bool:
        """Wait for a slot. Returns False when cancelled or timed out (nothing acquired)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cv:
            while True:
                if cancelled():
                    return False
                if self._admit_locked(camera_id):
                    return True
                wait = poll_s
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    wait = min(wait, left)
                # cancellation is a plain Event elsewhere: poll it at a bounded interval
                self._cv.wait(wait)

    def release(self, camera_id: str) -> None:
        with self._cv:
            n = self._by_camera.get(camera_id, 0)
            if n <= 0:
                raise RuntimeError(f"release without acquire camera={camera_id}")
            if n == 1:
                del self._by_camera[camera_id]
            else:
                self._by_camera[camera_id] = n - 1
            self._total -= 1
            self._cv.notify_all()

    def inflight(self, camera_id: str | None = None) -> int:
        with self._cv:
            return self._total if camera_id is None else self._by_camera.get(camera_id, 0)
