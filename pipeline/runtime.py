"""The stage runtime: one loop that every Kafka stage (raw sink, process, sink; ingest's
registry reader) runs on. A stage supplies a :class:`StageHandler`; the runtime owns the rest.

    poll ──► Record ──► handler.handle(record) ──► outcome
                                                  ├─ Emit(value)      produce it; offset finished on the ack
                                                  ├─ Emit()           the handler's durable write is done: finished
                                                  ├─ DeadLetter(...)  the runtime writes the DLQ record; finished on its ack
                                                  ├─ Retry(after_s)   an outage: pause, back off, handle it again
                                                  └─ Hold             not finished yet (in flight on Ray, in an open
                                                                      segment): reported later by handler.completions()
    ──► commit what the OffsetTracker allows (everything below the lowest offset in flight)

What the runtime owns, once for every stage:

* **Poll and flow control**: at most ``max_inflight`` records in flight, per partition at most
  ``max_inflight_per_partition``: what arrives for a partition at its bound waits in a local
  queue (``parked``, in order, counted in ``max_inflight``, so it is bounded) and is handled as
  the partition's records finish. The partition is not paused for that: librdkafka's pause
  throws away what it prefetched for the partition and its resume fetches all of it again
  (on the local stack each resume re-read the partition's backlog from the broker's S3
  storage). Polling stops while ``max_inflight`` is reached (librdkafka's own prefetch bound,
  ``queued.max.messages.kbytes``, holds the rest: Kafka is the buffer). Every assigned
  partition is paused while a record waits for a retry (``pause_on_retry``).
* **Backoff**: :func:`backoff_s` for every retry; the handler sees ``record.attempt``.
* **Commit after durable**: an offset is finished only by an acked ``Emit``, a done ``Emit()``
  or an acked ``DeadLetter``; ``Hold`` and ``Retry`` keep it (and every offset above it) uncommitted.
* **Revoke**: flush the producer (acks still count), commit, forget the partitions' in-flight
  offsets and retries, then ``handler.revoke`` (their new owner redoes the work).
* **Drain and shutdown**: stop consuming (pause), ``handler.drain()`` (close what is open),
  wait for held and retried records within ``drain_timeout_s``, flush, commit, close.
  SIGTERM reaches the loop through :func:`pipeline.stage.stop_on_signals` (the stop event).
* **The DLQ**: handlers return ``DeadLetter``; only the runtime calls
  :meth:`pipeline.stage.StageKafka.to_dlq`.
* **Produce failures are outages**: a produce refused (a fatal producer being replaced, a local
  queue that stayed full) or a failed delivery report keeps the offset in flight and produces the
  same ``Emit`` / ``DeadLetter`` again after a backoff (like a ``Retry``, without handling the
  record again); the stage's :class:`pipeline.kafka.RenewingProducer` replaces an instance that
  had a fatal error. Never dead-lettered, never committed before the ack.

Errors are data (bytewax's ok/err streams): a handler that raises on a record fails the
stage (a bug, not an input problem); input problems are ``DeadLetter`` outcomes, outages ``Retry``.

The handler is stage-wide with partition hooks (``assign``/``revoke``) rather than one object
per partition (bytewax's ``build_part``): the sink assembles segments per camera, and a
camera's chunks may sit on any partition its key hashed to before a repartition.

:class:`TestingSource` and :class:`TestingSink` (like bytewax's) stand in for the consumer
and the producer, so a whole stage runs in a unit test from a list in to a list out
(:func:`run_until_idle`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.kafka import KafkaDeliveryError
from pipeline.offsets import should_pause
from pipeline.stage import Source, StageKafka, TopicPart

logger = logging.getLogger(__name__)

Headers = Sequence[tuple[str, Any]]


# ---------------------------------------------------------------- records and outcomes
@dataclass(frozen=True)
class Record:
    """One consumed message as data (the runtime's unit of work and of commit)."""

    src: Source
    key: bytes | None
    value: bytes = field(repr=False)
    headers: tuple[tuple[str, Any], ...] = ()
    attempt: int = 0
    """How many times this record was handled before (0 the first time; +1 per ``Retry``)."""
    tombstone: bool = False
    """The message's value was null (``value`` is then ``b""``): a compacted topic's delete."""

    @property
    def tp(self) -> TopicPart:
        return self.src.tp

    @staticmethod
    def of(msg: Any) -> Record:
        value = msg.value()
        return Record(Source.of(msg), msg.key(), value or b"", tuple(msg.headers() or ()), tombstone=value is None)

    def again(self) -> Record:
        return Record(self.src, self.key, self.value, self.headers, self.attempt + 1, self.tombstone)


@dataclass(frozen=True)
class Emit:
    """The record is done. With a ``value``: produce it (to ``topic``, the stage's output topic by
    default) and finish the offset once the broker acks it. Without: the handler's own durable
    write is done (an object stored, a chunk counted), finish the offset now. ``on_acked`` runs
    once the offset is finished (the handler's counters)."""

    value: bytes | None = field(default=None, repr=False)
    key: str | bytes | None = None
    headers: Headers = ()
    topic: str | None = None
    on_acked: Callable[[], None] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class DeadLetter:
    """The record can never succeed: the runtime writes a DLQ record with ``reason`` and
    ``error`` and finishes the offset once it is acked. ``payload`` replaces the consumed
    message's (key, value, headers) in the DLQ record (the sink dead-letters a chunk of a
    segment, re-encoded from its spool)."""

    reason: str
    error: str
    payload: tuple[Any, bytes, Headers] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Retry:
    """An outage (object store, KMS, Ray): never dead-lettered. The runtime pauses the stage's
    partitions (``pause_on_retry``), waits ``after_s`` (:func:`backoff_s` of the attempt by
    default) and hands the record to ``handler.handle`` again with ``attempt`` + 1."""

    after_s: float | None = None
    why: str = ""


@dataclass(frozen=True)
class Hold:
    """Not finished yet (in flight on Ray, part of an open segment): ``handler.completions``
    reports the record's outcome later. Its offset stays uncommitted meanwhile."""


HOLD = Hold()
Outcome = Emit | DeadLetter | Retry | Hold
Completion = tuple[Record, Outcome]


def backoff_s(attempt: int, cap_s: float = 30.0, base_s: float = 0.5) -> float:
    """Seconds before the ``attempt``-th retry (1-based): doubling from ``base_s``, at most ``cap_s``."""
    return float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))


