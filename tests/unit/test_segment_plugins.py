"""The segment writer and its plug-ins (issue 21 item 2).

* The data path (``pipeline/sink``) never imports ``pipeline.governance`` (module level or
  inside a function), and governance sees the sink only through ``pipeline.sink.plugins``.
* ``SegmentWriter`` calls a plug-in's hooks at fixed points around the two PUTs, and the
  sink finishes a segment's offsets only after every hook returned.
* The governance plug-ins (retention, hash chain, notice, audit) write what the sink wrote
  before they were plug-ins: chained manifests, WORM chain records, notices, audit events.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline.objectstore import RetentionSpec
from pipeline.sink.plugins import PluginError, SegmentPlugin, SegmentRef, SinkHandle
from pipeline.sink.segments import CompletedSegment
from pipeline.sink.writer import SegmentWriter
from tests.fakes import FakeConsumer, FakeMsg, FakeProducer, InMemoryObjectStore
from tests.unit.test_segments import T0, h264_chunk

ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-11-22"  # T0's UTC date
LOCK = RetentionSpec("GOVERNANCE", dt.datetime(2027, 1, 1, tzinfo=dt.UTC))


# ---------------------------------------------------------------- import direction
def imported_modules(source: str, module: str) -> Iterator[tuple[int, str]]:
    """Every module ``source`` (the text of ``module``, dotted) imports, anywhere in it:
    module level, inside functions and classes, relative imports resolved, and
    ``importlib.import_module``/``__import__`` of a constant name. ``from a import b``
    yields ``a.b`` (``b`` may be a submodule)."""
    package = module.rsplit(".", 1)[0]  # pipeline.sink.worker and pipeline.sink.__init__: pipeline.sink
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")))):
            yield node.lineno, node.args[0].value


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _modules(package_dir: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(package_dir.rglob("*.py")):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield path, dotted


def sink_violations() -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {name}"
            for path, dotted in _modules(ROOT / "pipeline" / "sink")
            for line, name in imported_modules(path.read_text(), dotted) if _under(name, "pipeline.governance")]


def governance_violations() -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {name}"
            for path, dotted in _modules(ROOT / "pipeline" / "governance")
            for line, name in imported_modules(path.read_text(), dotted)
            if _under(name, "pipeline.sink") and not _under(name, "pipeline.sink.plugins")]


@pytest.mark.parametrize("source, found", [
    ("", []),
    ("import json\nfrom pipeline.objectstore import ObjectStore\n", []),
    ("from pipeline.governance.chain import first_link\n", ["pipeline.governance.chain.first_link"]),
    ("def f():\n    from pipeline.governance import retain_until\n", ["pipeline.governance.retain_until"]),
    ("class C:\n    def m(self):\n        import pipeline.governance.notice\n", ["pipeline.governance.notice"]),
    ("def f():\n    from ..governance import chain\n", ["pipeline.governance.chain"]),
    ("from pipeline import governance\n", ["pipeline.governance"]),
    ("import importlib\nimportlib.import_module('pipeline.governance.audit')\n", ["pipeline.governance.audit"]),
])
def test_the_import_check_sees_every_kind_of_import(source: str, found: list[str]) -> None:
    names = [n for _l, n in imported_modules(source, "pipeline.sink.worker") if _under(n, "pipeline.governance")]
    assert names == found


def test_the_sink_does_not_import_governance() -> None:
    assert sink_violations() == []


def test_governance_sees_the_sink_only_through_its_plugin_interface() -> None:
    assert governance_violations() == []


# ---------------------------------------------------------------- the writer's hooks, with a fake plug-in
class RecordingStore(InMemoryObjectStore):
    def __init__(self, events: list[Any]) -> None:
        super().__init__()
        self.events = events

    def put_object(self, key: str, data: bytes, content_type: str, metadata: dict[str, str],
                   tags: dict[str, str], retention: Any = None) -> Any:
        self.events.append(("put", key.rsplit(".", 1)[1], retention))
        return super().put_object(key, data, content_type, metadata, tags, retention)


class FakePlugin(SegmentPlugin):
    """Records every hook; optional retention, manifest fields and a failing after_durable."""

    def __init__(self, events: list[Any], name: str = "fake", keep: RetentionSpec | None = None,
                 fields: Mapping[str, Any] | None = None, fail_durable: int = 0) -> None:
        self.events, self.name, self.keep = events, name, keep
        self.fields = dict(fields or {})
        self.fail_durable = fail_durable
        self.attached: SinkHandle | None = None
        self.durable: list[tuple[SegmentRef, dict[str, Any], bytes]] = []
        self.replayed: list[tuple[SegmentRef, bytes]] = []

    def attach(self, sink: SinkHandle) -> None:
        self.attached = sink

    def retention(self, segment: SegmentRef) -> RetentionSpec | None:
        self.events.append((self.name, "retention"))
        return self.keep

    def manifest_fields(self, segment: SegmentRef) -> Mapping[str, Any]:
        self.events.append((self.name, "manifest_fields"))
        return self.fields

    def after_durable(self, segment: SegmentRef, manifest: Mapping[str, Any], manifest_json: bytes) -> None:
        self.events.append((self.name, "after_durable"))
        if self.fail_durable > 0:
            self.fail_durable -= 1
            raise ConnectionError("injected: audit bucket unreachable")
        self.durable.append((segment, dict(manifest), manifest_json))

    def already_stored(self, segment: SegmentRef, manifest_json: bytes) -> None:
        self.events.append((self.name, "already_stored"))
        self.replayed.append((segment, manifest_json))


def _segment(cam: str = "a", chunks: int = 2, start_ms: int = T0) -> CompletedSegment:
    seg = CompletedSegment(cam, start_ms, start_ms + 60_000)
    for i in range(chunks):
        seg.chunks.append(h264_chunk(cam, i, start_ms + i * 200, 5))
        seg.sources.append(("veil.chunks.redacted", 0, i))
    return seg


def _no_dlq(*args: Any) -> None:
    raise AssertionError(f"nothing should be dead-lettered here: {args}")


def test_hooks_run_in_order_around_the_two_puts() -> None:
    events: list[Any] = []
    store = RecordingStore(events)
    first = FakePlugin(events, "one", keep=None, fields={"x_one": 1})
    second = FakePlugin(events, "two", keep=LOCK, fields={"x_two": {"k": "v"}})
    third = FakePlugin(events, "three", keep=RetentionSpec("COMPLIANCE", LOCK.until))  # not asked: two decided
    stored = SegmentWriter(store, [first, second, third], dead_letter=_no_dlq).write(_segment())
    assert stored is not None and stored.action == "write"
    assert events == [("one", "retention"), ("two", "retention"),
                      ("put", "mp4", LOCK),
                      ("one", "manifest_fields"), ("two", "manifest_fields"), ("three", "manifest_fields"),
                      ("put", "json", LOCK),
                      ("one", "after_durable"), ("two", "after_durable"), ("three", "after_durable")]
    ref, doc, body = second.durable[0]
    mkey = stored.key[:-4] + ".json"
    assert (ref.camera_id, ref.key, ref.manifest_key, ref.day, ref.policy_id, ref.retention) == (
        "a", stored.key, mkey, DAY, "city", LOCK)
    assert body == store.get_object(mkey)  # the hook sees exactly the stored bytes
    stored_doc = json.loads(body)
    assert stored_doc == doc and stored_doc["x_one"] == 1 and stored_doc["x_two"] == {"k": "v"}
    assert stored.bytes_written == len(store.get_object(stored.key)) + len(body)


def test_a_replay_of_a_stored_segment_calls_already_stored_and_writes_nothing() -> None:
    events: list[Any] = []
    store = RecordingStore(events)
    plugin = FakePlugin(events, keep=LOCK)
    writer = SegmentWriter(store, [plugin], dead_letter=_no_dlq)
    writer.write(_segment())
    events.clear()
    stored = writer.write(_segment())
    assert stored is not None and stored.action == "skip" and stored.bytes_written == 0
    assert events == [("fake", "retention"), ("fake", "already_stored")]
    ref, body = plugin.replayed[0]
    assert body == store.get_object(ref.manifest_key) and ref.retention == LOCK


def test_a_plugin_may_not_overwrite_a_manifest_field_and_that_is_retried_not_dead_lettered() -> None:
    from pipeline.sink.worker import is_poison

    events: list[Any] = []
    store = RecordingStore(events)
    writer = SegmentWriter(store, [FakePlugin(events, fields={"sha256": "0" * 64})], dead_letter=_no_dlq)
    with pytest.raises(PluginError, match="sha256"):
        writer.write(_segment())
    assert [k for k in store.list_objects() if k.endswith(".json")] == []  # no manifest with a forged field
    assert not is_poison(PluginError("x"))


def _msgs(chunks: list[Any]) -> list[FakeMsg]:
    from schemas.messages import encode_chunk

    return [FakeMsg("veil.chunks.redacted", 0, i, c.camera_id.encode(), *encode_chunk(c))
            for i, c in enumerate(chunks)]


def _worker(msgs: list[FakeMsg], store: InMemoryObjectStore, clock: list[float], plugins: list[Any]) -> Any:
    from pipeline.sink.worker import SinkWorker
    from schemas.config import parse_config

    cfg = parse_config({"sink": {"segment_seconds": 60, "idle_flush_s": 5}, "metrics": {"enabled": False}})
    w = SinkWorker(cfg, store, lambda on_revoke: FakeConsumer(msgs, on_revoke), producer_factory=FakeProducer,
                   clock=lambda: clock[0], plugins=plugins)
    w.producer, w.consumer = FakeProducer(), FakeConsumer(msgs, w.runtime.on_revoke)
    return w


def test_offsets_are_committed_only_after_every_hook_returned() -> None:
    """A failing after_durable (e.g. the chain record's PUT) leaves the segment's offsets
    uncommitted and the partitions paused; the retry finds the segment stored, calls
    already_stored, and only then commits."""
    events: list[Any] = []
    store = InMemoryObjectStore()
    plugin = FakePlugin(events, fail_durable=1)
    chunks = [h264_chunk("a", 0, T0, 5), h264_chunk("a", 1, T0 + 200, 5), h264_chunk("a", 2, T0 + 60_000, 5)]
    clock = [0.0]
    w = _worker(_msgs(chunks), store, clock, [plugin])
    assert plugin.attached is w
    w.step(0)
    assert len([k for k in store.list_objects() if k.endswith(".json")]) == 1  # durable ...
    assert w.consumer.committed() == {}  # ... but not committed: the hook failed
    assert w.consumer.paused and len(w.pending) == 1
    clock[0] += 1.0
    w.step(0)
    assert events[-1] == ("fake", "already_stored") and plugin.durable == []
    assert w.consumer.committed() == {("veil.chunks.redacted", 0): 2}
    assert not w.consumer.paused


def test_a_plugin_counts_errors_in_the_sinks_metrics() -> None:
    events: list[Any] = []
    plugin = FakePlugin(events)
    w = _worker([], InMemoryObjectStore(), [0.0], [plugin])
    assert plugin.attached is not None
    plugin.attached.count_error("audit")
    assert w.metrics.registry.get_sample_value("veil_sink_errors_total", {"kind": "audit"}) == 1.0


# ---------------------------------------------------------------- the governance plug-ins
class FlakyStore(InMemoryObjectStore):
    """Fails the next ``fails`` puts of keys under ``prefix``."""

    def __init__(self, prefix: str = "", fails: int = 0) -> None:
        super().__init__()
        self.prefix, self.fails = prefix, fails

    def put_object(self, key: str, *a: Any, **kw: Any) -> Any:
        if self.fails and key.startswith(self.prefix):
            self.fails -= 1
            raise ConnectionError("injected: audit bucket down")
        return super().put_object(key, *a, **kw)


def _governed(store: InMemoryObjectStore, audit: InMemoryObjectStore | None, **kw: Any) -> SegmentWriter:
    from pipeline.governance.segmentplugins import sink_plugins
    from schemas.config import parse_config

    cfg = parse_config({"metrics": {"enabled": False}})
    return SegmentWriter(store, sink_plugins(cfg, audit, kw.pop("policies", {}), notices=kw.pop("notices", lambda _cam: {})),
                         dead_letter=_no_dlq)


def _verify(store: InMemoryObjectStore, audit: InMemoryObjectStore, cam: str = "a") -> Any:
    from pipeline.governance.chain import chain_prefix, verify_day

    records = [json.loads(audit.get_object(k)) for k in audit.list_objects(chain_prefix(cam, DAY))]
    objects = {k: store.get_object(k) for k in store.list_objects(f"camera={cam}/date={DAY}/")}
    return verify_day(cam, DAY, records, objects)


def test_chain_plugin_links_manifests_and_writes_worm_records_that_verify() -> None:
    store, audit = InMemoryObjectStore(), InMemoryObjectStore()
    writer = _governed(store, audit)
    keys = [writer.write(_segment(start_ms=T0 + i * 60_000)) for i in range(2)]
    mans = [json.loads(store.get_object(s.key[:-4] + ".json")) for s in keys if s is not None]
    assert [m["chain"]["seq"] for m in mans] == [1, 2]
    assert mans[0]["chain"]["prev_sha256"] is None and mans[1]["chain"]["prev_key"] == keys[0].key[:-4] + ".json"
    assert sorted(audit.list_objects("chains/")) == [f"chains/camera=a/date={DAY}/0000000{i}.json" for i in (1, 2)]
    assert _verify(store, audit).ok
    # a restarted sink (new plug-ins, empty memory) continues the chain from the audit bucket
    third = _governed(store, audit).write(_segment(start_ms=T0 + 2 * 60_000))
    assert third is not None and json.loads(store.get_object(third.key[:-4] + ".json"))["chain"]["seq"] == 3
    assert _verify(store, audit).ok


def test_a_lost_chain_record_is_written_by_the_replay() -> None:
    store, audit = InMemoryObjectStore(), FlakyStore("chains/", fails=1)
    writer = _governed(store, audit)
    with pytest.raises(ConnectionError):
        writer.write(_segment())
    assert list(audit.list_objects("chains/")) == []  # manifest durable, record not: a gap
    assert not _verify(store, audit).ok
    stored = writer.write(_segment())
    assert stored is not None and stored.action == "skip"
    assert list(audit.list_objects("chains/")) == [f"chains/camera=a/date={DAY}/00000001.json"]
    assert _verify(store, audit).ok


def test_notice_plugin_stamps_the_cameras_notice_and_nothing_without_one() -> None:
    store = InMemoryObjectStore()
    notice = {"purpose": "crime prevention", "scope": "Gate 3", "contact": "privacy@city.example"}
    writer = _governed(store, None, notices=lambda cam: notice if cam == "a" else {})
    a, b = writer.write(_segment("a")), writer.write(_segment("b"))
    assert a is not None and b is not None
    assert json.loads(store.get_object(a.key[:-4] + ".json"))["notice"] == notice
    assert "notice" not in json.loads(store.get_object(b.key[:-4] + ".json"))


def test_retention_plugin_locks_every_object_by_the_segments_policy() -> None:
    from schemas.policy import parse_policy

    store, audit = InMemoryObjectStore(), InMemoryObjectStore()
    pol = parse_policy({"policy_id": "city", "retention": {"redacted_days": 45, "mode": "COMPLIANCE"}})
    before = dt.datetime.now(dt.UTC)
    stored = _governed(store, audit, policies={"city": pol}).write(_segment())
    assert stored is not None
    for bucket, key in ((store, stored.key), (store, stored.key[:-4] + ".json"),
                        (audit, f"chains/camera=a/date={DAY}/00000001.json")):
        keep = bucket.retention[key]
        assert keep.mode == "COMPLIANCE"
        assert before + dt.timedelta(days=45, seconds=-2) <= keep.until <= dt.datetime.now(dt.UTC) + dt.timedelta(45)
    other = InMemoryObjectStore()
    assert _governed(other, None, policies={"other": pol}).write(_segment()) is not None
    assert set(other.retention.values()) == {None}  # unknown policy: stored anyway, without a lock


class _Handle:
    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.errors: list[str] = []

    def count_error(self, kind: str) -> None:
        self.errors.append(kind)


def test_audit_plugin_produces_the_manifest_as_segment_stored_and_never_raises() -> None:
    from pipeline.governance.segmentplugins import AuditPlugin

    ref = SegmentRef("a", "camera=a/k.mp4", "camera=a/k.json", DAY, T0, T0 + 60_000, "city")
    producer = FakeProducer(auto_ack=False)
    handle = _Handle(producer)
    plugin = AuditPlugin("veil.audit")
    plugin.after_durable(ref, {}, b"{}")  # not attached: nothing to produce on
    plugin.attach(handle)
    plugin.after_durable(ref, {}, b'{"kind":"SegmentStored"}')
    topic, value, key, headers = producer.sent[0]
    assert (topic, value, key) == ("veil.audit", b'{"kind":"SegmentStored"}', "a")
    assert dict(headers)["veil-type"] == b"SegmentStored" and dict(headers)["veil-object-key"] == b"camera=a/k.mp4"
    producer.ack(0, error="broker refused")
    assert handle.errors == ["audit"]
    producer.full = True
    plugin.after_durable(ref, {}, b"{}")  # a failed produce is counted, the segment stays stored
    assert handle.errors == ["audit", "audit"]


@pytest.mark.parametrize("restart", [False, True])
def test_a_record_written_late_by_a_replay_does_not_move_the_chain_head_back(restart: bool) -> None:
    """The chain record of segment 1 fails (audit bucket down); segment 2 is stored meanwhile
    (seq 2); the retry of segment 1 (``restart``: by a restarted sink) finds it stored and
    writes its record (seq 1). The next segment must still link to seq 2: before this was
    fixed the head went back to seq 1 and segment 3 forked the chain (a second seq 2), which
    verify_day reports as tampering."""
    store, audit = InMemoryObjectStore(), FlakyStore("chains/", fails=1)
    writer = _governed(store, audit)
    with pytest.raises(ConnectionError):
        writer.write(_segment(start_ms=T0))
    assert writer.write(_segment(start_ms=T0 + 60_000)) is not None  # seq 2
    if restart:
        writer = _governed(store, audit)
    replay = writer.write(_segment(start_ms=T0))
    assert replay is not None and replay.action == "skip"  # record 1 written now
    third = writer.write(_segment(start_ms=T0 + 120_000))
    assert third is not None and json.loads(store.get_object(third.key[:-4] + ".json"))["chain"]["seq"] == 3
    assert sorted(audit.list_objects("chains/")) == [f"chains/camera=a/date={DAY}/0000000{i}.json" for i in (1, 2, 3)]
    assert _verify(store, audit).ok
