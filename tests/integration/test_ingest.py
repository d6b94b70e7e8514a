"""Ingest against the real broker: a file camera, workers joining and leaving, a real RTSP camera.

Each test runs IngestWorker(s) in threads with their own stop events, on unique topics and
consumer groups of the session's tansu broker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from operators.codec import decode_chunk_payload
from operators.video import sample_video
from pipeline.devstack import free_port
from pipeline.devstack.broker import create_topics
from pipeline.ingest.registry import publish_cameras
from pipeline.ingest.worker import IngestWorker
from schemas.config import parse_camera, parse_config
from schemas.messages import decode_chunk_captured

pytestmark = pytest.mark.integration

RTSP_SERVER = Path(__file__).parent / "tools" / "rtsp_server.py"


def make_config(broker: Any, name: str, cameras: list[dict[str, Any]], **ingest: Any) -> Any:
    topics = {"raw": f"{name}-raw", "redacted": f"{name}-red", "dlq": f"{name}-dlq", "cameras": f"{name}-cams",
              "audit": f"{name}-audit"}
    create_topics(broker.bootstrap, {topics["raw"]: 2, topics["cameras"]: 4},
                  config={"max.message.bytes": str(16 << 20)},
                  per_topic={topics["cameras"]: {"cleanup.policy": "compact"}})
    return parse_config({
        "kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics, "session_timeout_ms": 6000},
        "ingest": {"consumer_group": f"{name}-ingest", "cameras": cameras, "reconnect_initial_s": 0.2,
                   "reconnect_max_s": 1.0, "status_interval_s": 2.0, **ingest},
        "metrics": {"enabled": False},
    })


class Running:
    def __init__(self, cfg: Any, wid: str, publish: bool = True) -> None:
        self.stop = threading.Event()
        self.worker = IngestWorker(cfg, self.stop, worker_id=wid, publish_static=publish)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


def read_raw(cfg: Any, expected_frames: int, timeout_s: float = 60) -> list[Any]:
    c = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": f"r-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "fetch.message.max.bytes": 16 << 20})
    c.subscribe([cfg.kafka.topics.raw])
    out, frames = [], 0
    deadline = time.monotonic() + timeout_s
    while frames < expected_frames and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        ch = decode_chunk_captured(m.value(), m.headers())
        out.append((m.key().decode(), ch))
        frames += len(ch.pts_ms)
    c.close()
    return out


def wait_for(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_file_camera_chunks_are_gop_aligned_complete_and_ordered(broker, unique_name):
    src = str(sample_video("carphone_pristine.mp4"))
    cfg = make_config(broker, unique_name, [{"camera_id": "cam-1", "url": src, "kind": "file"}],
                      chunk_seconds=1.0)
    w = Running(cfg, "w1")
    try:
        got = read_raw(cfg, 120)
    finally:
        w.halt()
    assert {k for k, _ in got} == {"cam-1"}
    chunks = [c for _, c in got]
    assert sum(len(c.pts_ms) for c in chunks) == 120
    seqs = [c.chunk_seq for c in chunks]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    pts = [p for c in chunks for p in c.pts_ms]
    assert pts == sorted(pts)
    for c in chunks:
        assert c.codec == "h264" and (c.width, c.height) == (176, 144)
        frames = decode_chunk_payload("h264", c.payload)  # each chunk decodes on its own (whole GOPs)
        assert len(frames) == len(c.pts_ms)
        assert c.captured_at_ms == c.pts_ms[0]


def test_non_h264_source_becomes_jpeg_chunks_at_the_configured_rate(broker, unique_name, tmp_path):
    # an MJPEG AVI: not H.264, so ingest decodes and sends JPEG frames, sampled to 10 fps
    import av
    import numpy as np

    path = tmp_path / "cam.avi"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=20)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        for i in range(40):
            img = np.full((48, 64, 3), i * 5, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    cfg = make_config(broker, unique_name, [{"camera_id": "cam-j", "url": str(path), "kind": "file",
                                             "fps": 10}], chunk_seconds=1.0)
    w = Running(cfg, "w1")
    try:
        got = read_raw(cfg, 20)
    finally:
        w.halt()
    chunks = [c for _, c in got]
    assert all(c.codec == "jpeg" for c in chunks)
    assert sum(len(c.pts_ms) for c in chunks) == 20
    assert decode_chunk_payload("jpeg", chunks[0].payload).shape[1:] == (48, 64, 3)


def test_workers_joining_and_leaving_move_cameras(broker, unique_name):
    src = str(sample_video("carphone_pristine.mp4"))
    cams = [{"camera_id": f"cam-{i}", "url": src, "kind": "file", "loop": True, "realtime": True}
            for i in range(8)]
    cfg = make_config(broker, unique_name, cams)
    a = Running(cfg, "a")
    b = None
    try:
        wait_for(lambda: len(a.worker.owned_cameras()) == 8, 30, "worker a to own all 8 cameras")
        b = Running(cfg, "b", publish=False)

        def split() -> bool:
            oa, ob = set(a.worker.owned_cameras()), set(b.worker.owned_cameras())
            return bool(oa) and bool(ob) and not (oa & ob) and len(oa | ob) == 8

        wait_for(split, 45, "cameras split between a and b")
        b.halt()
        b = None
        wait_for(lambda: len(a.worker.owned_cameras()) == 8, 45, "a to own all cameras again after b left")
        # removing a camera (tombstone) and disabling another stops them
        publish_cameras(cfg, [parse_camera({"camera_id": "cam-1", "url": src, "enabled": False})],
                        remove=["cam-0"])
        wait_for(lambda: set(a.worker.owned_cameras()) == {f"cam-{i}" for i in range(2, 8)}, 30,
                 "removed and disabled cameras to stop")
    finally:
        if b is not None:
            b.halt()
        a.halt()


def test_unreachable_camera_is_retried_with_backoff_and_reported(broker, unique_name):
    port = free_port()
    cfg = make_config(broker, unique_name, [{"camera_id": "cam-down", "url": f"rtsp://127.0.0.1:{port}/none",
                                             "kind": "rtsp"}])
    w = Running(cfg, "w1")
    try:
        wait_for(lambda: w.worker.metrics.value("veil_ingest_errors_total", {"kind": "camera_reconnect"}) >= 3,
                 30, "three reconnect attempts")
        assert w.worker.owned_cameras() == ["cam-down"]
    finally:
        w.halt()


@pytest.fixture
def rtsp_camera() -> Iterator[str]:
    py = "/usr/bin/python3"
    probe = subprocess.run([py, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True)
    if probe.returncode != 0 or not shutil.which("ffmpeg"):
        pytest.fail("the RTSP test needs Debian's GStreamer RTSP server: apt-get install python3-gi "
                    "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad ffmpeg "
                    "(`make system-deps` does it)", pytrace=False)
    port = free_port()
    proc = subprocess.Popen([py, str(RTSP_SERVER), str(port), "/cam", str(sample_video("bikes.mp4"))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": ""})
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "ready" in line, f"RTSP server did not start: {line}"
        yield f"rtsp://127.0.0.1:{port}/cam"
    finally:
        proc.terminate()
        proc.wait(10)


def test_real_rtsp_camera_is_ingested(broker, unique_name, rtsp_camera):
    cfg = make_config(broker, unique_name, [{"camera_id": "cam-rtsp", "url": rtsp_camera, "kind": "rtsp"}],
                      chunk_seconds=2.0)
    w = Running(cfg, "w1")
    try:
        got = read_raw(cfg, 100, timeout_s=60)
    finally:
        w.halt()
    chunks = [c for _, c in got]
    assert sum(len(c.pts_ms) for c in chunks) >= 100, "no frames over RTSP"
    for c in chunks[:3]:
        assert c.codec == "h264" and (c.width, c.height) == (640, 272)
        frames = decode_chunk_payload("h264", c.payload)
        assert len(frames) == len(c.pts_ms)
    assert [c.chunk_seq for c in chunks] == sorted(c.chunk_seq for c in chunks)




def test_http_camera_is_ingested(broker, unique_name, tmp_path):
    import functools
    import http.server

    import av

    # an HTTP camera streams MPEG-TS (no seeking, unlike an MP4 whose index is at its end)
    with av.open(str(sample_video("carphone_pristine.mp4"))) as src, av.open(str(tmp_path / "cam.ts"), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for pkt in src.demux(src.streams.video[0]):
            if pkt.dts is None:
                continue
            pkt.stream = out
            dst.mux(pkt)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/cam.ts"
    cfg = make_config(broker, unique_name, [{"camera_id": "cam-http", "url": url, "kind": "http"}])
    w = Running(cfg, "w1")
    try:
        got = read_raw(cfg, 120, timeout_s=60)
    finally:
        w.halt()
        httpd.shutdown()
    assert sum(len(c.pts_ms) for _, c in got) >= 120
    assert all(c.codec == "h264" for _, c in got)