class StageHandler(Protocol):
    """What a stage supplies. Every method runs in the runtime's thread."""

    def handle(self, rec: Record) -> Outcome:
        """Work on one record (again after a ``Retry``): return its outcome now, or ``HOLD``."""
        ...

    def completions(self, timeout_s: float) -> Iterable[Completion]:
        """Outcomes of held records that are known now (waiting at most ``timeout_s``)."""
        ...

    def busy(self) -> bool:
        """Records are held (the drain waits for them; the poll does not block long)."""
        ...

    def assign(self, tps: list[TopicPart]) -> None:
        """Partitions were assigned to this member."""
        ...

    def revoke(self, tps: list[TopicPart]) -> None:
        """Partitions are gone: forget their held records (the runtime already forgot their
        offsets; their new owner redoes them)."""
        ...

    def drain(self) -> Iterable[Completion]:
        """Stopping: finish what only waits for more input (close open segments)."""
        ...

    def status(self) -> dict[str, Any] | None:
        """Fields of the periodic status line (None: the handler logs its own)."""
        ...

    def ready(self) -> bool:
        """The stage consumes (``/readyz``): True once the loop runs, unless the handler knows better."""
        ...

    def summary(self) -> dict[str, Any]:
        """Fields of the line logged when the stage stopped."""
        ...

    def close(self) -> None:
        """The loop ended (after the drain, or on an error): release resources."""
        ...


