"""Sink segments: keys, windows, assembly, manifest, remux; the sink loop with fakes."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest

from operators.codec import encode_h264_chunk
from pipeline.objectkeys import (
    SegmentError,
    format_ts,
    key_component,
    manifest_key,
    segment_key,
    segment_prefix,
)
from pipeline.sink.segments import (
    CompletedSegment,
    SegmentAssembler,
    manifest,
    plan_write,
    remux_segment,
    segment_metadata,
    segment_tags,
    window_of,
)
from schemas.config import parse_config
from schemas.messages import ChunkRedacted, decode_dlq, encode_chunk
from tests.fakes import FakeConsumer, FakeMsg, FakeProducer, InMemoryObjectStore

T0 = 1795378500000  # 2026-11-22T20:15:00.000Z
FPS = 25.0


def chunk(cam: str = "cam1", seq: int = 0, start_ms: int = T0, n: int = 5, payload: bytes = b"x",
          **kw: Any) -> ChunkRedacted:
    pts = tuple(start_ms + i * 40 for i in range(n))
    base = dict(camera_id=cam, chunk_seq=seq, pts_ms=pts, fps=FPS, width=64, height=48, codec="h264",
                captured_at_ms=start_ms, payload=payload, masks_per_class={"face": 1, "plate": 0},
                fail_closed_frames=(), models=({"id": "centerface", "version": "1.0"},),
                policy_id="city", policy_version=3)
    base.update(kw)
    return ChunkRedacted(**base)


_FRAMES_CACHE: dict[int, bytes] = {}


def h264_chunk(cam: str, seq: int, start_ms: int, n: int, **kw: Any) -> ChunkRedacted:
    rng = np.random.default_rng(seq)
    frames = rng.integers(0, 255, (n, 48, 64, 3), dtype=np.uint8)
    return chunk(cam, seq, start_ms, n, payload=encode_h264_chunk(frames, FPS), **kw)


# ---------------------------------------------------------------- keys and windows
@pytest.mark.parametrize("ms, text", [
    (0, "19700101T000000000Z"),
    (T0, "20261122T201500000Z"),
    (T0 + 1, "20261122T201500001Z"),
    (T0 + 59_999, "20261122T201559999Z"),
])
def test_format_ts(ms: int, text: str) -> None:
    assert format_ts(ms) == text


@pytest.mark.parametrize("cam", ["", "../etc/passwd", "a/b=c d", "x" * 65, "coll\n", ".hidden", "cam\x00"])
def test_key_component_refuses_what_cannot_be_a_key(cam: str) -> None:
    with pytest.raises(SegmentError, match="not a valid id|expected a string"):
        key_component(cam)


def test_key_component_never_merges_two_cameras() -> None:
    # issue 12 item 3: "coll.." and "coll" once shared camera=coll/ and one camera's segments
    # were skipped as replays
    assert key_component("cam-1.a_b") == "cam-1.a_b"
    assert segment_prefix("coll..", T0) != segment_prefix("coll", T0)
    assert segment_prefix("coll..", T0).startswith("camera=coll../")


@pytest.mark.parametrize("ms", [253402300800000, 10**18, -(10**18)])
def test_timestamps_out_of_range_are_a_segment_error(ms: int) -> None:
    # issue 12 item 2: datetime.fromtimestamp of year 10000 crashed the sink in its error path
    with pytest.raises(SegmentError, match="outside the representable"):
        format_ts(ms)
    with pytest.raises(SegmentError):
        segment_key("cam", ms, ms + 60_000)


def test_segment_key_is_deterministic_and_formatted() -> None:
    start, end = window_of(T0 + 12_345)
    key = segment_key("cam1", start, end)
    assert key == "camera=cam1/date=2026-11-22/hour=20/20261122T201500000Z_20261122T201600000Z.mp4"
    assert segment_key("cam1", start, end) == key
    assert manifest_key(key).endswith("20261122T201600000Z.json")
    assert segment_key("cam1", start, end, part=7).endswith("Z-p7.mp4")


@pytest.mark.parametrize("ts, date, hour", [
    (1795391999999, "2026-11-22", "23"),  # last ms of the day
    (1795392000000, "2026-11-23", "00"),  # first ms of the next day
    (1795381199999, "2026-11-22", "20"),  # last ms of the hour
    (1795381200000, "2026-11-22", "21"),
])
def test_keys_across_hour_and_date_boundaries(ts: int, date: str, hour: str) -> None:
    start, end = window_of(ts, 60)
    key = segment_key("c", start, end)
    assert f"/date={date}/hour={hour}/" in key


def test_window_crossing_midnight_is_filed_under_its_start() -> None:
    start, end = window_of(1795391999999, 3600)  # 23:00-00:00 window
    assert format_ts(end) == "20261123T000000000Z"
    assert "/date=2026-11-22/hour=23/" in segment_key("c", start, end)


@pytest.mark.parametrize("ts, seconds, window", [
    (0, 60, (0, 60_000)),
    (59_999, 60, (0, 60_000)),
    (60_000, 60, (60_000, 120_000)),
    (T0 + 1500, 2, (T0, T0 + 2000)),
    (T0 + 1500, 0.5, (T0 + 1500, T0 + 2000)),
])
def test_window_assignment(ts: int, seconds: float, window: tuple[int, int]) -> None:
    assert window_of(ts, seconds) == window


def test_window_rejects_zero_length() -> None:
    with pytest.raises(ValueError):
        window_of(T0, 0)


# ---------------------------------------------------------------- assembly
def test_assembler_empty() -> None:
    a = SegmentAssembler(60)
    assert a.flush_all() == []
    assert a.flush_idle(100.0, 1.0) == []
    assert a.revoke([("t", 0)]) == []


def test_assembler_completes_on_later_window_per_camera() -> None:
    a = SegmentAssembler(60)
    assert a.add(chunk("a", 0, T0), ("t", 0, 10)) == []
    assert a.add(chunk("b", 0, T0 + 1000), ("t", 1, 20)) == []
    assert a.add(chunk("a", 1, T0 + 30_000), ("t", 0, 11)) == []
    done = a.add(chunk("a", 2, T0 + 60_000), ("t", 0, 12))  # next window of camera a only
    assert len(done) == 1
    seg = done[0]
    assert (seg.camera_id, seg.start_ms, seg.end_ms) == ("a", T0, T0 + 60_000)
    assert seg.chunk_seqs == [0, 1] and seg.sources == [("t", 0, 10), ("t", 0, 11)]
    assert seg.frames == 10
    assert seg.masks_per_class == {"face": 2, "plate": 0}
    assert set(a.open) == {"a", "b"}


def test_chunk_straddling_a_boundary_belongs_to_its_first_frame_window() -> None:
    a = SegmentAssembler(60)
    a.add(chunk("a", 0, T0 + 59_900, n=10), ("t", 0, 1))  # runs 40 ms x 10 past the minute
    (seg,) = a.flush_all()
    assert seg.start_ms == T0 and seg.last_frame_ms > seg.end_ms


def test_assembler_idle_flush_and_flush_all() -> None:
    a = SegmentAssembler(60)
    a.add(chunk("a", 0), ("t", 0, 1), now=100.0)
    a.add(chunk("b", 0), ("t", 0, 2), now=105.0)
    assert a.flush_idle(104.0, 5.0) == []
    (seg,) = a.flush_idle(105.0, 5.0)
    assert seg.camera_id == "a"
    assert [s.camera_id for s in a.flush_all()] == ["b"]
    assert a.open == {}


def test_assembler_revoke_drops_only_lost_partitions() -> None:
    a = SegmentAssembler(60)
    a.add(chunk("a", 0), ("t", 0, 1))
    a.add(chunk("b", 0), ("t", 1, 1))
    dropped = a.revoke([("t", 1)])
    assert [s.camera_id for s in dropped] == ["b"]
    assert list(a.open) == ["a"]


def test_assembler_rejects_chunk_without_frames() -> None:
    with pytest.raises(SegmentError):
        SegmentAssembler().add(chunk(n=0), ("t", 0, 1))


def test_completed_segment_aggregates() -> None:
    seg = CompletedSegment("a", T0, T0 + 60_000)
    seg.chunks = [chunk("a", 0, fail_closed_frames=(0, 2)),
                  chunk("a", 1, T0 + 200, models=({"id": "yunet", "sha256": "ab" * 32},), policy_version=4)]
    assert seg.fail_closed_frames == 2
    assert seg.fail_closed_pts_ms == [T0, T0 + 80]
    assert [m["id"] for m in seg.models] == ["centerface", "yunet"]
    assert seg.policies == [("city", "3"), ("city", "4")]


# ---------------------------------------------------------------- replay safety
@pytest.mark.parametrize("stored, new, action", [
    (None, [0, 1], "write"),
    ([0, 1, 2], [0, 1, 2], "skip"),  # crash between upload and commit
    ([0, 1, 2], [1, 2], "skip"),  # replay of a window's tail
    ([1, 2], [0, 1, 2], "write"),  # now the whole window
    ([0, 1], [5, 6], "part"),  # late data after an idle flush: never overwrite
])
def test_plan_write(stored: list[int] | None, new: list[int], action: str) -> None:
    seg = CompletedSegment("a", T0, T0 + 60_000, chunks=[chunk("a", s) for s in new])
    m = None if stored is None else {"chunk_seqs": stored}
    assert plan_write(m, seg) == action


# ---------------------------------------------------------------- manifest, tags
def test_manifest_sha_matches_and_is_json() -> None:
    chunks = [h264_chunk("cam1", 0, T0, 6), h264_chunk("cam1", 1, T0 + 240, 6)]
    seg = CompletedSegment("cam1", T0, T0 + 60_000, chunks=chunks, sources=[("t", 0, 3), ("t", 0, 4)])
    mp4 = remux_segment(chunks)
    sha = hashlib.sha256(mp4).hexdigest()
    m = json.loads(json.dumps(manifest(seg, sha, stored_at_ms=T0 + 5000)))
    assert m["sha256"] == hashlib.sha256(mp4).hexdigest()
    assert m["camera_id"] == "cam1" and m["frames"] == 12 and m["chunk_seqs"] == [0, 1]
    assert m["start"] == "20261122T201500000Z" and m["end"] == "20261122T201600000Z"
    assert m["masks_per_class"] == {"face": 2, "plate": 0}
    assert m["policy_id"] == "city" and m["policy_version"] == "3"
    assert m["models"] == [{"id": "centerface", "version": "1.0"}]
    assert m["source_offsets"] == [{"topic": "t", "partition": 0, "offset": 3},
                                   {"topic": "t", "partition": 0, "offset": 4}]
    assert m["schema_version"] == 1 and m["latency_ms"] == 5000
    assert m["key"] == seg.key()


def test_segment_models_are_distinct_in_first_seen_order_and_a_repeated_list_is_read_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk of a segment names the same models (the rule): each distinct list is keyed
    once, not every model of every chunk (50 ``json.dumps`` for 10 chunks of 5 models; the
    property is read for the manifest, the tags and the metadata of every segment)."""
    from pipeline.sink import segments as seg_mod

    a = tuple({"id": f"m{i}", "version": "1"} for i in range(5))
    b = ({"id": "m9", "version": "2"}, {"id": "m0", "version": "1"})
    chunks = [chunk("c", i, T0 + i * 400, models=tuple(dict(m) for m in (a if i != 6 else b))) for i in range(10)]
    seg = CompletedSegment("c", T0, T0 + 60_000, chunks=chunks)
    dumps: list[int] = []
    real = seg_mod.json.dumps

    def counting(*args: Any, **kw: Any) -> str:
        dumps.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(seg_mod.json, "dumps", counting)
    got = seg.models
    assert [m["id"] for m in got] == ["m0", "m1", "m2", "m3", "m4", "m9"]
    assert len(dumps) == 5 + 2 + 5  # a, then b (chunk 6), then a again (chunk 7), then a repeats


