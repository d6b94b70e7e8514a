"""Ingest logic without a broker: camera ownership from registry records, backoff,
in-flight bounds and drop accounting, camera clock and sequence, chunk messages."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from operators.codec import GopChunk, decode_chunk_payload, split_gops
from operators.video import sample_video
from pipeline.ingest import owned_cameras, publish_cameras
from pipeline.ingest.backpressure import InflightLimiter, may_admit
from pipeline.ingest.metrics import IngestMetrics
from pipeline.ingest.registry import CameraRegistry, backoff_s
from pipeline.ingest.source import (
    CameraClock,
    CameraReader,
    RawChunk,
    build_chunk,
    next_seq,
    raw_from_gop,
    redact_url,
    source_url,
)
from pipeline.ingest.worker import IngestWorker
from pipeline.kafka import kafka_settings
from schemas.config import parse_camera, parse_config
from schemas.errors import ConfigError
from schemas.messages import decode_chunk_captured, encode_chunk
from tests.fakes import FakeProducer


def cam(cid: str, **kw: Any) -> Any:
    return parse_camera({"camera_id": cid, "url": f"/v/{cid}.mp4", **kw})


# ------------------------------------------------------------------ ownership

A, B, C, D = cam("a"), cam("b"), cam("c"), cam("d")


@pytest.mark.parametrize("partitions,records,expected", [
    ([], [], set()),
    ([0], [], set()),
    ([], [(0, "a", A)], set()),  # records of partitions not assigned are not ours
    ([0, 1], [(0, "a", A), (1, "b", B), (2, "d", D)], {"a", "b"}),
    ([0], [(0, "a", A), (0, "a", None)], set()),  # tombstone removes
    ([0], [(0, "a", A), (0, "a", None), (0, "a", A)], {"a"}),  # re-added after a tombstone
    ([0], [(0, "c", cam("c", enabled=False))], set()),  # disabled
    ([0], [(0, "c", C), (0, "c", cam("c", enabled=False))], set()),  # latest record wins
    ([0], [(0, "c", cam("c", enabled=False)), (0, "c", C)], {"c"}),
    ([0], [(0, "x", A)], set()),  # key and value disagree: ignored, never two owners
])
def test_owned_cameras_from_registry_records(partitions, records, expected):
    assert set(owned_cameras(partitions, records)) == expected


def test_registry_revoke_forgets_and_reassign_starts_empty():
    r = CameraRegistry()
    r.assign([0, 1])
    r.update(0, "a", A)
    r.update(1, "b", B)
    r.revoke([1])
    assert sorted(r.owned()) == ["a"] and r.partitions == [0]
    r.update(1, "b", B)  # a late message of a revoked partition
    assert sorted(r.owned()) == ["a"]
    r.assign([0])  # re-assigned: it is re-read from the beginning, so it starts empty
    assert r.owned() == {}


# ------------------------------------------------------------------ backoff

@pytest.mark.parametrize("attempt,expected", [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0),
                                              (50, 30.0), (10_000, 30.0)])
def test_backoff_doubles_and_caps(attempt, expected):
    assert backoff_s(attempt, 1.0, 30.0) == expected


def test_backoff_jitter_only_shortens_within_the_fraction():
    assert backoff_s(3, 1.0, 30.0, jitter=0.2, rand=lambda: 0.0) == 4.0
    assert backoff_s(3, 1.0, 30.0, jitter=0.2, rand=lambda: 1.0) == pytest.approx(3.2)
    for _ in range(100):
        assert 24.0 <= backoff_s(9, 1.0, 30.0, jitter=0.2) <= 30.0


# ------------------------------------------------------------------ in-flight bounds

@pytest.mark.parametrize("cam_n,total_n,ok", [(0, 0, True), (3, 3, True), (4, 4, False), (0, 64, False),
                                              (3, 63, True)])
def test_may_admit(cam_n, total_n, ok):
    assert may_admit(cam_n, total_n, per_camera=4, total=64) is ok


def test_limiter_bounds_per_camera_and_total_and_wakes_waiters():
    lim = InflightLimiter(per_camera=2, total=3)
    assert lim.try_acquire("a") and lim.try_acquire("a")
    assert not lim.try_acquire("a")  # per camera
    assert lim.try_acquire("b")
    assert not lim.try_acquire("c")  # total
    assert lim.inflight() == 3 and lim.inflight("a") == 2
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lim.acquire("a", lambda: False, timeout_s=5)))
    t.start()
    time.sleep(0.1)
    assert not got  # waiting
    lim.release("a")
    t.join(2)
    assert got == [True] and lim.inflight("a") == 2
    assert lim.acquire("a", lambda: True) is False  # cancelled: nothing acquired
    assert lim.acquire("a", lambda: False, timeout_s=0.05) is False
    with pytest.raises(RuntimeError):
        lim.release("zzz")


def test_worker_bound_is_never_below_its_camera_count():
    # 100 cameras against the default 64 dropped healthy chunks on their simultaneous bursts
    w = worker(max_inflight_chunks=3)
    w.registry.assign([0])
    for i in range(5):
        w.registry.update(0, f"c{i}", cam(f"c{i}"))
    w._reconcile()
    try:
        assert w.limiter.total == 5
        assert all(w.limiter.try_acquire(f"c{i}") for i in range(5))  # one chunk each, all at once
    finally:
        w._stop_cameras(w.owned_cameras(), join_s=2)
    lim = InflightLimiter(per_camera=1, total=1)
    lim.resize(4)
    assert lim.total == 4
    with pytest.raises(ValueError):
        lim.resize(0)


# ------------------------------------------------------------------ chunk messages

def test_chunk_message_from_a_gop_chunk_round_trips():
    src = str(sample_video("bikes.mp4"))
    g = next(iter(split_gops(src, 1.0)))
    assert isinstance(g, GopChunk)
    raw = raw_from_gop(g)
    assert raw.codec == "h264" and raw.payload is g.payload and len(raw.pts_ms) == len(g.pts_ms)
    clock = CameraClock(live=False)
    pts = clock.stamp(raw.pts_ms, raw.fps, now_ms=1_700_000_000_000.0)
    msg = build_chunk("cam-1", next_seq(-1, pts[0], 2000), raw, pts, dropped_frames=3)
    value, headers = encode_chunk(msg)
    back = decode_chunk_captured(value, headers)
    assert back == msg
    assert back.captured_at_ms == back.pts_ms[0] == 1_700_000_000_000
    assert back.chunk_seq == 1_700_000_000_000 // 2000 and back.dropped_frames == 3
    assert (back.width, back.height) == (640, 272)
    assert len(decode_chunk_payload("h264", back.payload)) == len(back.pts_ms)
    with pytest.raises(ValueError):
        build_chunk("cam-1", 0, raw, pts[:-1])
    assert build_chunk("cam-1", 0, raw, pts, policy_id="strict").policy_id == "strict"


# ------------------------------------------------------------------ clock and sequence

def test_file_passes_continue_forward_and_never_overlap():
    clock = CameraClock(live=False)
    first = clock.stamp([0, 40, 80], 25.0, now_ms=10_000.0)
    assert first == (10_000, 10_040, 10_080)
    clock.new_pass()  # the file starts over: its pts restart at 0, read faster than real time
    second = clock.stamp([0, 40], 25.0, now_ms=10_010.0)
    assert second == (10_120, 10_160)


def test_live_clock_anchors_on_arrival_and_reanchors_after_a_stall():
    clock = CameraClock(live=True, max_lag_ms=5000)
    # a 2 s chunk that just arrived: its last frame happened one frame ago
    a = clock.stamp([90_000 + i * 40 for i in range(50)], 25.0, now_ms=100_000.0)
    assert a[-1] == 100_000 - 40 and a[0] == 100_000 - 2000
    b = clock.stamp([92_000 + i * 40 for i in range(50)], 25.0, now_ms=102_050.0)
    assert b[0] == a[-1] + 40  # steady: camera spacing, not arrival jitter
    c = clock.stamp([94_000 + i * 40 for i in range(50)], 25.0, now_ms=130_000.0)  # stalled 26 s
    assert c[-1] == 130_000 - 40 and clock.reanchors == 1
    d = clock.stamp([0, 40], 25.0, now_ms=130_100.0)  # pts jumped back (camera reboot)
    assert d[0] >= c[-1] + 40 and clock.reanchors == 2


@pytest.mark.parametrize("prev,first_ms,expected", [(-1, 0, 0), (-1, 5000, 2), (2, 5000, 3), (7, 5000, 8),
                                                    (2, 9000, 4)])
def test_next_seq_is_time_derived_and_strictly_increasing(prev, first_ms, expected):
    assert next_seq(prev, first_ms, 2000) == expected


# ------------------------------------------------------------------ worker: drops and blocking

def worker(**ingest: Any) -> IngestWorker:
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"},
                        "ingest": {"max_inflight_per_camera": 2, **ingest}, "metrics": {"enabled": False}})
    return IngestWorker(cfg, threading.Event(), producer=FakeProducer(auto_ack=False))


def reader_for(w: IngestWorker, c: Any, chunks: list[RawChunk], clock_ms: list[float] | None = None) -> CameraReader:
    r = CameraReader(c, w._emit, chunk_seconds=1.0, jpeg_quality=90, reconnect_initial_s=0.01,
                     reconnect_max_s=0.01, on_event=w._on_camera_event,
                     now_ms=(lambda: clock_ms[0]) if clock_ms else None)
    r._chunks = lambda: iter(chunks)  # type: ignore[method-assign]
    w.readers[c.camera_id] = r
    return r


def raw(i: int, n: int = 10, payload: bytes = b"x") -> RawChunk:
    return RawChunk(payload, "h264", tuple(i * 1000 + k * 100 for k in range(n)), 10.0, 64, 48)


def dropped(w: IngestWorker, reason: str) -> float:
    return w.metrics.value("veil_ingest_dropped_frames_total", {"reason": reason})


def test_live_camera_drops_and_counts_what_it_cannot_deliver():
    w = worker()
    fake: FakeProducer = w.producer
    r = reader_for(w, cam("live", kind="rtsp", url="rtsp://127.0.0.1:1/x"), [raw(i) for i in range(5)])
    r._one_pass_or_connection()
    assert len(fake.sent) == 2  # the in-flight bound per camera; nothing acked yet
    assert r.chunks == 2 and r.dropped_total == 30 and r.dropped_frames == 30
    assert dropped(w, "backpressure") == 30
    assert w.metrics.value("veil_ingest_dropped_chunks_total", {"reason": "backpressure"}) == 3
    fake.ack()
    assert w.metrics.value("veil_ingest_frames_out_total") == 10
    assert w.metrics.value("veil_ingest_produced_bytes_total") == 1
    # the next chunk that gets out carries the count of frames dropped before it
    sent_msgs: list[Any] = []
    emit = r.emit
    r.emit = lambda rd, m: (sent_msgs.append(m), emit(rd, m))[1]  # type: ignore[method-assign]
    r._chunks = lambda: iter([raw(9)])  # type: ignore[method-assign]
    r._one_pass_or_connection()
    assert sent_msgs[0].dropped_frames == 30 and r.dropped_frames == 0 and r.chunks == 3


def test_live_camera_drops_when_the_producer_queue_stays_full():
    w = worker()
    w.producer.full = True
    r = reader_for(w, cam("live", kind="http", url="http://127.0.0.1:1/x"), [raw(0)])
    r._one_pass_or_connection()
    assert r.chunks == 0 and dropped(w, "producer_full") == 10
    assert w.limiter.inflight() == 0  # the slot was given back


def test_failed_delivery_is_counted_and_frees_the_slot():
    w = worker()
    r = reader_for(w, cam("live", kind="rtsp", url="rtsp://h/x"), [raw(0)])
    r._one_pass_or_connection()
    w.producer.ack(error="broker said no")
    assert dropped(w, "produce_failed") == 10 and w.failed_deliveries == 1 and w.limiter.inflight() == 0


def test_oversize_chunk_is_dropped_not_sent():
    w = worker()
    big = b"\0" * (w.cfg.kafka.message_max_bytes + 1)
    r = reader_for(w, cam("live", kind="rtsp", url="rtsp://h/x"), [raw(0, payload=big), raw(1)])
    r._one_pass_or_connection()
    assert dropped(w, "oversize") == 10 and len(w.producer.sent) == 1


def test_file_camera_waits_for_the_broker_instead_of_dropping():
    w = worker()
    fake: FakeProducer = w.producer
    r = reader_for(w, cam("file"), [raw(i) for i in range(4)])
    t = threading.Thread(target=r._one_pass_or_connection)
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and len(fake.sent) == 2  # blocked on the in-flight bound
    fake.ack()
    fake.ack()
    t.join(5)
    assert not t.is_alive()
    assert r.chunks == 4 and r.dropped_total == 0 and dropped(w, "backpressure") == 0


def test_a_stopped_cameras_chunks_are_refused():
    # after a revoke, a reader blocked in a read may still hand over a chunk: it must not
    # reach Kafka, since the camera may already stream from another worker
    w = worker()
    r = reader_for(w, cam("file"), [raw(0)])
    r.stop()
    assert not w._emit(r, build_chunk("file", 0, raw(0), raw(0).pts_ms))
    assert w.producer.sent == [] and dropped(w, "stopping") == 10


def test_realtime_file_camera_is_paced_by_its_own_timestamps():
    w = worker(max_inflight_per_camera=10)
    r = reader_for(w, cam("rt", realtime=True), [raw(0, n=3)])  # 3 frames at 10 fps = 0.3 s
    t0 = time.monotonic()
    r._one_pass_or_connection()
    assert time.monotonic() - t0 >= 0.25 and r.chunks == 1


def test_realtime_file_chunk_cut_by_a_stop_counts_its_past_frames():
    # the load test's accounting needs every frame a camera offered: a stop while a chunk
    # waits for its last frame loses the frames already "happened", counted as stopping
    w = worker(max_inflight_per_camera=10)
    r = reader_for(w, cam("rt", realtime=True), [raw(0, n=10)])  # 10 frames at 10 fps = 1 s
    threading.Timer(0.45, r.stop).start()
    r._one_pass_or_connection()
    assert r.chunks == 0 and w.producer.sent == []
    assert 3 <= dropped(w, "stopping") <= 6
    assert w.drop_counts() == {"stopping": dropped(w, "stopping")}


# ------------------------------------------------------------------ reader: reconnects and passes

def test_failing_camera_is_retried_with_backoff_and_reported():
    w = worker()
    c = cam("flaky", kind="rtsp", url="rtsp://127.0.0.1:1/x")
    r = CameraReader(c, w._emit, chunk_seconds=1.0, jpeg_quality=90, reconnect_initial_s=0.01,
                     reconnect_max_s=0.04, on_event=w._on_camera_event)
    calls: list[float] = []

    def chunks():
        calls.append(time.monotonic())
        if len(calls) >= 5:
            r.stop()
        raise ConnectionRefusedError("connection refused")

    r._chunks = chunks  # type: ignore[method-assign]
    r.run()
    assert r.reconnects == 4 and r.state == "stopped" and "refused" in (r.last_error or "")
    assert w.metrics.value("veil_ingest_reconnects_total") == 4
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[-1] >= 0.04 * 0.8 - 0.005  # capped, jittered backoff


def test_looping_file_keeps_sequence_and_timestamps_increasing_across_passes():
    w = worker(max_inflight_per_camera=100)
    c = cam("loop", loop=True)
    r = reader_for(w, c, [])
    passes = [0]
    msgs: list[Any] = []
    emit = r.emit

    def chunks():
        passes[0] += 1
        if passes[0] > 3:
            r.stop()
        return iter([raw(0), raw(1)])

    r._chunks = chunks  # type: ignore[method-assign]
    r.emit = lambda rd, m: (msgs.append(m), emit(rd, m))[1]  # type: ignore[method-assign]
    r.run()
    assert len(msgs) == 6 and r.reconnects == 0
    pts = [p for m in msgs for p in m.pts_ms]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    seqs = [m.chunk_seq for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(m.captured_at_ms == m.pts_ms[0] for m in msgs)


def test_non_looping_file_finishes_once():
    w = worker(max_inflight_per_camera=100)
    r = reader_for(w, cam("once"), [raw(0), raw(1)])
    r.run()
    assert r.state == "finished" and r.chunks == 2 and r.reconnects == 0


def test_live_stream_that_ends_is_reconnected():
    w = worker(max_inflight_per_camera=100)
    r = reader_for(w, cam("live", kind="http", url="http://h/x.ts"), [])
    n = [0]

    def chunks():
        n[0] += 1
        if n[0] == 2:
            r.stop()
        return iter([raw(0)])

    r._chunks = chunks  # type: ignore[method-assign]
    r.run()
    assert r.reconnects == 1 and "ended" in (r.last_error or "")


# ------------------------------------------------------------------ config, secrets, metrics

def test_credentials_come_from_env_and_never_show_in_logs(monkeypatch):
    monkeypatch.setenv("CAM_CRED", "user:secret")
    c = parse_camera({"camera_id": "x", "url": "rtsp://10.0.0.5/stream", "kind": "rtsp",
                      "credentials_env": "CAM_CRED"})
    url = source_url(c)
    assert url == "rtsp://user:secret@10.0.0.5/stream"
    assert redact_url(url) == "rtsp://***@10.0.0.5/stream"
    assert redact_url("/plain/file.mp4") == "/plain/file.mp4"


def test_kafka_security_settings(monkeypatch):
    plain = parse_config({})
    assert kafka_settings(plain.kafka) == {}
    sasl = parse_config({"kafka": {"security": {"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                                "username_env": "K_USER", "password_env": "K_PASS",
                                                "ca_file": "/ca.pem"}}})
    with pytest.raises(ConfigError, match="K_USER") as ei:
        kafka_settings(sasl.kafka)
    assert "sasl.username" in str(ei.value)
    monkeypatch.setenv("K_USER", "u")
    monkeypatch.setenv("K_PASS", "p")
    assert kafka_settings(sasl.kafka) == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                                          "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem"}


def test_ingest_metric_names():
    m = IngestMetrics()
    m.dropped("backpressure", 7)
    m.reconnects.inc()
    names = {s.name for fam in m.registry.collect() for s in fam.samples}
    for name in ("veil_ingest_frames_out_total", "veil_ingest_produced_bytes_total",
                 "veil_ingest_dropped_frames_total", "veil_ingest_dropped_chunks_total",
                 "veil_ingest_reconnects_total", "veil_ingest_cameras", "veil_ingest_cameras_failing",
                 "veil_ingest_step_seconds_bucket", "veil_ingest_registry_partitions"):
        assert name in names, name
    assert m.value("veil_ingest_dropped_frames_total", {"reason": "backpressure"}) == 7


def test_publish_cameras_is_exported_for_the_runner():
    import inspect

    assert list(inspect.signature(publish_cameras).parameters)[:2] == ["cfg", "cameras"]


def test_revoke_stops_the_cameras_of_those_partitions_before_returning():
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    class FakeConsumer:
        def __init__(self) -> None:
            self.assigned: set[int] = set()

        def incremental_assign(self, tps):
            self.assigned |= {tp.partition for tp in tps}

        def incremental_unassign(self, tps):
            self.assigned -= {tp.partition for tp in tps}

    w = worker()
    consumer = FakeConsumer()
    tps = [TopicPartition("cams", 0), TopicPartition("cams", 1)]
    w._on_assign(consumer, tps)
    assert [tp.offset for tp in tps] == [OFFSET_BEGINNING] * 2  # the registry is read whole
    assert consumer.assigned == {0, 1} and w._joined
    # cameras whose files do not exist: their readers retry in the background until stopped
    w.registry.update(0, "a", cam("a"))
    w.registry.update(1, "b", cam("b"))
    w._reconcile()
    assert w.owned_cameras() == ["a", "b"]
    b = w.readers["b"]
    w._on_revoke(consumer, [TopicPartition("cams", 1)])
    assert w.owned_cameras() == ["a"] and consumer.assigned == {0}
    assert not b.is_alive() and b.stop_event.is_set()  # stopped inside the callback
    # a changed record restarts the camera; enabled=false stops it
    a = w.readers["a"]
    w.registry.update(0, "a", cam("a", policy_id="strict"))
    w._reconcile()
    assert w.readers["a"] is not a and not a.is_alive()
    w.registry.update(0, "a", cam("a", enabled=False))
    w._reconcile()
    assert w.owned_cameras() == []


def test_registry_records_run_through_the_stage_runtime_from_a_list() -> None:
    """Ingest's registry reader on the stage runtime: records start cameras, a tombstone
    (null value) removes one, a bad record is counted; nothing is committed (read whole)."""
    from pipeline.ingest.worker import _RegistryHandler
    from pipeline.runtime import RuntimeSettings, TestingSource, run_until_idle, runtime_on_lists
    from pipeline.stage import StageKafka
    from schemas.messages import encode_camera

    w = worker()
    w.registry.assign([0])  # what the assignment callback does
    _k, va, _h = encode_camera(cam("a"))
    _k, vb, _h = encode_camera(cam("b"))
    src = TestingSource([(b"a", va, []), (b"b", vb, []), (b"a", None, []), (b"c", b"not json", [])], topic="cams")
    rt = runtime_on_lists(StageKafka(w.cfg, "ingest", w.metrics), _RegistryHandler(w),
                          RuntimeSettings(group="g", topics=("cams",), track_offsets=False, produces=False), src)
    w._joined = True
    rt.step()
    try:
        assert w.owned_cameras() == ["b"] and w.metrics.ready
        assert w.metrics.value("veil_ingest_errors_total", {"kind": "bad_camera_record"}) == 1
        assert w.metrics.value("veil_ingest_chunks_in_total", {"camera": "all"}) == 0  # records are no chunks
    finally:
        run_until_idle(rt)  # the drain stops the cameras
    assert w.owned_cameras() == [] and not src.commits and not w.metrics.ready
