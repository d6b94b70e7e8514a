"""The sink's memory bound: open segments past ``sink.max_buffered_bytes`` spool to disk, and
what is stored is byte-identical to the all-in-memory path (pipeline.sink.spool)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from operators.codec import encode_h264_chunk
from pipeline.sink.spool import ChunkSpool, SpooledChunk
from schemas.config import parse_config
from schemas.messages import ChunkRedacted, decode_dlq, encode_chunk
from tests.fakes import FakeConsumer, FakeMsg, FakeProducer, InMemoryObjectStore

T0 = 1795378500000  # 2026-11-22T20:15:00.000Z
FPS = 25.0
TOPIC = "veil.chunks.redacted"


def h264_chunk(cam: str, seq: int, start_ms: int, n: int = 5, payload: bytes | None = None) -> ChunkRedacted:
    if payload is None:
        frames = np.random.default_rng(seq * 1000 + sum(map(ord, cam))).integers(0, 255, (n, 48, 64, 3),
                                                                                  dtype=np.uint8)
        payload = encode_h264_chunk(frames, FPS)
    return ChunkRedacted(camera_id=cam, chunk_seq=seq, pts_ms=tuple(start_ms + i * 40 for i in range(n)), fps=FPS,
                         width=64, height=48, codec="h264", captured_at_ms=start_ms, payload=payload,
                         masks_per_class={"face": 1}, models=({"id": "centerface", "version": "1.0"},),
                         policy_id="city", policy_version=3)


def _msgs(chunks: list[ChunkRedacted]) -> list[FakeMsg]:
    """One partition per camera (as keyed production spreads them), offsets per partition."""
    parts: dict[str, int] = {}
    offsets: dict[int, int] = {}
    out = []
    for c in chunks:
        p = parts.setdefault(c.camera_id, len(parts))
        off = offsets.get(p, 0)
        offsets[p] = off + 1
        out.append(FakeMsg(TOPIC, p, off, c.camera_id.encode(), *encode_chunk(c)))
    return out


def _worker(msgs: list[FakeMsg], store: InMemoryObjectStore, clock: list[float], **sink: Any) -> Any:
    from pipeline.governance.segmentplugins import ChainPlugin
    from pipeline.sink.worker import SinkWorker

    cfg = parse_config({"sink": {"segment_seconds": 60, "idle_flush_s": 5, **sink}, "metrics": {"enabled": False}})
    # the hash chain as deployed (manifests link to their predecessor), without an audit bucket
    w = SinkWorker(cfg, store, lambda on_revoke: FakeConsumer(msgs, on_revoke), producer_factory=FakeProducer,
                   clock=lambda: clock[0], plugins=[ChainPlugin(None)])
    w.producer, w.consumer = FakeProducer(), FakeConsumer(msgs, w.runtime.on_revoke)
    return w


def _city(cameras: int, chunks_per_window: int) -> list[ChunkRedacted]:
    """Every camera's chunks of two windows, interleaved by time (as a real topic reads)."""
    out = []
    for w in range(2):
        for i in range(chunks_per_window):
            for c in range(cameras):
                out.append(h264_chunk(f"cam-{c:03d}", w * 100 + i, T0 + w * 60_000 + i * 200))
    return out


def _run(chunks: list[ChunkRedacted], tmp: Path | None, **sink: Any) -> tuple[Any, InMemoryObjectStore, list[int]]:
    """Feed the chunks a few at a time; returns the worker, its store and the in-memory bytes
    seen after every step."""
    store = InMemoryObjectStore()
    if tmp is not None:
        sink["spool_dir"] = str(tmp)
    msgs = _msgs(chunks)
    w = _worker([], store, [0.0], **sink)
    seen = []
    for i in range(0, len(msgs), 5):
        w.consumer.msgs.extend(msgs[i:i + 5])
        w.consumer.assigned.update((m.topic(), m.partition()) for m in msgs[i:i + 5])
        w.step(0)
        seen.append(w.spool.buffered_bytes)
    w.shutdown()
    return w, store, seen