def test_tags_and_metadata_respect_s3_limits() -> None:
    masks = {f"cls{i}": i for i in range(12)}
    seg = CompletedSegment("cam/1", T0, T0 + 60_000, chunks=[chunk("cam/1", 0, masks_per_class=masks)])
    tags = segment_tags(seg)
    assert len(tags) <= 10
    assert tags["camera"] == "cam/1" and tags["policy"] == "city:3" and tags["frames"] == "5"
    assert tags["models"] == "centerface@1.0"
    meta = segment_metadata(seg, "ab")
    assert meta["masks-per-class"].startswith("cls0=0,cls1=1")
    assert all(v.isascii() for v in meta.values())


# ---------------------------------------------------------------- remux
def _decode(mp4: bytes) -> list[Any]:
    with av.open(io.BytesIO(mp4)) as c:
        return [f.pts for f in c.decode(video=0)]


def test_remux_real_h264_chunks_keeps_frames_and_timestamps() -> None:
    chunks = [h264_chunk("c", 0, T0, 10), h264_chunk("c", 1, T0 + 400, 11), h264_chunk("c", 2, T0 + 2000, 7)]
    mp4 = remux_segment(chunks)
    assert mp4[4:8] == b"ftyp"
    with av.open(io.BytesIO(mp4)) as c:
        assert c.format.name.startswith("mov,mp4")
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264" and (vs.width, vs.height) == (64, 48)
        tb = vs.time_base
        times = [float(f.pts * tb) for f in c.decode(vs)]
    assert len(times) == 28
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    # camera timestamps survive (relative to the first frame), including the gap before chunk 2
    expected = [(t - T0) / 1000 for ch in chunks for t in ch.pts_ms]
    assert times == pytest.approx(expected, abs=1e-4)


