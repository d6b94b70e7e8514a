"""Commit-after-durable offset bookkeeping (pure; no Kafka import).

Messages of one partition complete out of order (Ray returns in completion order), but a
Kafka commit says "everything below this offset is done". ``OffsetTracker`` commits, per
partition, only up to the lowest offset still in flight, so a crash never skips work.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

TopicPart = tuple[str, int]


@dataclass
class _PartState:
    inflight: set[int] = field(default_factory=set)
    done_heap: list[int] = field(default_factory=list)
    next_commit: int | None = None  # offset the next commit will carry (last done + 1)
    committed: int | None = None


class OffsetTracker:
    """Tracks in-flight offsets per (topic, partition)."""

    def __init__(self) -> None:
        self._parts: dict[TopicPart, _PartState] = {}

    def started(self, tp: TopicPart, offset: int) -> None:
        self._parts.setdefault(tp, _PartState()).inflight.add(offset)

    def finished(self, tp: TopicPart, offset: int) -> None:
        st = self._parts.get(tp)
        if st is None or offset not in st.inflight:
            return  # partition was revoked meanwhile: its new owner redoes the work
        st.inflight.discard(offset)
        heapq.heappush(st.done_heap, offset)
        low = min(st.inflight) if st.inflight else None
        while st.done_heap and (low is None or st.done_heap[0] < low):
            st.next_commit = heapq.heappop(st.done_heap) + 1

    def inflight(self, tp: TopicPart | None = None) -> int:
        if tp is not None:
            st = self._parts.get(tp)
            return len(st.inflight) if st else 0
        return sum(len(s.inflight) for s in self._parts.values())

    def committable(self) -> dict[TopicPart, int]:
        """Offsets to commit now: per partition, one past the highest offset below which
        everything started is finished; only partitions that moved since the last commit."""
        return {
            tp: st.next_commit
            for tp, st in self._parts.items()
            if st.next_commit is not None and st.next_commit != st.committed
        }

    def mark_committed(self, offsets: dict[TopicPart, int]) -> None:
        for tp, off in offsets.items():
            st = self._parts.get(tp)
            if st is not None:
                st.committed = off

    def revoke(self, tps: list[TopicPart]) -> int:
        """Forget partitions this worker lost; returns how many in-flight items are abandoned."""
        n = 0
        for tp in tps:
            st = self._parts.pop(tp, None)
            if st is not None:
                n += len(st.inflight)
        return n

    def partitions(self) -> list[TopicPart]:
        return list(self._parts)


def may_submit(inflight_total: int, inflight_partition: int, max_total: int, max_per_partition: int) -> bool:
    """Backpressure predicate: may one more chunk of this partition be submitted?"""
    return inflight_total < max_total and inflight_partition < max_per_partition


def should_pause(inflight_partition: int, max_per_partition: int) -> bool:
    return inflight_partition >= max_per_partition
