"""Ingest logic without a broker: registry ownership, backoff, drops, timestamps, sequence."""

from __future__ import annotations

import threading

import pytest

from pipeline.ingest.registry import CameraRegistry, backoff_s
from pipeline.ingest.source import CameraReader, RawChunk, redact_url, source_url
from pipeline.ingest.worker import IngestWorker
from schemas.config import parse_camera, parse_config


def cam(cid: str, **kw) -> object:
    return parse_camera({"camera_id": cid, "url": f"/v/{cid}.mp4", **kw})


def test_registry_owns_enabled_cameras_of_assigned_partitions():
    r = CameraRegistry()
    assert r.owned() == {}
    r.assign([0, 1])
    r.update(0, "a", cam("a"))
    r.update(1, "b", cam("b"))
    r.update(1, "c", cam("c", enabled=False))
    r.update(2, "d", cam("d"))  # not ours: ignored
    assert sorted(r.owned()) == ["a", "b"]
    r.update(0, "a", None)  # tombstone
    assert sorted(r.owned()) == ["b"]
    r.update(1, "c", cam("c"))  # re-enabled: latest record wins
    assert sorted(r.owned()) == ["b", "c"]
    r.revoke([1])
    assert r.owned() == {} and r.partitions == [0]


@pytest.mark.parametrize("attempt,expected", [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0),
                                              (50, 30.0)])
def test_backoff_doubles_and_caps(attempt, expected):
    assert backoff_s(attempt, 1.0, 30.0) == expected


def test_credentials_come_from_env_and_never_show_in_logs(monkeypatch):
    monkeypatch.setenv("CAM_CRED", "user:secret")
    c = parse_camera({"camera_id": "x", "url": "rtsp://10.0.0.5/stream", "kind": "rtsp",
                      "credentials_env": "CAM_CRED"})
    url = source_url(c)
    assert url == "rtsp://user:secret@10.0.0.5/stream"
    assert redact_url(url) == "rtsp://***@10.0.0.5/stream"


class FakeProducer:
    def __init__(self) -> None:
        self.sent = []

    def produce(self, topic, value, key, headers, on_done=None):
        self.sent.append((topic, key, on_done))

    def poll(self, _t=0):
        return 0


def worker(**ingest) -> IngestWorker:
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"},
                        "ingest": {"max_inflight_per_camera": 2, **ingest}, "metrics": {"enabled": False}})
    w = IngestWorker(cfg, threading.Event())
    w.producer = FakeProducer()  # never acks: the in-flight bound is reached
    return w


def reader_for(w: IngestWorker, c, chunks: list[RawChunk]) -> CameraReader:
    r = CameraReader(c, w._emit, chunk_seconds=1.0, jpeg_quality=90, reconnect_initial_s=0.01,
                     reconnect_max_s=0.01, on_event=lambda *_: None)
    r._chunks = lambda: iter(chunks)  # type: ignore[method-assign]
    w.readers[c.camera_id] = r
    return r


def raw(i: int, n: int = 10) -> RawChunk:
    return RawChunk(b"x", "h264", [i * 1000 + k * 100 for k in range(n)], 10.0, 64, 48)


def test_live_camera_drops_and_counts_what_it_cannot_deliver():
    w = worker()
    c = cam("live", kind="rtsp", url="rtsp://127.0.0.1:1/x")
    r = reader_for(w, c, [raw(i) for i in range(5)])
    r._one_pass_or_connection()
    assert len(w.producer.sent) == 2  # the in-flight bound per camera
    assert r.dropped_total == 30 and r.chunks == 2
    assert w.metrics.value("veil_ingest_dropped_frames_total", {"reason": "backpressure"}) == 30
    # once a chunk is acked, the next one carries the count of frames dropped before it
    from pipeline.kafka import Delivery

    w.producer.sent[0][2](Delivery(done=True))
    r._chunks = lambda: iter([raw(9)])  # type: ignore[method-assign]
    r._one_pass_or_connection()
    assert r.dropped_frames == 0 and r.chunks == 3


def test_timestamps_and_sequence_keep_increasing_across_passes():
    w = worker(max_inflight_per_camera=100)
    c = cam("file", loop=True)
    r = reader_for(w, c, [raw(0), raw(1)])
    msgs = []
    real = w._emit
    w_emit = lambda m, n: (msgs.append(m), real(m, n))[1]  # noqa: E731
    r.emit = w_emit
    r._one_pass_or_connection()
    r._chunks = lambda: iter([raw(0), raw(1)])  # type: ignore[method-assign]
    r._one_pass_or_connection()  # the second pass of a looped file
    pts = [p for m in msgs for p in m.pts_ms]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    seqs = [m.chunk_seq for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert all(m.captured_at_ms == m.pts_ms[0] for m in msgs)
