"""Ingest against the real broker: file cameras, workers joining and leaving, an unreachable
camera, a real RTSP camera (that also drops and comes back), an HTTP camera.

Each test runs IngestWorker(s) in threads with their own stop events, on unique topics and
consumer groups of the session's tansu broker. The raw topic is read by partition
assignment (no group join, so no join delay).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from operators.codec import decode_chunk_payload
from operators.video import sample_video
from pipeline.devstack import free_port
from pipeline.devstack.broker import create_topics
from pipeline.ingest import publish_cameras
from pipeline.ingest.worker import IngestWorker
from schemas.config import parse_camera, parse_config
from schemas.messages import decode_chunk_captured

pytestmark = pytest.mark.integration

RTSP_SERVER = Path(__file__).parent / "tools" / "rtsp_server.py"
RAW_PARTITIONS = 2
INSTALL_HINT = ("apt-get install -y python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad   (`make system-deps` does it)")


def make_config(broker: Any, name: str, cameras: list[dict[str, Any]], **ingest: Any) -> Any:
    topics = {"raw": f"{name}-raw", "redacted": f"{name}-red", "dlq": f"{name}-dlq", "cameras": f"{name}-cams",
              "audit": f"{name}-audit"}
    create_topics(broker.bootstrap, {topics["raw"]: RAW_PARTITIONS, topics["cameras"]: 4},
                  config={"max.message.bytes": str(16 << 20)},
                  per_topic={topics["cameras"]: {"cleanup.policy": "compact"}})
    return parse_config({
        "kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics, "session_timeout_ms": 6000},
        "ingest": {"consumer_group": f"{name}-ingest", "cameras": cameras, "reconnect_initial_s": 0.2,
                   "reconnect_max_s": 1.0, "status_interval_s": 2.0, **ingest},
        "metrics": {"enabled": False},
    })


class Running:
    """An IngestWorker in a thread with its own stop event."""

    def __init__(self, cfg: Any, wid: str, publish: bool = True) -> None:
        self.stop = threading.Event()
        self.worker = IngestWorker(cfg, self.stop, worker_id=wid, publish_static=publish)
        self.errors: list[BaseException] = []
        self.rc: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"worker-{wid}")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.rc = self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by halt()
            self.errors.append(exc)

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "worker did not stop within 60 s"
        assert not self.errors, self.errors
        assert self.rc == 0


class RawReader:
    """Reads the raw topic from the beginning by assignment; keeps every decoded chunk."""

    def __init__(self, cfg: Any) -> None:
        self.c = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": f"r-{time.time_ns()}",
                           "enable.auto.commit": False, "fetch.message.max.bytes": 16 << 20})
        self.c.assign([TopicPartition(cfg.kafka.topics.raw, p, OFFSET_BEGINNING) for p in range(RAW_PARTITIONS)])
        self.chunks: dict[str, list[Any]] = defaultdict(list)

    def frames(self, camera_id: str) -> int:
        return sum(len(c.pts_ms) for c in self.chunks[camera_id])

    def read_until(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                got = {k: self.frames(k) for k in self.chunks}
                raise AssertionError(f"timed out waiting for {what}; frames so far {got}")
            self.drain(0.3)

    def drain(self, timeout_s: float) -> None:
        for m in self.c.consume(256, timeout_s):
            if m.error():
                continue
            ch = decode_chunk_captured(m.value(), m.headers())
            assert m.key().decode() == ch.camera_id  # key = camera id
            self.chunks[ch.camera_id].append(ch)

    def close(self) -> None:
        self.c.close()


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def frame_count(path: str) -> int:
    import av

    with av.open(path) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def assert_ordered(chunks: list[Any]) -> None:
    seqs = [c.chunk_seq for c in chunks]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"chunk_seq not strictly increasing: {seqs}"
    pts = [p for c in chunks for p in c.pts_ms]
    assert all(a < b for a, b in zip(pts, pts[1:], strict=False)), "camera timestamps not increasing"
    for c in chunks:
        assert c.captured_at_ms == c.pts_ms[0]


def test_file_cameras_are_chunked_complete_ordered_and_decodable(broker, unique_name):
    carphone, bikes = str(sample_video("carphone_pristine.mp4")), str(sample_video("bikes.mp4"))
    expected = {"cam-h264": frame_count(carphone), "cam-jpeg": frame_count(carphone), "cam-gops": frame_count(bikes)}
    cams = [{"camera_id": "cam-h264", "url": carphone, "kind": "file"},  # one 4 s GOP: one chunk
            {"camera_id": "cam-jpeg", "url": carphone, "kind": "file", "codec": "jpeg"},  # decoded, 1 s chunks
            {"camera_id": "cam-gops", "url": bikes, "kind": "file"}]  # several GOPs: several chunks
    cfg = make_config(broker, unique_name, cams, chunk_seconds=1.0)
    reader = RawReader(cfg)
    w = Running(cfg, "w1")
    try:
        reader.read_until(lambda: all(reader.frames(k) >= n for k, n in expected.items()), 60,
                          "every frame of one pass of each file")
        wait_for(lambda: set(w.worker.camera_states().values()) == {"finished"}, 10, "cameras to finish")
        reader.drain(1.0)  # nothing more may come: loop=false is one pass
    finally:
        w.halt()
        reader.close()
    assert set(reader.chunks) == set(expected)
    for cid, n in expected.items():
        chunks = reader.chunks[cid]
        assert reader.frames(cid) == n, f"{cid}: {reader.frames(cid)} frames, the file has {n}"
        assert_ordered(chunks)
        for c in chunks:
            frames = decode_chunk_payload(c.codec, c.payload)  # each chunk decodes on its own
            assert len(frames) == len(c.pts_ms) and frames.shape[1:3] == (c.height, c.width)
    assert [c.codec for c in reader.chunks["cam-h264"]] == ["h264"]
    assert {c.codec for c in reader.chunks["cam-jpeg"]} == {"jpeg"} and len(reader.chunks["cam-jpeg"]) == 4
    gops = reader.chunks["cam-gops"]
    assert len(gops) >= 3 and {(c.codec, c.width, c.height) for c in gops} == {("h264", 640, 272)}
    m = w.worker.metrics
    assert m.value("veil_ingest_frames_out_total") == sum(expected.values())
    assert m.value("veil_ingest_produced_bytes_total") == sum(len(c.payload) for v in reader.chunks.values()
                                                              for c in v)


def test_non_h264_source_becomes_jpeg_chunks_at_the_configured_rate(broker, unique_name, tmp_path):
    # an MJPEG AVI at 20 fps: not H.264, so ingest decodes and sends JPEG frames, sampled to 10 fps
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
    reader = RawReader(cfg)
    w = Running(cfg, "w1")
    try:
        reader.read_until(lambda: reader.frames("cam-j") >= 20, 30, "20 sampled frames")
        reader.drain(0.5)
    finally:
        w.halt()
        reader.close()
    chunks = reader.chunks["cam-j"]
    assert reader.frames("cam-j") == 20 and len(chunks) == 2
    assert all(c.codec == "jpeg" and c.fps == 10 for c in chunks)
    assert decode_chunk_payload("jpeg", chunks[0].payload).shape == (10, 48, 64, 3)


def test_workers_joining_and_leaving_move_cameras(broker, unique_name):
    src = str(sample_video("carphone_pristine.mp4"))
    ids = {f"cam-{i}" for i in range(8)}
    cams = [{"camera_id": cid, "url": src, "kind": "file", "loop": True, "realtime": True} for cid in sorted(ids)]
    cfg = make_config(broker, unique_name, cams)
    a = Running(cfg, "a")
    b: Running | None = None
    overlaps: list[set[str]] = []
    sampling = threading.Event()

    def sample() -> None:
        # B first, then A: A revokes before B is assigned, so a camera seen on B and then
        # still on A really ran on both
        while not sampling.is_set():
            if b is not None:
                ob = set(b.worker.owned_cameras())
                oa = set(a.worker.owned_cameras())
                if oa & ob:
                    overlaps.append(oa & ob)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        wait_for(lambda: set(a.worker.owned_cameras()) == ids, 30, "worker a to own all 8 cameras")
        b = Running(cfg, "b", publish=False)

        def split() -> bool:
            assert b is not None
            oa, ob = set(a.worker.owned_cameras()), set(b.worker.owned_cameras())
            return bool(oa) and bool(ob) and not (oa & ob) and oa | ob == ids

        wait_for(split, 45, "cameras split between a and b")
        owned_by_b = set(b.worker.owned_cameras())
        b.halt()
        wait_for(lambda: set(a.worker.owned_cameras()) == ids, 45, "a to own all cameras again after b left")
        assert b.worker.owned_cameras() == []
        # a tombstone removes a camera; enabled=false parks another
        publish_cameras(cfg, [parse_camera({"camera_id": "cam-1", "url": src, "enabled": False})],
                        remove=["cam-0"])
        wait_for(lambda: set(a.worker.owned_cameras()) == ids - {"cam-0", "cam-1"}, 30,
                 "removed and disabled cameras to stop")
    finally:
        sampling.set()
        sampler.join(5)
        if b is not None and b.thread.is_alive():
            b.halt()
        a.halt()
    assert not overlaps, f"cameras owned by two workers at once: {overlaps[:3]}"
    assert owned_by_b
    m = a.worker.metrics
    assert m.value("veil_ingest_rebalances_total", {"change": "revoke"}) >= 1
    assert m.value("veil_ingest_dropped_frames_total", {"reason": "backpressure"}) == 0


def test_unreachable_camera_is_retried_with_backoff_and_reported(broker, unique_name):
    port = free_port()
    cfg = make_config(broker, unique_name, [{"camera_id": "cam-down", "url": f"rtsp://127.0.0.1:{port}/none",
                                             "kind": "rtsp"}])
    w = Running(cfg, "w1")
    try:
        wait_for(lambda: w.worker.metrics.value("veil_ingest_reconnects_total") >= 3, 30,
                 "three reconnect attempts")
        assert w.worker.owned_cameras() == ["cam-down"]
        assert w.worker.camera_states()["cam-down"] in ("retrying", "connecting")
    finally:
        w.halt()


class RtspCamera:
    """GStreamer's RTSP server (Debian packages, system python3) serving a file on loopback."""

    PY = "/usr/bin/python3"

    def __init__(self, path: str) -> None:
        try:
            probe = subprocess.run([self.PY, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                                    "from gi.repository import GstRtspServer"], capture_output=True, timeout=60)
            ok = probe.returncode == 0
        except OSError:  # no system python3 at all
            ok = False
        if not ok:
            pytest.fail(f"the RTSP camera test needs Debian's GStreamer RTSP server: {INSTALL_HINT}",
                        pytrace=False)
        self.path = path
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.PY, str(RTSP_SERVER), str(self.port), "/cam", self.path],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONPATH": ""})
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert "ready" in line, f"RTSP server did not start: {line}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