def _comparable(store: InMemoryObjectStore) -> dict[str, Any]:
    """Stored objects with the store-time fields of manifests taken out."""
    out: dict[str, Any] = {}
    for key in store.list_objects():
        data = store.get_object(key)
        if key.endswith(".json"):
            m = json.loads(data)
            for k in ("stored_at_ms", "latency_ms"):
                m.pop(k, None)
            m["chain"] = m["chain"]["seq"]  # the link hashes the previous manifest, store time included
            out[key] = m
        else:
            out[key] = data
    return out


def test_many_open_cameras_stay_within_the_bound_and_store_the_same_bytes(tmp_path: Path) -> None:
    chunks = _city(cameras=24, chunks_per_window=4)
    size = len(chunks[0].payload)
    bound = 6 * size  # 6 chunks in memory for 24 open cameras (96 chunks per window)
    ref_worker, ref, ref_seen = _run(chunks, None, max_buffered_bytes=None)
    w, spooled, seen = _run(chunks, tmp_path, max_buffered_bytes=bound)
    assert max(ref_seen) > 4 * bound  # the unbounded path really holds more
    assert max(seen) <= bound and w.spool.peak_buffered_bytes <= bound
    assert w.spool.spool_errors == 0
    assert _comparable(spooled) == _comparable(ref)
    assert len([k for k in spooled.list_objects() if k.endswith(".mp4")]) == 48
    # at-least-once unchanged: everything stored, everything committed, nothing left behind
    assert w.consumer.committed() == ref_worker.consumer.committed()
    assert sum(w.consumer.committed().values()) == len(chunks)
    assert w.spool.buffered_bytes == 0 and w.spool.spooled_bytes == 0
    assert list(tmp_path.iterdir()) == []


def test_zero_budget_spools_everything_and_still_stores_identical_segments(tmp_path: Path) -> None:
    chunks = _city(cameras=3, chunks_per_window=3)
    _w0, ref, _ = _run(chunks, None, max_buffered_bytes=None)
    w, spooled, seen = _run(chunks, tmp_path, max_buffered_bytes=0)
    assert max(seen) == 0
    assert _comparable(spooled) == _comparable(ref)
    assert list(tmp_path.iterdir()) == []


def test_open_segment_chunks_live_on_disk_past_the_bound(tmp_path: Path) -> None:
    chunks = [h264_chunk("a", i, T0 + i * 200) for i in range(4)]
    store = InMemoryObjectStore()
    w = _worker(_msgs(chunks), store, [0.0], max_buffered_bytes=len(chunks[0].payload), spool_dir=str(tmp_path))
    w.step(0)
    seg = w.assembler.open["a"]
    assert not isinstance(seg.chunks[0], SpooledChunk)
    assert all(isinstance(c, SpooledChunk) for c in seg.chunks[1:])
    assert [c.payload for c in seg.chunks] == [c.payload for c in chunks]
    assert seg.chunk_seqs == [0, 1, 2, 3] and seg.frames == 20
    assert len(list(tmp_path.iterdir())) == 1
    assert w.consumer.committed() == {}  # open: nothing durable yet


def test_spool_dir_is_cleaned_at_start(tmp_path: Path) -> None:
    stale = tmp_path / "seg-1-1.spool"
    stale.write_bytes(b"from a crashed sink")
    other = tmp_path / "keep.txt"
    other.write_text("not ours")
    ChunkSpool(tmp_path, 0)
    assert not stale.exists() and other.exists()


def test_default_spool_dir_is_private_and_removed_at_close() -> None:
    s = ChunkSpool(None, 0)
    assert s.directory.is_dir()
    s.close()
    assert not s.directory.exists()


