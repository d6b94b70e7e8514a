"""Fakes that implement the same protocols as the real adapters (no network)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.sink.objectstore import ObjectInfo, PutResult


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
