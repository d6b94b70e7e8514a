"""Fakes that implement the same protocols as the real adapters (no network): the object
store, Kafka messages, consumer and producer (every stage's tests use these), and Ray as the
process stage sees it (the driver's submit / wait / get, a detector actor's handle)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from operators.types import Boxes
from pipeline.objectstore import ObjectInfo, PutResult
from pipeline.process.actors import ChunkResult, ChunkTask, Detections, DetectorActor
from pipeline.process.batching import BatchLimits
from pipeline.runtime import TestingMessage
from schemas.messages import ChunkCaptured, encode_chunk


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


# ---------------------------------------------------------------- Ray (the process stage)
class FakeRay:
    """Ray as the process stage's driver uses it: the worker's ``submit`` / ``submit_many`` and
    the handler's ``wait`` / ``get`` / ``kill``. Each chunk's result is ``answer(task)``, ready
    once the test calls :meth:`finish` (``auto``: at once); an exception as the answer is raised
    by ``get``, like Ray's. ``submitted`` lists each task's first pts, ``calls`` each submit
    call's chunks (first pts // 1000, the ``seq`` of :func:`raw_chunk`)."""

    def __init__(self, answer: Any, auto: bool = True) -> None:
        self.answer, self.auto = answer, auto
        self.tasks: dict[Any, ChunkTask] = {}
        self.done: set[Any] = set()
        self.submitted: list[int] = []
        self.calls: list[list[int]] = []
        self.gets: list[int] = []
        self.answers: dict[Any, Any] = {}

    def _ref(self, task: ChunkTask) -> Any:
        ref = object()
        self.tasks[ref] = task
        self.submitted.append(task.pts_ms[0])
        if self.auto:
            self.done.add(ref)
        return ref

    def submit(self, task: ChunkTask) -> Any:
        self.calls.append([task.pts_ms[0] // 1000])
        return self._ref(task)

    def submit_many(self, tasks: list[ChunkTask]) -> list[Any]:
        self.calls.append([t.pts_ms[0] // 1000 for t in tasks])
        return [self._ref(t) for t in tasks]

    def finish(self, order: list[int]) -> None:
        """Complete the pending tasks whose first pts is in ``order``."""
        self.done.update(r for r, t in self.tasks.items() if t.pts_ms[0] in order)

    def wait(self, refs: list[Any], num_returns: int, timeout: float, fetch_local: bool = True) -> Any:
        return [r for r in refs if r in self.done], [r for r in refs if r not in self.done]

    def get(self, ref: Any) -> Any:
        """One ref's result, or (a list, as Ray's ``get``) every one's, raising the first error
        among them and then consuming none of them. ``gets`` counts the calls by their size."""
        if isinstance(ref, list):
            self.gets.append(len(ref))
            outs = [self._answer_of(r) for r in ref]
            for out in outs:
                if isinstance(out, BaseException):
                    raise out
            for r in ref:
                self.done.discard(r)
                self.tasks.pop(r)
                self.answers.pop(r, None)
            return outs
        self.gets.append(1)
        self.done.discard(ref)
        out = self._answer_of(ref)
        self.tasks.pop(ref)
        self.answers.pop(ref, None)
        if isinstance(out, BaseException):
            raise out
        return out

    def _answer_of(self, ref: Any) -> Any:
        if ref not in self.answers:  # asked once per chunk, like a Ray object (answers may count calls)
            self.answers[ref] = self.answer(self.tasks[ref])
        return self.answers[ref]

    def kill(self, actor: Any, no_restart: bool = False) -> None:
        return None


def redacted(task: ChunkTask) -> ChunkResult:
    """A chunk actor's answer for ``task``: redacted (the payload prefixed ``h264:``), one face."""
    return ChunkResult(payload=b"h264:" + task.payload, pts_ms=task.pts_ms, masks_per_class={"face": 1})


def raw_chunk(seq: int, camera: str = "cam-1") -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of a one-frame 320x180 JPEG chunk on the raw topic, pts
    ``seq * 1000`` (a :class:`~pipeline.runtime.TestingSource` item)."""
    c = ChunkCaptured(camera_id=camera, chunk_seq=seq, pts_ms=(seq * 1000,), fps=0.5, width=320, height=180,
                      codec="jpeg", captured_at_ms=1_700_000_000_000, payload=b"\xff\xd8" + bytes([seq]))
    v, h = encode_chunk(c)
    return camera.encode(), v, list(h)


RAW = "veil.chunks.raw"


def process_stage(ray: FakeRay, items: list[Any], partitions: int = 1, batch: BatchLimits | None = None,
                  workers: int = 1, **process: Any) -> SimpleNamespace:
    """The process stage's handler on the runtime, fed ``items`` on :data:`RAW`, with ``ray``
    as Ray: ``rt``, ``handler``, ``source``, ``sink`` and ``cfg``. ``batch`` gives the handler
    ``ray.submit_many`` and those limits for ``workers`` chunk actors (else one chunk a call);
    ``process``: more keys of the config's ``process`` section."""
    from pipeline.process.handler import ProcessHandler
    from pipeline.process.worker import ProcessWorker
    from pipeline.runtime import TestingSink, TestingSource, runtime_on_lists
    from schemas.config import parse_config

    cfg = parse_config({"process": {"classes": ["face"], "style": "fill", "drain_timeout_s": 0.5, **process},
                        "metrics": {"enabled": False}})
    w = ProcessWorker(cfg)
    many: dict[str, Any] = {} if batch is None else {"submit_many": ray.submit_many, "batch": batch,
                                                       "workers": workers}
    handler = ProcessHandler(cfg, w.plan, w.metrics, ray.submit, ray, **many)
    source, sink = TestingSource(items, topic=RAW, partitions=partitions), TestingSink()
    rt = runtime_on_lists(w.kafka, handler, w.settings(), source, sink)
    return SimpleNamespace(rt=rt, handler=handler, source=source, sink=sink, cfg=cfg)


def empty_detections(frames: np.ndarray) -> Detections:
    """Nothing found on any of ``frames``, 0.01 CPU-s a frame."""
    return Detections([Boxes.empty() for _ in frames], [], [], 0.01 * len(frames))


class FakeDetector:
    """A detector actor's handle: ``detect.remote(frames)``, ``detect_many.remote(chunks)``,
    ``node_id.remote()`` and ``pending_px.remote()`` are awaitable like ObjectRefs.

    ``answer(frames)`` is each call's :class:`~pipeline.process.actors.Detections` (default:
    :func:`empty_detections`); ``exc`` is raised instead, ``hang`` never answers. ``node`` is its
    Ray node, ``pending`` the pixels it says it has waiting (``None``: it cannot say, like an
    older actor). ``sent`` records the frames of each ``detect`` call, ``sent_many`` the chunks
    of each ``detect_many`` call.
    """

    def __init__(self, answer: Callable[[np.ndarray], Detections] | None = None, exc: BaseException | None = None,
                 hang: bool = False, node: str = "n1", pending: int | None = 0) -> None:
        self.answer = answer or empty_detections
        self.exc, self.hang, self.node, self.pending = exc, hang, node, pending
        self.sent: list[np.ndarray] = []
        self.sent_many: list[list[np.ndarray]] = []
        self.detect = SimpleNamespace(remote=self._detect)
        self.detect_many = SimpleNamespace(remote=self._detect_many)
        self.node_id = SimpleNamespace(remote=self._answer(lambda: self.node))
        if pending is not None:
            self.pending_px = SimpleNamespace(remote=self._answer(lambda: self.pending))

    async def _call(self, frames: np.ndarray) -> Detections:
        if self.hang:
            await asyncio.sleep(3600)
        if self.exc is not None:
            raise self.exc
        return self.answer(frames)

    def _detect(self, frames: np.ndarray) -> Any:
        self.sent.append(frames)
        return self._call(frames)

    def _detect_many(self, chunks: list[np.ndarray]) -> Any:
        self.sent_many.append(chunks)

        async def call() -> list[Detections]:
            return [await self._call(c) for c in chunks]
        return call()

    @staticmethod
    def _answer(value: Callable[[], Any]) -> Callable[[], Any]:
        async def call() -> Any:
            return value()
        return lambda: call()

    @property
    def frames(self) -> int:
        """Frames sent to ``detect`` so far."""
        return sum(len(f) for f in self.sent)


def bare_detector_actor(timeout_s: float = 30.0, max_wait_s: float = 0.2) -> DetectorActor:
    """A :class:`~pipeline.process.actors.DetectorActor` with no ONNX sessions: its batching loop
    only (a test sets ``_run``)."""
    d = DetectorActor.__new__(DetectorActor)
    d.max_batch_frames, d.max_wait_s, d._queue, d._loop_task, d.calls, d.batches = 64, max_wait_s, None, None, 0, 0
    d._pending_px, d.timeout_s = 0, timeout_s
    return d


class DeadProcess:
    """A ``pipeline.devstack.spawn`` result whose process has already exited (no log): what a
    fake ``spawn`` returns where a test only inspects the argv and environment it was given."""

    pid = 1
    log_path = "ray.log"

    def alive(self) -> bool:
        return False

    def log_tail(self, n: int = 20) -> str:
        return ""