def test_outage_keeps_spooled_segment_until_stored(tmp_path: Path) -> None:
    chunks = [h264_chunk("a", 0, T0), h264_chunk("a", 1, T0 + 200), h264_chunk("a", 2, T0 + 60_000)]
    store = InMemoryObjectStore(fail_puts=1)
    clock = [0.0]
    w = _worker(_msgs(chunks), store, clock, max_buffered_bytes=0, spool_dir=str(tmp_path))
    w.step(0)
    assert w.pending and w.consumer.committed() == {}
    assert len(list(tmp_path.iterdir())) == 2  # the pending segment's file and the open one's
    clock[0] = 1.0
    w.step(0)
    assert not w.pending and w.consumer.committed() == {(TOPIC, 0): 2}
    assert len(list(tmp_path.iterdir())) == 1


def test_spooled_bad_chunk_reaches_the_dlq_with_its_payload(tmp_path: Path) -> None:
    good = h264_chunk("a", 0, T0)
    bad = h264_chunk("a", 1, T0 + 200, payload=b"not h264 at all")
    w = _worker(_msgs([good, bad]), InMemoryObjectStore(), [0.0], max_buffered_bytes=0, spool_dir=str(tmp_path))
    w.step(0)
    w.shutdown()
    dlq = [(v, h) for t, v, _k, h in w.producer.sent if t == "veil.dlq"]
    assert len(dlq) == 1 and dlq[0][0] == b"not h264 at all"
    assert decode_dlq(*dlq[0]).reason == "remux_failed"
    assert w.consumer.committed() == {(TOPIC, 0): 2}
    assert list(tmp_path.iterdir()) == []


def test_revoke_forgets_spooled_segments(tmp_path: Path) -> None:
    w = _worker(_msgs([h264_chunk("a", 0, T0)]), InMemoryObjectStore(), [0.0], max_buffered_bytes=0,
                spool_dir=str(tmp_path))
    w.step(0)
    assert w.spool.spooled_bytes > 0
    w.runtime.on_revoke([(TOPIC, 0)])
    assert w.spool.spooled_bytes == 0 and list(tmp_path.iterdir()) == []
    assert w.consumer.committed() == {}


@pytest.mark.parametrize("value, ok", [(None, True), (0, True), (1 << 30, True), (-1, False)])
def test_config_bounds(value: int | None, ok: bool) -> None:
    from schemas.errors import ConfigError

    if ok:
        assert parse_config({"sink": {"max_buffered_bytes": value}}).sink.max_buffered_bytes == value
    else:
        with pytest.raises(ConfigError, match="max_buffered_bytes"):
            parse_config({"sink": {"max_buffered_bytes": value}})


def test_a_lost_spool_file_stops_the_sink_without_committing(tmp_path: Path) -> None:
    # neither a retry nor the DLQ can bring the bytes back: the sink must exit (and restart,
    # re-reading from Kafka), never store a partial segment or commit its offsets
    from pipeline.sink.spool import SpoolError

    chunks = [h264_chunk("a", 0, T0), h264_chunk("a", 1, T0 + 200), h264_chunk("a", 2, T0 + 60_000)]
    store = InMemoryObjectStore()
    w = _worker(_msgs(chunks[:2]), store, [0.0], max_buffered_bytes=0, spool_dir=str(tmp_path))
    w.step(0)
    for f in tmp_path.iterdir():
        f.unlink()
    w.consumer.msgs.extend(_msgs(chunks)[2:])
    with pytest.raises(SpoolError, match="camera=a"):
        w.step(0)
    assert list(store.list_objects()) == [] and w.consumer.committed() == {}
    assert not w.producer.sent  # nothing dead-lettered


def test_private_spool_dir_is_made_only_when_a_chunk_spills() -> None:
    import gc

    store = InMemoryObjectStore()
    w = _worker(_msgs([h264_chunk("a", 0, T0)]), store, [0.0])  # default bound: nothing spills
    w.step(0)
    assert w.spool._directory is None
    s = ChunkSpool(None, 0)
    path = s.directory
    assert path.is_dir()
    del s
    gc.collect()
    assert not path.exists()  # a spool never closed (a test's worker) leaves nothing behind