@pytest.fixture
def rtsp_camera() -> Iterator[RtspCamera]:
    cam = RtspCamera(str(sample_video("bikes.mp4")))
    cam.start()
    try:
        yield cam
    finally:
        cam.stop()


def test_real_rtsp_camera_is_ingested_and_survives_a_restart(broker, unique_name, rtsp_camera):
    cfg = make_config(broker, unique_name, [{"camera_id": "cam-rtsp", "url": rtsp_camera.url, "kind": "rtsp"}],
                      chunk_seconds=2.0)
    reader = RawReader(cfg)
    w = Running(cfg, "w1")
    try:
        reader.read_until(lambda: reader.frames("cam-rtsp") >= 100, 60, "100 frames over RTSP")
        before = reader.frames("cam-rtsp")
        rtsp_camera.stop()  # the camera goes away ...
        wait_for(lambda: w.worker.metrics.value("veil_ingest_reconnects_total") >= 1, 30,
                 "the lost camera to be reported")
        rtsp_camera.start()  # ... and comes back on the same address
        reader.read_until(lambda: reader.frames("cam-rtsp") >= before + 100, 60, "100 more frames after restart")
    finally:
        w.halt()
        reader.close()
    chunks = reader.chunks["cam-rtsp"]
    for c in chunks:
        assert c.codec == "h264" and (c.width, c.height) == (640, 272)
        frames = decode_chunk_payload("h264", c.payload)  # GOP-aligned: each chunk decodes alone
        assert len(frames) == len(c.pts_ms)
    assert_ordered(chunks)  # across the reconnect too
    assert w.worker.metrics.value("veil_ingest_reconnects_total") >= 1


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
    reader = RawReader(cfg)
    w = Running(cfg, "w1")
    try:
        # the "stream" ends after 120 frames: a live camera that ends is reconnected
        reader.read_until(lambda: reader.frames("cam-http") >= 240, 60, "two connections' worth of frames")
    finally:
        w.halt()
        httpd.shutdown()
        reader.close()
    chunks = reader.chunks["cam-http"]
    assert all(c.codec == "h264" for c in chunks)
    assert_ordered(chunks)
    assert w.worker.metrics.value("veil_ingest_reconnects_total") >= 1


