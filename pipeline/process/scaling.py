"""How many consumer actors the process job runs: lag-driven, with hysteresis and cooldowns.

In job mode (``ray.consumers`` >= 1) capacity is consumers x (their chunk and detector actors).
The job's supervisor (:func:`pipeline.process.consumers.supervise`) reads the raw topic's
consumer lag every ``ray.autoscale.check_interval_s`` (:class:`GroupLagProbe`: the group's
committed offsets against the high watermarks, what KEDA's Kafka scaler reads) and asks
:func:`desired_consumers` for a count. It starts one more consumer actor (the group rebalances;
the Ray autoscaler adds worker pods for its placement groups) or stops one (its loop drains,
flushes and commits, then leaves the group), one step at a time.

The decision is pure: no clock, no I/O; ``now`` comes in, and the hysteresis memory lives in a
:class:`ScaleState` the caller keeps (the function's only effect is on it).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

DOWN_FRACTION = 0.5
"""Scale down only when the lag is below this share of what one consumer fewer would carry, so
a lag between the up and down thresholds changes nothing (no flapping around one threshold)."""


@dataclass(frozen=True)
class ScalePolicy:
    """Bounds and windows (``ray.autoscale``, with null bounds resolved to ``ray.consumers``)."""

    min_consumers: int
    max_consumers: int
    lag_per_consumer: int
    up_after_s: float
    down_after_s: float

    @classmethod
    def of(cls, ray_cfg: Any) -> ScalePolicy:
        a = ray_cfg.autoscale
        lo, hi = a.bounds(ray_cfg.consumers)
        return cls(lo, hi, a.lag_chunks_per_consumer, a.scale_up_after_s, a.scale_down_after_s)

    @property
    def fixed(self) -> bool:
        """min == max: nothing to decide (today's fixed ``ray.consumers``)."""
        return self.min_consumers == self.max_consumers


@dataclass
class ScaleState:
    """What :func:`desired_consumers` remembers between calls.

    Attributes:
        policy: bounds and windows.
        partitions: the raw topic's partition count when known: a consumer beyond it would own
            nothing, so it caps the count.
        high_since: monotonic seconds since the lag has stayed above the scale-up threshold.
        low_since: the same for the scale-down threshold.
        changed_at: when the count last changed (windows restart there: a cooldown).
    """

    policy: ScalePolicy
    partitions: int | None = None
    high_since: float | None = None
    low_since: float | None = None
    changed_at: float | None = None


def ceiling(state: ScaleState) -> int:
    """The most consumers allowed now: ``max_consumers``, or the partitions if fewer (never
    below ``min_consumers``: the minimum is what the operator asked for)."""
    hi = state.policy.max_consumers
    if state.partitions is not None:
        hi = min(hi, state.partitions)
    return max(state.policy.min_consumers, hi)


def desired_consumers(current: int, lag: int | None, now: float, state: ScaleState) -> tuple[int, str]:
    """The consumer count to run next, and why (one line for the log).

    One step at a time. Up by one when ``lag`` has stayed above ``current x lag_per_consumer``
    for ``up_after_s``; down by one when it has stayed below half of ``(current - 1) x
    lag_per_consumer`` for the longer ``down_after_s``. Each window starts when its condition
    first holds and again at every change (so a change is also a cooldown), and restarts
    whenever the condition breaks. Outside ``[min_consumers, ceiling]`` the count is brought
    back at once. An unknown lag (the probe failed) holds the count and restarts the windows.

    Args:
        current: consumer actors running now (stopping ones not counted).
        lag: chunks not yet committed on the raw topic, summed over partitions; None = unknown.
        now: monotonic seconds.
        state: updated in place (windows, last change).

    Returns:
        (count, reason).
    """
    p = state.policy
    lo, hi = p.min_consumers, ceiling(state)
    if current < lo or current > hi:
        n = min(max(current, lo), hi)
        state.high_since = state.low_since = None
        state.changed_at = now
        cap = (f"the raw topic's {state.partitions} partitions"
               if state.partitions is not None and hi < p.max_consumers else f"max_consumers {p.max_consumers}")
        return n, (f"bounds: {current} outside [min_consumers {lo}, {cap}]")
    if lag is None:
        state.high_since = state.low_since = None
        return current, "hold: lag unknown"
    since_change = math.inf if state.changed_at is None else now - state.changed_at  # windows restart there
    up_at = current * p.lag_per_consumer
    down_at = (current - 1) * p.lag_per_consumer * DOWN_FRACTION
    if lag > up_at:
        state.low_since = None
        if state.high_since is None:
            state.high_since = now
        if current >= hi:
            return current, f"hold: lag {lag} > {up_at} but at the ceiling ({hi})"
        held = min(now - state.high_since, since_change)
        if held >= p.up_after_s:
            state.changed_at = now
            return current + 1, f"up: lag {lag} > {current} x {p.lag_per_consumer} for {held:.0f} s"
        return current, f"hold: lag {lag} > {up_at} for {held:.0f} of {p.up_after_s:g} s"
    state.high_since = None
    if current > lo and lag < down_at:
        if state.low_since is None:
            state.low_since = now
        held = min(now - state.low_since, since_change)
        if held >= p.down_after_s:
            state.changed_at = now
            return current - 1, f"down: lag {lag} < {down_at:g} for {held:.0f} s"
        return current, f"hold: lag {lag} < {down_at:g} for {held:.0f} of {p.down_after_s:g} s"
    state.low_since = None
    return current, f"hold: lag {lag} within [{down_at:g}, {up_at}]"


class GroupLagProbe:
    """The raw topic's lag for the process group, as KEDA's Kafka scaler reads it: per partition
    the high watermark minus the committed offset (the low watermark when nothing is committed),
    never negative (a broker may under-report the high watermark). Reads only: the consumer
    never subscribes, so it does not join the group nor disturb its assignment."""

    def __init__(self, kafka_cfg: Any, group: str, topic: str, timeout_s: float = 5.0) -> None:
        self.kafka_cfg, self.group, self.topic, self.timeout_s = kafka_cfg, group, topic, timeout_s
        self._consumer: Any = None

    def read(self) -> tuple[int | None, int | None]:
        """(lag in chunks, partitions); (None, None) when the broker did not answer."""
        from confluent_kafka import TopicPartition

        from pipeline.kafka import plain_consumer

        try:
            if self._consumer is None:
                self._consumer = plain_consumer(self.kafka_cfg, self.group)
            c = self._consumer
            md = c.list_topics(self.topic, timeout=self.timeout_s)
            meta = md.topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                return None, None
            parts = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)]
            lag = 0
            for tp in c.committed(parts, timeout=self.timeout_s):
                lo, hi = c.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)
                lag += max(0, hi - (tp.offset if tp.offset >= 0 else lo))
            return lag, len(parts)
        except Exception as exc:  # noqa: BLE001 - a broker hiccup holds the count, it never fails the job
            logger.warning("consumer lag unavailable group=%s topic=%s: %s", self.group, self.topic,
                           str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            self.close()
            return None, None

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            except Exception:  # noqa: BLE001
                pass
            self._consumer = None