class BaseHandler:
    """Defaults for a handler that finishes every record in ``handle`` (no ``Hold``)."""

    def handle(self, rec: Record) -> Outcome:
        raise NotImplementedError

    def completions(self, timeout_s: float) -> Iterable[Completion]:
        return ()

    def busy(self) -> bool:
        return False

    def assign(self, tps: list[TopicPart]) -> None:
        return None

    def revoke(self, tps: list[TopicPart]) -> None:
        return None

    def drain(self) -> Iterable[Completion]:
        return ()

    def status(self) -> dict[str, Any] | None:
        return {}

    def ready(self) -> bool:
        return True

    def summary(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class RuntimeSettings:
    """How one stage runs on the runtime.

    Args:
        group: the consumer group; ``topics``: what it reads; ``output_topic``: where ``Emit`` goes.
        poll_max / poll_s / busy_poll_s: messages and seconds per poll (``busy_poll_s`` while
            records are held, so completions are not delayed by an idle poll).
        max_inflight / max_inflight_per_partition: bounded work (None: unbounded); records of a
            partition at its bound wait in the runtime's ``parked`` queue (module docstring).
        pause_on_retry: pause every assigned partition while a record waits for a retry.
        backoff_cap_s: the longest backoff between two attempts.
        drain_timeout_s: how long the shutdown waits for held and retried records.
        consumer_extra: librdkafka settings of this stage's consumer (assignment strategy).
        track_offsets: False for a reader that commits nothing (ingest's camera registry: a
            compacted topic read whole on every assignment); its records count as no chunks.
        produces: False for a stage that never produces (no producer is made for it).
        report_inflight: set the stage's ``inflight`` gauge to the offsets in flight (the sink
            reports its open segments there instead).
    """

    group: str
    topics: tuple[str, ...]
    output_topic: str | None = None
    poll_max: int = 32
    poll_s: float = 0.2
    busy_poll_s: float = 0.2
    max_inflight: int | None = None
    max_inflight_per_partition: int | None = None
    pause_on_retry: bool = True
    backoff_cap_s: float = 30.0
    drain_timeout_s: float = 30.0
    consumer_extra: tuple[tuple[str, Any], ...] = ()
    track_offsets: bool = True
    produces: bool = True
    report_inflight: bool = True


@dataclass
class _Waiting:
    rec: Record
    due: float
    produce: Emit | DeadLetter | None = None
    """Set: produce this outcome again (its produce failed), instead of handling ``rec`` again."""


class StageRuntime:
    """Runs one :class:`StageHandler` on one :class:`StageKafka` (module docstring).

    Args:
        kafka: the stage's consumer, producer, offsets, DLQ and metrics (``consumer`` and
            ``producer`` set already, e.g. to a :class:`TestingSource` / :class:`TestingSink`,
            or connected by :meth:`run`).
        handler: the stage's work.
        settings: see :class:`RuntimeSettings`.
        stop_event: set it to stop (SIGTERM does, via ``stop_on_signals``).
        clock: monotonic seconds (backoff, idle exit); injectable for tests.
    """

    def __init__(self, kafka: StageKafka, handler: StageHandler, settings: RuntimeSettings, *,
                 stop_event: threading.Event | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.kafka = kafka
        self.handler = handler
        self.s = settings
        self.stop_event = stop_event or threading.Event()
        self.clock = clock
        self.metrics = kafka.metrics
        self.waiting: list[_Waiting] = []
        self.parked: dict[TopicPart, deque[Any]] = {}
        """Consumed messages of a partition at ``max_inflight_per_partition``, in offset order,
        not handled (not started) yet: handled as the partition's records finish."""
        self.stopping = False
        self.last_message = clock()

    # ---------------------------------------------------------------- wiring
    def connect(self) -> None:
        """Create the clients the stage does not have yet (tests set fakes instead)."""
        if self.kafka.consumer is None:
            self.kafka.connect(self.s.group, list(self.s.topics), on_revoke=self.on_revoke,
                               on_assign=self.handler.assign, extra=dict(self.s.consumer_extra))
        elif self.kafka.producer is None and self.s.produces:
            from pipeline.stage import producer_for

            k = self.kafka
            k.producer = k.renewing_producer(lambda: producer_for(k.cfg.kafka, f"veil-{k.name}"))

    # ---------------------------------------------------------------- loop
    def run(self, exit_when_idle_s: float | None = None) -> int:
        """Consume until the stop event (or, with ``exit_when_idle_s``, until nothing arrived
        for that long and nothing is held or waiting); then drain, flush, commit; returns 0."""
        self.connect()
        self.metrics.ready = self.ready()
        try:
            while not self.stop_event.is_set():
                self.step()
                if self.idle_for(exit_when_idle_s):
                    break
            self.shutdown()
        finally:
            self.metrics.ready = False
            self.handler.close()
            self.kafka.consumer.close()
        return 0

    def ready(self) -> bool:
        """``/readyz``: the handler is ready and the consumer completed its group join (its first
        assignment, empty or not). A member that only subscribed is still in the rebalance its
        join started: a rolling update that took it for ready stopped the old pod in the middle
        of that rebalance (on tansu the group then never completed it). Consumers that do not
        say (test sources, the registry reader) count as joined."""
        return self.handler.ready() and bool(getattr(self.kafka.consumer, "joined", True))

    def idle_for(self, exit_when_idle_s: float | None) -> bool:
        if not self.kafka.consumer.assigned:
            self.last_message = self.clock()  # idle counts from the group join on
            return False
        return (exit_when_idle_s is not None and not self.handler.busy() and not self.waiting
                and not self.parked and self.clock() - self.last_message >= exit_when_idle_s)

    def parked_count(self) -> int:
        return sum(len(q) for q in self.parked.values())

    def step(self, poll_s: float | None = None) -> None:
        """One iteration: retries due, poll (within the bounds; ``poll_s`` overrides the
        settings' wait), handle, flow control, completions, commit, status."""
        k, consumer = self.kafka, self.kafka.consumer
        self.metrics.tick()
        self.retry_due()
        self.flow_control()
        self.unpark()
        free = self.s.poll_max if self.s.max_inflight is None else \
            min(self.s.poll_max, self.s.max_inflight - k.tracker.inflight() - self.parked_count())
        if free > 0:
            t0 = time.thread_time()
            wait = poll_s if poll_s is not None else self.s.busy_poll_s if self.handler.busy() else self.s.poll_s
            msgs = consumer.poll(wait, free)
            self.metrics.cpu_seconds.labels(step="kafka").inc(time.thread_time() - t0)
            for msg in msgs:
                self.admit(msg)
        self.flow_control()
        self.apply_all(self.handler.completions(0.02 if self.handler.busy() else 0.0))
        self.unpark()
        self.metrics.ready = self.ready()
        t0 = time.thread_time()
        if k.producer is not None:
            k.producer.poll(0)
        k.commit()
        self.metrics.cpu_seconds.labels(step="kafka").inc(time.thread_time() - t0)
        if self.s.track_offsets and self.s.report_inflight:
            self.metrics.inflight.set(k.tracker.inflight())
        if k.status.due():
            fields = self.handler.status()
            if fields is not None:  # None: the handler logged its own line
                k.log_status(**fields, retrying=len(self.waiting))

    def admit(self, msg: Any) -> None:
        """Handle a consumed message now, or park it behind its partition's earlier ones while
        that partition is at ``max_inflight_per_partition``."""
        limit = self.s.max_inflight_per_partition
        if limit is not None and self.s.track_offsets:
            tp = (str(msg.topic()), int(msg.partition()))
            queue = self.parked.get(tp)
            if queue or should_pause(self.kafka.tracker.inflight(tp), limit):
                self.parked.setdefault(tp, deque()).append(msg)
                return
        self.accept(msg)

    def unpark(self) -> None:
        """Handle parked messages, in order, of the partitions below their bound again."""
        limit = self.s.max_inflight_per_partition
        if not self.parked or limit is None or self.stopping:
            return
        for tp in list(self.parked):
            queue = self.parked[tp]
            while queue and not should_pause(self.kafka.tracker.inflight(tp), limit):
                self.accept(queue.popleft())
            if not queue:
                del self.parked[tp]

    def accept(self, msg: Any) -> None:
        rec = Record.of(msg)
        if self.s.track_offsets:
            self.kafka.started(rec.src)
        self.last_message = self.clock()
        self.apply(rec, self.handler.handle(rec))

    def retry_due(self) -> None:
        now = self.clock()
        due = [w for w in self.waiting if w.due <= now]
        blocked: set[TopicPart] = set()  # a partition whose first record to produce again is not due or failed
        for w in list(self.waiting):
            if w.produce is None:
                if w.due <= now:
                    self.waiting.remove(w)
                    self.apply(w.rec, self.handler.handle(w.rec))
                continue
            # records produced again go out in their partition's order: the first one in the list
            # goes first, the others wait behind it
            if w.rec.tp in blocked or w.due > now:
                blocked.add(w.rec.tp)
                continue
            at = self.waiting.index(w)
            self.waiting.remove(w)
            error = self._produce(w.rec, w.produce)
            if error is not None:  # refused at once: back at its place, with a longer backoff
                blocked.add(w.rec.tp)
                nxt = w.rec.again()
                self.waiting.insert(at, _Waiting(nxt, self.clock() + backoff_s(nxt.attempt, self.s.backoff_cap_s),
                                                 w.produce))
        if due:  # what the retries finished counts before the next poll (a revoke there commits it)
            self.apply_all(self.handler.completions(0.0))

    def flow_control(self) -> None:
        """Pause every partition while a record waits for a retry (``pause_on_retry``), resume
        them after. The per-partition bound parks records instead (:meth:`admit`): a pause
        would throw away librdkafka's prefetch, fetched again from the broker on resume."""
        consumer = self.kafka.consumer
        if self.stopping:
            return
        if self.waiting and self.s.pause_on_retry:
            self.kafka.pause_all()  # incl. partitions assigned since
            return
        if consumer.paused:
            consumer.resume(sorted(consumer.paused))

    # ---------------------------------------------------------------- outcomes
    def apply_all(self, done: Iterable[Completion]) -> None:
        for rec, outcome in done:
            self.apply(rec, outcome)

    def apply(self, rec: Record, outcome: Outcome) -> None:
        """Carry out one outcome (the only place that produces, dead-letters or retries)."""
        k = self.kafka
        if isinstance(outcome, Hold):
            return
        if isinstance(outcome, Retry):
            nxt = rec.again()
            delay = outcome.after_s if outcome.after_s is not None else backoff_s(nxt.attempt, self.s.backoff_cap_s)
            self.waiting.append(_Waiting(nxt, self.clock() + delay))
            if self.s.pause_on_retry:
                k.pause_all()
            return
        if isinstance(outcome, Emit) and outcome.value is None:
            k.finished(rec.src)
            if outcome.on_acked is not None:
                outcome.on_acked()
            return
        if any(w.produce is not None and w.rec.tp == rec.tp for w in self.waiting):
            # its partition has records to produce again: this one goes out after them, in order
            self.waiting.append(_Waiting(rec, self.clock(), outcome))
            return
        error = self._produce(rec, outcome)
        if error is not None:
            self.produce_again(rec, outcome, error)

    def _produce(self, rec: Record, outcome: Emit | DeadLetter) -> str | None:
        """Produce ``outcome`` (its ack finishes the offset, a failed report produces it again);
        returns why the producer refused it now, or None."""
        k = self.kafka
        try:
            if isinstance(outcome, DeadLetter):
                key, value, headers = outcome.payload or (rec.key, rec.value, rec.headers)
                k.to_dlq(rec.src, key, value, list(headers), outcome.reason, outcome.error,
                         on_failed=lambda err: self.produce_again(rec, outcome, err))
                return None
            topic = outcome.topic or self.s.output_topic
            if topic is None:
                raise ValueError(f"stage {k.name}: Emit with a value but no output topic")
            k.producer.produce(topic, outcome.value, outcome.key, list(outcome.headers),
                               on_done=self._acked(rec, outcome))
        except KafkaDeliveryError as exc:  # refused now (a fatal producer being replaced, a full queue)
            self.metrics.errors.labels(kind="produce").inc()
            return str(exc)
        return None

    def produce_again(self, rec: Record, outcome: Emit | DeadLetter, error: str) -> None:
        """``outcome``'s produce failed: not durable, so its offset stays in flight (uncommitted,
        and so is every offset above it); produce it again after a backoff. An outage, never
        dead-lettered; a rebalance that takes the partition forgets it (the new owner redoes it).
        Records of its partition handled meanwhile wait behind it (the partition's order); a
        failed delivery report of a record produced after it can still reorder the two."""
        consumer = self.kafka.consumer
        if consumer is not None and rec.tp not in consumer.assigned:
            logger.warning("produce failed stage=%s topic=%s partition=%d offset=%d error=%s: partition revoked, "
                           "its new owner redoes it", self.kafka.name, rec.src.topic, rec.src.partition,
                           rec.src.offset, error)
            return
        nxt = rec.again()
        delay = backoff_s(nxt.attempt, self.s.backoff_cap_s)
        logger.error("produce failed stage=%s topic=%s partition=%d offset=%d error=%s: producing it again in "
                     "%.1fs", self.kafka.name, rec.src.topic, rec.src.partition, rec.src.offset, error, delay)
        self.waiting.append(_Waiting(nxt, self.clock() + delay, outcome))
        if self.s.pause_on_retry:
            self.kafka.pause_all()

    def _acked(self, rec: Record, outcome: Emit) -> Callable[[Any], None]:
        def cb(d: Any) -> None:
            if d.error:
                self.metrics.errors.labels(kind="produce").inc()
                self.produce_again(rec, outcome, str(d.error))
                return
            self.kafka.finished(rec.src)
            if outcome.on_acked is not None:
                outcome.on_acked()
        return cb

    # ---------------------------------------------------------------- rebalance, shutdown
    def on_revoke(self, tps: list[TopicPart]) -> None:
        """Flush (acks still count), commit, forget the partitions' offsets and retries, and
        let the handler drop their held records."""
        abandoned = self.kafka.revoke(tps)
        gone = set(tps)
        self.waiting = [w for w in self.waiting if w.rec.tp not in gone]
        for tp in gone:  # never started, never committed: their new owner reads them
            self.parked.pop(tp, None)
        self.handler.revoke(tps)
        if abandoned:
            logger.info("stage=%s revoked partitions abandoned %d in-flight record(s) to their new owner",
                        self.kafka.name, abandoned)

    def shutdown(self) -> None:
        """Stop consuming, finish what is open and held (within ``drain_timeout_s``), flush, commit.
        Parked messages were never started: left unhandled and uncommitted, read again by the
        partition's next owner (like the unread rest of the partition)."""
        k = self.kafka
        self.stopping = True
        k.pause_all()
        self.apply_all(self.handler.drain())
        deadline = self.clock() + self.s.drain_timeout_s
        while (self.handler.busy() or self.waiting) and self.clock() < deadline:
            self.retry_due()
            self.apply_all(self.handler.completions(0.05))
            if k.producer is not None:
                k.producer.poll(0)
            if self.waiting and not self.handler.busy():
                time.sleep(max(0.0, min(0.2, min(w.due for w in self.waiting) - self.clock())))
        self.apply_all(self.handler.completions(0.0))
        if self.waiting or self.handler.busy():
            logger.error("stage=%s stopped with %d record(s) not durable: their offsets stay uncommitted",
                         k.name, k.tracker.inflight())
        if k.producer is not None:
            k.producer.flush(30.0)
        k.commit()
        if self.s.track_offsets:
            fields = " ".join(f"{key}={v}" for key, v in self.handler.summary().items())
            logger.info("%s stopped %s inflight_left=%d parked_left=%d", k.name, fields, k.tracker.inflight(),
                        self.parked_count())


# ---------------------------------------------------------------- testing
class TestingMessage:
    """A consumed message as confluent-kafka's ``Message`` answers (no error), for tests and
    :class:`TestingSource`."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes,
                 headers: list[tuple[str, Any]]) -> None:
        self._t, self._p, self._o, self._k, self._v, self._h = topic, partition, offset, key, value, headers

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes:
        return self._v

    def headers(self) -> list[tuple[str, Any]]:
        return self._h

    def error(self) -> None:
        return None


class TestingSource:
    """A consumer fed from a list (bytewax's ``TestingSource``): ``items`` are
    ``(key, value, headers)`` or ``(partition, key, value, headers)``; offsets count per
    partition from 0. Pause, resume, commits and :meth:`revoke` (a rebalance) behave like
    :class:`pipeline.kafka.ChunkConsumer`'s."""

    __test__ = False  # not a pytest class

    def __init__(self, items: Iterable[tuple[Any, ...]], topic: str = "in", partitions: int = 1) -> None:
        self.topic = topic
        self.msgs: list[TestingMessage] = []
        nxt: dict[int, int] = {}
        for it in items:
            p, key, value, headers = it if len(it) == 4 else (0, *it)
            self.msgs.append(TestingMessage(topic, int(p), nxt.get(int(p), 0), key, value, list(headers or [])))
            nxt[int(p)] = nxt.get(int(p), 0) + 1
        self.assigned: set[TopicPart] = {(topic, p) for p in range(partitions)} | {(topic, p) for p in nxt}
        self.paused: set[TopicPart] = set()
        self.commits: list[dict[TopicPart, int]] = []
        self.on_revoke: Callable[[list[TopicPart]], None] | None = None
        self.closed = False

    def poll(self, timeout_s: float, max_messages: int = 16) -> list[TestingMessage]:
        out = [m for m in self.msgs if (m.topic(), m.partition()) in self.assigned - self.paused][:max_messages]
        for m in out:
            self.msgs.remove(m)
        return out

    def commit(self, offsets: dict[TopicPart, int]) -> None:
        self.commits.append(dict(offsets))

    def committed(self) -> dict[TopicPart, int]:
        out: dict[TopicPart, int] = {}
        for c in self.commits:
            out.update(c)
        return out

    def pause(self, tps: list[TopicPart]) -> None:
        self.paused.update(tp for tp in tps if tp in self.assigned)

    def resume(self, tps: list[TopicPart]) -> None:
        self.paused.difference_update(tps)

    def revoke(self, tps: list[TopicPart]) -> None:
        """A rebalance takes ``tps``: the runtime's revoke runs, then they are gone (their
        unread messages too: the new owner reads them)."""
        if self.on_revoke is not None:
            self.on_revoke(tps)
        self.assigned.difference_update(tps)
        self.paused.difference_update(tps)
        self.msgs = [m for m in self.msgs if (m.topic(), m.partition()) not in set(tps)]

    def lag(self) -> dict[TopicPart, int]:
        return {}

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class Produced:
    topic: str
    key: Any
    value: bytes = field(repr=False)
    headers: list[tuple[str, Any]]


class TestingSink:
    """A producer into a list (bytewax's ``TestingSink``): ``out`` holds every record produced,
    in order. Acks at once, or (``auto_ack=False``) when the test calls :meth:`ack`
    (``error``: the broker refused it)."""

    __test__ = False

    def __init__(self, auto_ack: bool = True) -> None:
        self.out: list[Produced] = []
        self.auto_ack = auto_ack
        self.unacked: list[tuple[int, Callable[[Any], None] | None]] = []

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_done: Callable[[Any], None] | None = None,
                retries: int = 50) -> Any:
        from pipeline.kafka import Delivery

        self.out.append(Produced(topic, key, value, list(headers or [])))
        d = Delivery(done=self.auto_ack, partition=0, offset=len(self.out) - 1)
        if not self.auto_ack:
            self.unacked.append((len(self.out) - 1, on_done))
        elif on_done is not None:
            on_done(d)
        return d

    def ack(self, i: int = 0, error: str | None = None) -> None:
        from pipeline.kafka import Delivery

        idx, cb = self.unacked.pop(i)
        if cb is not None:
            cb(Delivery(done=True, error=error, partition=0, offset=idx))

    def on(self, topic: str) -> list[Produced]:
        return [p for p in self.out if p.topic == topic]

    def dlq_reasons(self, topic: str) -> list[str]:
        """The ``reason`` of every DLQ record on ``topic``, in order."""
        from schemas.messages import decode_dlq

        return [decode_dlq(p.value, p.headers).reason for p in self.on(topic)]

    def poll(self, timeout_s: float = 0.0) -> int:
        return 0

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0


def runtime_on_lists(kafka: StageKafka, handler: StageHandler, settings: RuntimeSettings,
                    source: TestingSource, sink: TestingSink | None = None, *,
                    clock: Callable[[], float] = time.monotonic) -> StageRuntime:
    """A runtime on a :class:`TestingSource` and :class:`TestingSink` (no Kafka)."""
    kafka.consumer, kafka.producer = source, sink or TestingSink()
    rt = StageRuntime(kafka, handler, settings, clock=clock)
    source.on_revoke = rt.on_revoke
    return rt


def run_until_idle(rt: StageRuntime, max_steps: int = 1000) -> None:
    """Step until the source is read and nothing is held or waiting, then shut down (drain,
    flush, commit): a whole stage from a list in to a list out."""
    source = rt.kafka.consumer
    for _ in range(max_steps):
        rt.step()
        if not getattr(source, "msgs", None) and not rt.handler.busy() and not rt.waiting and not rt.parked:
            break
    rt.shutdown()