def test_cameras_cli_add_import_list_remove(broker, unique_name, tmp_path):
    import yaml

    cfg = make_config(broker, unique_name, [])
    path = tmp_path / "cfg.yaml"
    t = cfg.kafka.topics
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": broker.bootstrap, "topics": {
        "raw": t.raw, "redacted": t.redacted, "dlq": t.dlq, "cameras": t.cameras, "audit": t.audit}}}))
    (tmp_path / "cams.yaml").write_text(yaml.safe_dump({"cameras": [
        {"camera_id": "gate-1", "url": "rtsp://10.1.1.1/s", "kind": "rtsp"},
        {"camera_id": "gate-2", "url": "rtsp://10.1.1.2/s", "kind": "rtsp", "enabled": False}]}))

    def cli(*a: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pipeline.cli", "cameras", *a, "--config", str(path)],
                              capture_output=True, text=True, timeout=120)

    assert cli("add", "lobby", "rtsp://10.0.0.9/live", "--policy-id", "strict").returncode == 0
    assert cli("import", str(tmp_path / "cams.yaml")).returncode == 0
    out = cli("list")
    assert out.returncode == 0, out.stderr
    rows = [ln.split("\t") for ln in out.stdout.splitlines()]
    assert [(r[0], r[2]) for r in rows] == [("gate-1", "enabled"), ("gate-2", "disabled"), ("lobby", "enabled")]
    assert "policy=strict" in out.stdout
    assert cli("remove", "gate-1").returncode == 0
    assert [ln.split("\t")[0] for ln in cli("list").stdout.splitlines()] == ["gate-2", "lobby"]
    bad = cli("add", "x", "rtsp://h/s", "--fps", "-3")
    assert bad.returncode == 2 and "fps" in bad.stderr and "Traceback" not in bad.stderr
    # with policies_dir, a camera may only name a policy that is written
    pdir = tmp_path / "policies"
    pdir.mkdir()
    (pdir / "default.yaml").write_text("policy_id: default\n")
    data = yaml.safe_load(path.read_text())
    data["policies_dir"] = str(pdir)
    path.write_text(yaml.safe_dump(data))
    bad = cli("add", "y", "rtsp://h/s", "--policy-id", "strict")
    assert bad.returncode == 2 and "'strict' not in policies_dir" in bad.stderr and "found: default" in bad.stderr
    assert cli("add", "y", "rtsp://h/s").returncode == 0  # the default policy exists
