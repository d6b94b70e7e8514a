"""Fakes that implement the same protocols as the real adapters (no network): the object
store, and Kafka messages, consumer and producer (every stage's tests use these)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.objectstore import ObjectInfo, PutResult
from pipeline.runtime import TestingMessage


@dataclass
class _Obj:
    data: bytes
    content_type: str
    metadata: dict[str, str]
    tags: dict[str, str]
    version: int


@dataclass
class InMemoryObjectStore:
    """``ObjectStore`` in a dict. ``fail_puts`` makes the next N puts raise (outage tests);
    ``puts`` records every key written, in order (replay / duplicate tests)."""

    bucket: str = "test"
    objects: dict[str, _Obj] = field(default_factory=dict)
    puts: list[str] = field(default_factory=list)
    fail_puts: int = 0
    bucket_created: bool = False
    retention: dict[str, Any] = field(default_factory=dict)  # key -> RetentionSpec | None
    lifecycle: list[Any] = field(default_factory=list)
    _version: int = 0

    def ensure_bucket(self) -> None:
        self.bucket_created = True

    def set_lifecycle(self, rules: Sequence[Any]) -> None:
        if rules:
            self.lifecycle = list(rules)

    def put_object(self, key: str, data: bytes, content_type: str, metadata: dict[str, str],
                   tags: dict[str, str], retention: Any = None) -> PutResult:
        if self.fail_puts > 0:
            self.fail_puts -= 1
            raise ConnectionError("injected object store outage")
        if len(tags) > 10:
            raise ValueError("S3 allows at most 10 tags per object")
        self._version += 1
        self.objects[key] = _Obj(bytes(data), content_type, dict(metadata), dict(tags), self._version)
        self.retention[key] = retention
        self.puts.append(key)
        return PutResult(etag=hashlib.md5(data).hexdigest(), version_id=str(self._version))  # noqa: S324

    def get_object(self, key: str) -> bytes:
        if key not in self.objects:
            raise KeyError(key)
        return self.objects[key].data

    def stat_object(self, key: str) -> ObjectInfo | None:
        o = self.objects.get(key)
        if o is None:
            return None
        return ObjectInfo(key=key, size=len(o.data), etag=hashlib.md5(o.data).hexdigest(),  # noqa: S324
                          content_type=o.content_type, metadata=dict(o.metadata), version_id=str(o.version))

    def get_tags(self, key: str) -> dict[str, str]:
        return dict(self.objects[key].tags)

    def list_objects(self, prefix: str = "") -> Iterator[str]:
        yield from sorted(k for k in self.objects if k.startswith(prefix))


# ---------------------------------------------------------------- Kafka
FakeMsg = TestingMessage  # one message stand-in for the runtime's TestingSource and these fakes


class FakeConsumer:
    def __init__(self, msgs: list[FakeMsg], on_revoke: Any) -> None:
        self.msgs = list(msgs)
        self.on_revoke = on_revoke
        self.assigned = {(m.topic(), m.partition()) for m in msgs}
        self.paused: set[tuple[str, int]] = set()
        self.commits: list[dict[tuple[str, int], int]] = []
        self.closed = False

    def poll(self, timeout_s: float, max_messages: int = 16) -> list[FakeMsg]:
        out = [m for m in self.msgs if (m.topic(), m.partition()) not in self.paused][:max_messages]
        for m in out:
            self.msgs.remove(m)
        return out

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        self.commits.append(dict(offsets))

    def committed(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for c in self.commits:
            out.update(c)
        return out

    def pause(self, tps: list[tuple[str, int]]) -> None:
        self.paused.update(tps)

    def resume(self, tps: list[tuple[str, int]]) -> None:
        self.paused.difference_update(tps)

    def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def close(self) -> None:
        self.closed = True


class FakeProducer:
    """``ChunkProducer`` in a list. Acks at once, or (``auto_ack=False``) when the test
    calls :meth:`ack`; ``full`` raises like a local queue that stayed full."""

    def __init__(self, auto_ack: bool = True) -> None:
        self.sent: list[tuple[str, bytes, Any, list[tuple[str, bytes]]]] = []
        self.auto_ack = auto_ack
        self.full = False
        self.unacked: list[tuple[int, Any]] = []  # (index into sent, on_done)

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_done: Any = None,
                retries: int = 50) -> Any:
        from pipeline.kafka import Delivery, KafkaDeliveryError

        if self.full:
            raise KafkaDeliveryError("producer queue stayed full")
        self.sent.append((topic, value, key, headers))
        d = Delivery(done=self.auto_ack, partition=0, offset=len(self.sent) - 1)
        if not self.auto_ack:
            self.unacked.append((len(self.sent) - 1, on_done))
        elif on_done:
            on_done(d)
        return d

    def ack(self, i: int = 0, error: str | None = None) -> None:
        """Deliver the ``i``-th unacknowledged produce (``error``: the broker refused it)."""
        from pipeline.kafka import Delivery

        idx, cb = self.unacked.pop(i)
        if cb:
            cb(Delivery(done=True, error=error, partition=0, offset=idx))

    def poll(self, timeout_s: float = 0.0) -> int:
        return 0

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0