def test_remux_duplicate_camera_timestamps_stay_monotonic() -> None:
    c0 = h264_chunk("c", 0, T0, 4)
    c1 = replace(h264_chunk("c", 1, T0, 4), pts_ms=(T0 + 120,) * 4)  # a camera clock that stalls
    pts = _decode(remux_segment([c0, c1]))
    assert len(pts) == 8 and all(b > a for a, b in zip(pts, pts[1:], strict=False))


@pytest.mark.parametrize("payload", [b"", b"garbage" * 10, b"\x00\x00\x00\x01" + b"\xff" * 50])
def test_remux_bad_payload_raises(payload: bytes) -> None:
    with pytest.raises(SegmentError):
        remux_segment([chunk(payload=payload)])


def test_remux_frame_count_mismatch_raises() -> None:
    good = h264_chunk("c", 0, T0, 5)
    with pytest.raises(SegmentError, match="packets"):
        remux_segment([replace(good, pts_ms=good.pts_ms[:3])])


def test_remux_probes_only_the_first_access_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening every payload as a container decoded frames to probe it (~1.1 ms a one-frame
    320x180 chunk, the sink's biggest per-chunk cost): now the parser splits packets and only
    the segment's first access unit is probed, for the output stream's parameters."""
    from pipeline.sink import segments as seg_mod

    probed: list[int] = []
    real = seg_mod._open_payload

    def counting(payload: bytes) -> Any:
        probed.append(len(payload))
        return real(payload)

    monkeypatch.setattr(seg_mod, "_open_payload", counting)
    chunks = [h264_chunk("c", i, T0 + i * 400, 4) for i in range(5)]
    mp4 = remux_segment(chunks)
    assert len(probed) == 1 and probed[0] < len(chunks[0].payload) // 2  # one access unit of one chunk
    times = _decode(mp4)
    assert len(times) == 20 and all(b > a for a, b in zip(times, times[1:], strict=False))


def test_stream_templates_probe_each_kind_of_stream_once_and_remux_the_same_bytes() -> None:
    """A sink keeps one :class:`StreamTemplates`: segments of streams with the same SPS/PPS (one
    encoder, one size) share one probe; another size is probed on its own; the least recently
    used template is closed past ``size``; the MP4 is byte for byte what a probe gives."""
    from pipeline.sink.segments import StreamTemplates

    templates = StreamTemplates(size=1)
    segs = [[h264_chunk(f"c{k}", 10 * k + i, T0 + i * 400, 3) for i in range(2)] for k in range(3)]
    for seg in segs:
        assert remux_segment(seg, templates) == remux_segment(seg)
    assert templates.probes == 1
    other = [chunk("d", 0, T0, 2, payload=encode_h264_chunk(np.zeros((2, 32, 48, 3), np.uint8), FPS))]
    first = next(iter(templates._open.values()))[0]
    assert remux_segment(other, templates) == remux_segment(other)
    assert templates.probes == 2 and len(templates._open) == 1
    with pytest.raises(Exception):  # noqa: B017 - the evicted template's input was closed
        list(first.demux())
    assert remux_segment(segs[0], templates) == remux_segment(segs[0]) and templates.probes == 3
    templates.close()
    with pytest.raises(ValueError):
        StreamTemplates(size=0)


@pytest.mark.parametrize("payload", [b"garbage" * 10, b"\x00\x00\x00\x01" + b"\xff" * 50, b"\x00\x00\x01\x41" + b"\x9a" * 80])
def test_remux_bad_payload_after_a_good_chunk_raises(payload: bytes) -> None:
    """Only the first chunk is probed: a later chunk that is not an Annex-B stream opening with
    a keyframe and its SPS/PPS (the third payload: a lone non-IDR slice) still fails the remux."""
    good = h264_chunk("c", 0, T0, 4)
    with pytest.raises(SegmentError, match="chunk_seq=1"):
        remux_segment([good, chunk("c", 1, T0 + 400, 1, payload=payload)])


def test_remux_nothing_raises() -> None:
    with pytest.raises(SegmentError):
        remux_segment([])


# ---------------------------------------------------------------- the sink loop, with fakes
def _cfg(segment_seconds: float = 60, idle: float = 5) -> Any:
    return parse_config({"sink": {"segment_seconds": segment_seconds, "idle_flush_s": idle},
                         "metrics": {"enabled": False}})


def _msgs(chunks: list[ChunkRedacted], topic: str = "veil.chunks.redacted") -> list[FakeMsg]:
    out = []
    for i, c in enumerate(chunks):
        value, headers = encode_chunk(c)
        out.append(FakeMsg(topic, 0, i, c.camera_id.encode(), value, headers))
    return out


def _worker(msgs: list[FakeMsg], store: InMemoryObjectStore, clock: list[float], **cfg: Any) -> Any:
    from pipeline.governance.segmentplugins import sink_plugins
    from pipeline.sink.worker import SinkWorker

    holder: dict[str, FakeConsumer] = {}

    def factory(on_revoke: Any) -> FakeConsumer:
        holder["c"] = FakeConsumer(msgs, on_revoke)
        return holder["c"]

    config = _cfg(**cfg)
    # the plug-ins a deployed sink runs (retention, chain, notice, audit), without the audit bucket
    plugins = sink_plugins(config, None, {}, notices=lambda _cam: {})
    w = SinkWorker(config, store, factory, producer_factory=FakeProducer, clock=lambda: clock[0], plugins=plugins)
    w.producer, w.consumer = FakeProducer(), factory(w.runtime.on_revoke)
    return w


def test_sink_commits_only_after_segments_are_stored() -> None:
    store = InMemoryObjectStore()
    chunks = [h264_chunk("a", 0, T0, 5), h264_chunk("a", 1, T0 + 200, 5), h264_chunk("a", 2, T0 + 60_000, 5)]
    clock = [0.0]
    w = _worker(_msgs(chunks), store, clock)
    w.step(0)
    # window 1 stored (offsets 0, 1) -> commit 2; chunk 2 is open: not committed
    assert w.consumer.committed() == {("veil.chunks.redacted", 0): 2}
    keys = sorted(store.list_objects())
    assert keys == ["camera=a/date=2026-11-22/hour=20/20261122T201500000Z_20261122T201600000Z.json",
                    "camera=a/date=2026-11-22/hour=20/20261122T201500000Z_20261122T201600000Z.mp4"]
    m = json.loads(store.get_object(keys[0]))
    assert m["sha256"] == hashlib.sha256(store.get_object(keys[1])).hexdigest()
    assert store.get_tags(keys[1])["camera"] == "a"
    # idle: flushed after segment_seconds + grace
    clock[0] = 64.0
    w.step(0)
    assert len(list(store.list_objects())) == 2
    clock[0] = 65.0
    w.step(0)
    assert len(list(store.list_objects())) == 4
    assert w.consumer.committed() == {("veil.chunks.redacted", 0): 3}


def test_sink_replay_rewrites_nothing_new_and_tail_replay_skips() -> None:
    store = InMemoryObjectStore()
    chunks = [h264_chunk("a", i, T0 + i * 200, 5) for i in range(3)]
    w = _worker(_msgs(chunks), store, [0.0])
    w.step(0)
    w.shutdown()
    assert len(store.puts) == 2
    # a replay of the tail (offsets 1..2 only) must not overwrite the full segment
    w2 = _worker(_msgs(chunks)[1:], store, [0.0])
    w2.step(0)
    w2.shutdown()
    assert len(store.puts) == 2
    assert w2.consumer.committed() == {("veil.chunks.redacted", 0): 3}
    # a full replay rewrites nothing either (same chunks, same key)
    w3 = _worker(_msgs(chunks), store, [0.0])
    w3.step(0)
    w3.shutdown()
    assert len(store.puts) == 2 and len(list(store.list_objects())) == 2


def test_sink_bad_messages_go_to_dlq_and_are_committed() -> None:
    store = InMemoryObjectStore()
    good = h264_chunk("a", 0, T0, 5)
    bad_remux = chunk("a", 1, T0 + 200, payload=b"not h264 at all")
    msgs = _msgs([good, bad_remux])
    msgs.append(FakeMsg("veil.chunks.redacted", 0, 2, b"a", b"junk", [("veil-meta", b"{")]))
    w = _worker(msgs, store, [0.0])
    w.step(0)
    w.shutdown()
    dlq = [(t, v, k, h) for t, v, k, h in w.producer.sent if t == "veil.dlq"]
    reasons = sorted(decode_dlq(v, h).reason for _t, v, _k, h in dlq)
    assert reasons == ["invalid_message", "remux_failed"]
    # the rest is the audit trail: one SegmentStored event for the one stored segment
    audit = [(t, dict(h)) for t, _v, _k, h in w.producer.sent if t != "veil.dlq"]
    assert [(t, h["veil-type"]) for t, h in audit] == [("veil.audit", b"SegmentStored")]
    assert w.consumer.committed() == {("veil.chunks.redacted", 0): 3}
    m = json.loads(store.get_object(next(k for k in store.list_objects() if k.endswith(".json"))))
    assert m["chunk_seqs"] == [0] and m["frames"] == 5
    assert w.metrics.value("veil_sink_dlq_total", {"reason": "invalid_message"}) == 1


def test_sink_store_outage_pauses_and_retries_without_committing() -> None:
    store = InMemoryObjectStore(fail_puts=1)
    chunks = [h264_chunk("a", 0, T0, 5), h264_chunk("a", 1, T0 + 60_000, 5)]
    clock = [0.0]
    w = _worker(_msgs(chunks), store, clock)
    w.step(0)
    assert w.pending and w.consumer.paused and w.consumer.committed() == {}
    clock[0] = 1.0
    w.step(0)
    assert not w.pending and not w.consumer.paused
    assert w.consumer.committed() == {("veil.chunks.redacted", 0): 1}


def test_sink_revoke_drops_open_segments_uncommitted() -> None:
    store = InMemoryObjectStore()
    w = _worker(_msgs([h264_chunk("a", 0, T0, 5)]), store, [0.0])
    w.step(0)
    assert "a" in w.assembler.open
    w.runtime.on_revoke([("veil.chunks.redacted", 0)])
    assert w.assembler.open == {} and w.tracker.inflight() == 0
    w.shutdown()
    assert list(store.list_objects()) == [] and w.consumer.committed() == {}


def test_sink_revoke_of_pending_partition_resumes_the_others() -> None:
    store = InMemoryObjectStore(fail_puts=1)
    msgs = _msgs([h264_chunk("a", 0, T0, 5), h264_chunk("a", 1, T0 + 60_000, 5)])
    msgs.append(FakeMsg("veil.chunks.redacted", 1, 0, b"b", *encode_chunk(h264_chunk("b", 0, T0, 5))))
    w = _worker(msgs, store, [0.0])
    w.step(0)
    assert len(w.pending) == 1 and w.consumer.paused == w.consumer.assigned
    w.consumer.assigned.discard(("veil.chunks.redacted", 0))
    w.consumer.paused.discard(("veil.chunks.redacted", 0))
    w.runtime.on_revoke([("veil.chunks.redacted", 0)])
    assert w.pending == []
    w.step(0)
    assert w.consumer.paused == set()


# ---------------------------------------------------------------- issue 12: poison isolation


def test_sink_refuses_a_key_that_is_not_the_meta_camera() -> None:
    store = InMemoryObjectStore()
    good = h264_chunk("a", 0, T0, 5)
    value, headers = encode_chunk(h264_chunk("a", 1, T0 + 200, 5))
    msgs = _msgs([good]) + [FakeMsg("veil.chunks.redacted", 0, 1, b"b", value, headers)]
    w = _worker(msgs, store, [0.0])
    w.step(0)
    w.shutdown()
    reasons = [decode_dlq(v, h).reason for t, v, _k, h in w.producer.sent if t == "veil.dlq"]
    assert reasons == ["key_mismatch"]
    assert all(k.startswith("camera=a/") for k in store.list_objects())
    assert w.consumer.committed() == {("veil.chunks.redacted", 0): 2}


def test_sink_isolates_a_poison_segment_commits_and_keeps_going(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 2: a chunk whose data makes storing fail (here: its key cannot be
    formatted) crash-looped the sink, holding every other camera's offsets."""
    import pipeline.sink.writer as sw

    store = InMemoryObjectStore()
    chunks = [h264_chunk("a", 0, T0, 5), h264_chunk("b", 0, T0, 5), h264_chunk("b", 1, T0 + 60_000, 5)]
    w = _worker(_msgs(chunks), store, [0.0])
    real = sw.manifest

    def poisoned(seg: Any, *a: Any, **kw: Any) -> Any:
        if seg.camera_id == "a":
            raise ValueError("year 10000 is out of range")
        return real(seg, *a, **kw)

    monkeypatch.setattr(sw, "manifest", poisoned)
    w.step(0)
    w.shutdown()
    dlq = [decode_dlq(v, h) for t, v, _k, h in w.producer.sent if t == "veil.dlq"]
    assert [(d.reason, d.source_offset) for d in dlq] == [("store_failed", 0)]
    assert "year 10000" in dlq[0].error
    assert not w.pending  # never retried forever
    assert w.consumer.committed() == {("veil.chunks.redacted", 0): 3}
    manifests = [k for k in store.list_objects() if k.endswith(".json")]
    assert manifests and all(k.startswith("camera=b/") for k in manifests)


def test_sink_dead_letters_a_chunk_whose_time_has_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # the schema refuses year 10000 now; the sink still checks what its key is made of
    import schemas.messages as sm

    store = InMemoryObjectStore()
    far = 253402300800000  # 10000-01-01
    bad = chunk("a", 1, far, payload=h264_chunk("a", 1, T0, 5).payload)
    monkeypatch.setattr(sm, "_check", lambda *a, **k: None)  # let the sender's lie through encode
    monkeypatch.setattr(sm, "problems", lambda *a, **k: [])   # ... and through decode
    msgs = _msgs([h264_chunk("a", 0, T0, 5), replace(bad, pts_ms=tuple(far + 40 * i for i in range(5)))])
    w = _worker(msgs, store, [0.0])
    w.step(0)
    w.shutdown()
    reasons = [decode_dlq(v, h).reason for t, v, _k, h in w.producer.sent if t == "veil.dlq"]
    assert reasons == ["invalid_chunk"]
    assert w.consumer.committed() == {("veil.chunks.redacted", 0): 2}


def test_sink_backlog_counts_unread_and_unstored_chunks_not_open_segments() -> None:
    """The autoscaling signal: an open segment is not backlog; unread chunks and closed segments
    whose upload has not succeeded are."""
    store = InMemoryObjectStore()
    chunks = [h264_chunk("a", 0, T0, 5), h264_chunk("a", 1, T0 + 200, 5), h264_chunk("b", 0, T0, 5)]
    w = _worker(_msgs(chunks), store, [0.0])
    w.consumer.lag = lambda: {("veil.chunks.redacted", 0): 7}
    w.step(0)
    w.log_status()

    def backlog(state: str) -> float:
        return w.metrics.value("veil_sink_backlog_chunks", {"state": state})

    assert (backlog("unread"), backlog("pending_upload"), backlog("open")) == (7, 0, 3)
    w.pending.append(SimpleNamespace(segment=SimpleNamespace(chunks=[1, 2, 3, 4])))
    w.log_status()
    assert backlog("pending_upload") == 4


def test_metrics_and_probes_bind_where_configured_and_expose_no_footage_or_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12: the HTTP endpoints of a worker that has handled real chunks (and whose
    environment holds credentials) serve counters only, on the configured address."""
    import urllib.error
    import urllib.request

    from pipeline.metrics import serve_config

    secret = "s3cr3t-Pa55word"
    monkeypatch.setenv("VEIL_S3_SECRET_KEY", secret)
    monkeypatch.setenv("CAM_CREDS", f"admin:{secret}")
    store = InMemoryObjectStore()
    chunks = [h264_chunk("cam-1", i, T0 + i * 200, 5) for i in range(3)]
    w = _worker(_msgs(chunks), store, [0.0])
    w.step(0)
    w.shutdown()
    cfg = parse_config({"metrics": {"enabled": True, "host": "127.0.0.1", "port": 0}}).metrics
    server = serve_config(w.metrics, cfg)
    assert server is not None
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"  # bound where configured, not on every interface
        bodies = {}
        for path in ("/metrics", "/healthz", "/readyz", "/", "/metrics/../../etc/passwd", "/debug"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:  # noqa: S310
                    bodies[path] = (r.status, r.read())
            except urllib.error.HTTPError as exc:
                bodies[path] = (exc.code, exc.read())
        assert bodies["/metrics"][0] == 200 and b"veil_sink_chunks_in_total" in bodies["/metrics"][1]
        assert bodies["/"][0] == 404 and bodies["/debug"][0] == 404
        payloads = [c.payload[i:i + 16] for c in chunks for i in range(0, len(c.payload) - 16, 64)]
        for _path, (_code, body) in bodies.items():
            assert secret.encode() not in body and b"admin" not in body and b"rtsp://" not in body
            assert not any(p in body for p in payloads)  # no footage bytes
            assert len(body) < 64 * 1024
    finally:
        server.shutdown()


def test_s3_errors_about_the_object_are_poison_the_rest_are_outages() -> None:
    from minio.error import S3Error

    from pipeline.sink.worker import is_poison

    def err(code: str) -> S3Error:
        return S3Error(None, code, "m", "r", "req", "host")  # type: ignore[arg-type]

    # issue 12 item 3: S3 refusing an object's metadata stalled every camera (paused, retried forever)
    assert is_poison(err("InvalidArgument")) and is_poison(err("MetadataTooLarge")) and is_poison(ValueError())
    assert not is_poison(err("SlowDown")) and not is_poison(err("AccessDenied"))
    assert not is_poison(ConnectionError()) and not is_poison(TimeoutError())


def test_the_sink_handler_runs_from_a_list_in_to_objects_and_dlq_records_out() -> None:
    """The whole sink on the stage runtime with TestingSource / TestingSink: an outage is a
    Retry (paused, retried, never dead-lettered), bad input and a bad chunk are DeadLetters,
    and every offset is committed once its segment is stored or its DLQ record acked."""
    from pipeline.runtime import TestingSink, TestingSource, run_until_idle

    store = InMemoryObjectStore(fail_puts=1)
    chunks = [h264_chunk("a", 0, T0, 5), chunk("a", 1, T0 + 200, payload=b"not h264"), h264_chunk("b", 0, T0, 5)]
    items = [(c.camera_id.encode(), *encode_chunk(c)) for c in chunks] + [(b"a", b"junk", [])]
    clock = [0.0]
    w = _worker([], store, clock)
    source, sink = TestingSource(items, topic="veil.chunks.redacted"), TestingSink()
    w.consumer, w.producer = source, sink
    source.on_revoke = w.runtime.on_revoke
    w.step(0)  # both segments open
    clock[0] = 70.0  # past segment_seconds + idle_flush_s: both close
    w.step(0)
    assert source.paused and not source.committed() and len(w.pending) == 1  # the store was down for one
    clock[0] = 100.0
    w.step(0)
    assert not w.pending and not source.paused  # stored on the retry: reading again
    run_until_idle(w.runtime)
    assert sorted(sink.dlq_reasons("veil.dlq")) == ["invalid_message", "remux_failed"]
    mp4 = sorted(k.split("/")[0] for k in store.list_objects() if k.endswith(".mp4"))
    assert mp4 == ["camera=a", "camera=b"]
    assert source.committed() == {("veil.chunks.redacted", 0): 4}


def test_sink_checks_a_windows_key_once_and_a_chunk_ending_past_its_window_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 13: the object key of a camera's window is checked for its first chunk; later
    chunks that end inside the window skip it, one that ends past it is checked (and refused
    when its last time has no key), and the memory of checked windows is bounded."""
    import pipeline.sink.worker as sw
    import schemas.messages as sm

    checked: list[tuple[str, int]] = []
    real = sw.segment_key

    def counting(camera_id: str, start_ms: int, end_ms: int, *a: Any, **kw: Any) -> str:
        checked.append((camera_id, start_ms))
        return real(camera_id, start_ms, end_ms, *a, **kw)

    monkeypatch.setattr(sw, "segment_key", counting)
    monkeypatch.setattr(sm, "_check", lambda *a, **k: None)  # let the sender's lie through encode
    monkeypatch.setattr(sm, "problems", lambda *a, **k: [])   # ... and through decode
    payload = h264_chunk("a", 0, T0, 1).payload
    far = 253402300800000  # 10000-01-01: no key
    msgs = _msgs([chunk("a", 0, T0, 1, payload=payload), chunk("a", 1, T0 + 2000, 1, payload=payload),
                  chunk("a", 2, T0 + 4000, 1, payload=payload),
                  replace(chunk("a", 3, T0 + 6000, 2, payload=payload), pts_ms=(T0 + 6000, far))])
    w = _worker(msgs, InMemoryObjectStore(), [0.0])
    w.step(0)
    assert checked == [("a", T0), ("a", T0)]  # the first chunk, and the one that ends past the window
    reasons = [decode_dlq(v, h).reason for t, v, _k, h in w.producer.sent if t == "veil.dlq"]
    assert reasons == ["invalid_chunk"]

    monkeypatch.setattr(sw, "KEYABLE_MAX", 3)
    w = _worker(_msgs([chunk(f"c{i}", 0, T0, 1, payload=payload) for i in range(10)]), InMemoryObjectStore(), [0.0])
    w.step(0)
    assert len(w._keyable) <= 3


def test_nal_scan_stops_once_a_keyframes_headers_and_idr_are_seen() -> None:
    """Session 13: the keyframe check scans only up to the IDR slice; the check's answer is the
    same (a missing SPS, PPS or IDR is still missing)."""
    from pipeline.sink.segments import _KEYFRAME_NALS, _nal_types

    sc = b"\x00\x00\x01"
    au = sc + b"\x67\x01" + sc + b"\x68\x02" + sc + b"\x65\x03\x04" + sc + b"\x01\x05"
    assert _nal_types(au) == {7, 8, 5, 1}
    assert _nal_types(au, _KEYFRAME_NALS) == {7, 8, 5}
    no_pps = sc + b"\x67\x01" + sc + b"\x65\x03" + sc + b"\x01\x05"
    assert not _KEYFRAME_NALS <= _nal_types(no_pps, _KEYFRAME_NALS)
    assert _nal_types(no_pps, _KEYFRAME_NALS) == _nal_types(no_pps)
