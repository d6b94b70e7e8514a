"""Fault injection on the real local stack (issue 12).

One fixed workload (three cameras of the short sample clips, cut into 1 s JPEG chunks, as
ingest would publish them) goes through the real ``veilstream process`` and ``veilstream
sink`` worker processes against the real broker (tansu on durable S3 storage), the local
S3 server and a local Ray head. One scenario at a time injects a fault while chunks are in
flight, and every scenario ends with

* an **accounting check**: every chunk produced to the raw topic is in a stored segment's
  manifest, in the DLQ with a reason, or logged as an explicit drop (none unaccounted);
* an **independent face scan**: the stored MP4 segments are downloaded, decoded and scanned
  with YuNet (OpenCV's ``FaceDetectorYN``, a different model from the pipeline's
  CenterFace); a face it finds in a stored frame is a leak. The same scan on the raw input
  shows the faces are there to find.

The table: chunks ``in`` (produced to the raw topic), ``out`` (in a stored segment's manifest),
``dlq`` (with a reason), ``drop`` (explicit, logged drops), ``lost`` (none of these; a valid
chunk dead-lettered by an outage also counts here: the DLQ is for bad input only), faces
``leaked`` (YuNet detections in stored frames), frames scanned, frames ``masked`` whole (fail
closed), and ``recovery``: seconds from the fault to the last chunk accounted for.

Run it with ``make test-faults`` (all scenarios) or ``python -m tests.faults.harness
--scenarios a,b``; ``make test`` runs the core subset in ``tests/faults/test_faults.py``.
Every process the harness starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tests.shared import MODELS

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = MODELS
YUNET = MODEL_DIR / "face_detection_yunet_2023mar.onnx"
CHUNK_S = 1.0
WORKLOAD = (("cam-a", "carphone_pristine.mp4", 4), ("cam-b", "bikes.mp4", 3), ("cam-c", "carphone_pristine.mp4", 4))
"""(camera, sample clip, chunks of 1 s): 11 chunks, ~330 frames, faces in most frames."""


# ---------------------------------------------------------------- workload


@dataclass
class Workload:
    chunks: list[Any]  # ChunkCaptured
    raw_faces: int  # YuNet detections on the raw frames (the faces there are to leak)
    raw_frames: int


def _frames(name: str, n: int) -> Iterator[np.ndarray]:
    import av

    from operators.video import sample_video

    with av.open(str(sample_video(name))) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= n:
                return
            yield f.to_ndarray(format="bgr24")


def build_workload(scan: FaceScan) -> Workload:
    from operators.codec import encode_jpeg_frames
    from schemas.messages import ChunkCaptured

    t0 = (int(time.time() * 1000) // 60_000) * 60_000  # this minute: segments land in a real window
    chunks, faces, frames_total = [], 0, 0
    for cam, clip, n_chunks in WORKLOAD:
        per = 25
        frames = list(_frames(clip, per * n_chunks))
        for k in range(n_chunks):
            fr = np.stack(frames[k * per:(k + 1) * per])
            pts = tuple(t0 + int((k * per + i) * 1000 / 25) for i in range(len(fr)))
            chunks.append(ChunkCaptured(camera_id=cam, chunk_seq=k, pts_ms=pts, fps=25.0, width=fr.shape[2],
                                        height=fr.shape[1], codec="jpeg", captured_at_ms=pts[0],
                                        payload=encode_jpeg_frames(fr, 85)))
            faces += sum(scan.count(f) for f in fr)
            frames_total += len(fr)
    return Workload(chunks, faces, frames_total)


class FaceScan:
    """YuNet (OpenCV FaceDetectorYN) at 2x upscale: counts faces with score >= 0.8."""

    def __init__(self, threshold: float = 0.8) -> None:
        import cv2

        if not YUNET.is_file():
            raise SystemExit(f"face scan model missing: {YUNET} (set VEILSTREAM_MODEL_DIR to ../shared/models)")
        with contextlib.suppress(Exception):
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        self.det = cv2.FaceDetectorYN.create(str(YUNET), "", (320, 320), threshold, 0.3, 5000)

    def faces(self, frame: np.ndarray) -> list[tuple[list[float], float]]:
        """``[(xywh in frame pixels, score), ...]``."""
        import cv2

        img = cv2.resize(frame, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
        self.det.setInputSize((img.shape[1], img.shape[0]))
        _, faces = self.det.detect(img)
        return [] if faces is None else [([float(v) / 2 for v in f[:4]], float(f[-1])) for f in faces]

    def count(self, frame: np.ndarray) -> int:
        return len(self.faces(frame))


# ---------------------------------------------------------------- poison messages


def poison_messages(good: Any) -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]:
    """``(kind, key, value, headers)`` of each hostile message of issue 12."""
    from schemas.messages import HEADER_META, encode_chunk

    value, headers = encode_chunk(good)
    meta = json.loads(dict(headers)[HEADER_META])

    def with_meta(**kw: Any) -> list[tuple[str, bytes]]:
        m = {**meta, **kw}
        return [(k, json.dumps(m).encode() if k == HEADER_META else v) for k, v in headers]

    cid = good.camera_id.encode()
    return [
        ("garbage", cid, b"\x00garbage" * 10, []),
        ("wrong_version", cid, value, [(k, b"9" if k == "schema_version" else v) for k, v in headers]),
        ("key_mismatch", b"cam-c", value, headers),
        ("size_lie", cid, value, with_meta(width=10000, height=10000)),
        ("count_lie", cid, value, with_meta(pts_ms=meta["pts_ms"][:5])),
        ("year_10000", cid, value, with_meta(pts_ms=[253402300800000 + i for i in range(len(meta["pts_ms"]))])),
        ("fps_1e-9", cid, value, with_meta(fps=1e-9)),
        ("bad_id_newline", b"cam-a\n", value, with_meta(camera_id="cam-a\n")),
        ("over_pixel_limit", cid, value, with_meta(width=5000, height=5000)),
        ("truncated", cid, value[: len(value) // 2], headers),
    ]


# ---------------------------------------------------------------- one scenario run


@dataclass
class Result:
    scenario: str
    chunks_in: int = 0
    out: int = 0
    dlq: int = 0
    dropped: int = 0
    unaccounted: int = 0
    faces_leaked: int = 0
    frames_scanned: int = 0
    fail_closed: int = 0
    recovery_s: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    notes: str = ""

    @property
    def ok(self) -> bool:
        return self.unaccounted == 0 and self.faces_leaked == 0 and self.chunks_in > 0


@dataclass
class Scenario:
    name: str
    what: str
    inject: Callable[[Run], None] | None = None
    config: dict[str, Any] = field(default_factory=dict)  # deep-merged into the worker config
    poison: bool = False
    start_process: bool = True
    expect_reasons: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    expect_fail_closed: bool = False
    sink_env: dict[str, str] = field(default_factory=dict)
    ingest: bool = False  # the workload comes from a real ingest worker reading the clips
    setup: Callable[[Run], None] | None = None  # before the workers start
    s3_proxy: bool = False  # the sink reaches the object store through RefusingS3Proxy


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class Run:
    """One scenario on the shared stack: its own topics, groups and bucket."""

    def __init__(self, stack: Any, workload: Workload, scenario: Scenario, scan: FaceScan, work: Path,
                 timeout_s: float = 150.0) -> None:
        self.stack, self.workload, self.sc, self.scan = stack, workload, scenario, scan
        self.timeout_s = timeout_s
        tag = f"{scenario.name.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        self.dir = work / tag
        self.dir.mkdir(parents=True)
        base = yaml.safe_load(Path(stack.config_path).read_text())
        topics = {k: f"f-{tag}-{k}" for k in ("raw", "redacted", "dlq", "audit")}
        topics["cameras"] = f"f-{tag}-cameras"
        cfg = _merge(base, {
            "kafka": {"topics": topics, "partitions": 2},
            "object_store": {"bucket": f"f-{tag}"[:40].rstrip("-"), "audit_bucket": f"a-{tag}"[:40].rstrip("-")},
            "process": {"consumer_group": f"p-{tag}", "status_interval_s": 2, "drain_timeout_s": 30,
                        "detector_timeout_s": 20},
            "sink": {"consumer_group": f"s-{tag}", "segment_seconds": 4, "idle_flush_s": 2,
                     "status_interval_s": 2},
            "ray": {"chunk_workers": 1},
        })
        if scenario.ingest:
            from operators.video import sample_video

            cfg = _merge(cfg, {"ingest": {"chunk_seconds": 1.0, "consumer_group": f"i-{tag}", "cameras": [
                {"camera_id": cam, "url": str(sample_video(clip)), "kind": "file", "realtime": True,
                 "codec": "jpeg"} for cam, clip, _n in WORKLOAD]}})
        cfg = _merge(cfg, scenario.config)
        self.cfg_raw = cfg
        self.cfg_path = self.dir / "config.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        from schemas.config import load_config

        self.cfg = load_config(self.cfg_path)
        self.proxy: RefusingS3Proxy | None = None
        self.sink_cfg_path = self.dir / "sink-config.yaml"
        if scenario.s3_proxy:
            host, port = self.cfg.object_store.endpoint.split(":")
            self.proxy = RefusingS3Proxy(int(port))
            self.sink_cfg_path.write_text(yaml.safe_dump(_merge(cfg, {"object_store": {
                "endpoint": f"127.0.0.1:{self.proxy.port}"}}), sort_keys=False))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.extra: list[Any] = []  # ManagedProcess-es a scenario started (stopped by pid at the end)
        self.produced: dict[tuple[int, int], Any] = {}  # (partition, offset) -> chunk id
        self.fault_at: float | None = None
        self.failed = False  # a scenario-specific expectation did not hold
        self.notes: list[str] = []
        self._dlq_consumer: Any = None  # see dlq_records
        self._dlq: list[tuple[Any, dict[str, Any]]] = []
        self.env = {**os.environ, "VEILSTREAM_MODEL_DIR": str(MODEL_DIR), "VEILSTREAM_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
                    "VEILSTREAM_STOP_GRACE_S": "90", **scenario.env}

    # -------------------------------------------------- workers
    def start(self, name: str) -> None:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**self.env, **(self.sc.sink_env if name == "sink" else {})}
        cfg = self.sink_cfg_path if name == "sink" and self.proxy is not None else self.cfg_path
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "pipeline.cli", name, "--config",
                                             str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                                            env=env, cwd=ROOT, start_new_session=True)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        p.wait(30)

    def stop(self, name: str, timeout_s: float = 90.0) -> int | None:
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.notes.append(f"{name} ignored SIGTERM for {timeout_s:.0f}s")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        return p.returncode

    def log(self, name: str) -> str:
        p = self.dir / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -------------------------------------------------- produce / observe
    def create_topics(self) -> None:
        from pipeline.devstack.broker import create_topics

        t = self.cfg.kafka.topics
        create_topics(self.cfg.kafka.bootstrap_servers, {t.raw: 2, t.redacted: 2, t.dlq: 1, t.audit: 1,
                                                         t.cameras: 2},
                      config={"max.message.bytes": str(self.cfg.kafka.message_max_bytes)})

    def produce(self, msgs: list[tuple[Any, bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers, "enable.idempotence": True,
                      "message.max.bytes": self.cfg.kafka.message_max_bytes, "linger.ms": 0})
        for ident, key, value, headers in msgs:
            def cb(err: Any, m: Any, ident: Any = ident) -> None:
                if err is None:
                    self.produced[(m.partition(), m.offset())] = ident
            p.produce(self.cfg.kafka.topics.raw, value=value, key=key, headers=headers, on_delivery=cb)
            p.poll(0)
        left = p.flush(30)
        if left or len(self.produced) != len(msgs):
            raise RuntimeError(f"workload not produced: {left} left, {len(self.produced)}/{len(msgs)} acked")

    def workload_messages(self) -> list[tuple[Any, bytes | None, bytes, list[tuple[str, bytes]]]]:
        from schemas.messages import encode_chunk

        out = []
        for c in self.workload.chunks:
            value, headers = encode_chunk(c)
            out.append(((c.camera_id, c.chunk_seq), c.camera_id.encode(), value, headers))
        if self.sc.poison:
            victim = replace(self.workload.chunks[0], chunk_seq=1000)
            for kind, key, value, headers in poison_messages(victim):
                out.append((("poison", kind), key, value, headers))
        return out

    def store(self) -> Any:
        from pipeline.objectstore import MinioSegmentStore

        return MinioSegmentStore.from_config(self.cfg.object_store)

    def manifests(self) -> list[dict[str, Any]]:
        st = self.store()
        out = []
        try:
            keys = [k for k in st.list_objects("camera=") if k.endswith(".json")]
        except Exception:  # noqa: BLE001 - bucket not there yet / server stopped
            return []
        for k in keys:
            with contextlib.suppress(Exception):
                out.append(json.loads(st.get_object(k)))
        return out

    def dlq_records(self, timeout_s: float = 8.0, quiet_s: float = 2.0) -> list[tuple[Any, dict[str, Any]]]:
        """Every DLQ record so far: one consumer for the whole run reads on from where the last
        call stopped, until nothing came for ``quiet_s`` (at most ``timeout_s``). A new consumer
        per call read the topic from its start and waited 2 s for silence on every poll of
        :meth:`wait_accounted`."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from schemas.messages import decode_dlq

        if self._dlq_consumer is None:
            c = Consumer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers,
                          "group.id": f"dlq-read-{uuid.uuid4()}", "enable.auto.commit": False,
                          "fetch.max.bytes": 64 * 1024 * 1024})
            c.assign([TopicPartition(self.cfg.kafka.topics.dlq, 0, OFFSET_BEGINNING)])
            self._dlq_consumer = c
        c = self._dlq_consumer
        quiet = time.monotonic() + quiet_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < min(deadline, quiet):
            m = c.poll(min(0.3, quiet_s))
            if m is None or m.error():
                continue
            quiet = time.monotonic() + quiet_s
            rec = decode_dlq(m.value(), m.headers())
            meta = {}
            with contextlib.suppress(Exception):
                meta = json.loads(rec.headers.get("veil-meta", "{}"))
            self._dlq.append((rec, meta))
        return list(self._dlq)

    def close_readers(self) -> None:
        if self._dlq_consumer is not None:
            self._dlq_consumer.close()
            self._dlq_consumer = None

    def drops(self) -> set[tuple[str, int]]:
        import re

        pat = re.compile(r"chunk dropped whole camera=(\S+) chunk_seq=(\d+)")
        return {(m.group(1), int(m.group(2))) for m in pat.finditer(self.log("process"))}

    def account(self, dlq_timeout_s: float = 3.0, dlq_quiet_s: float = 2.0) -> tuple[dict[Any, str], dict[str, int]]:
        """Outcome of every produced message: ``out``, ``dlq:<reason>``, ``dropped`` (or absent)."""
        outcome: dict[Any, str] = {}
        self.fail_closed = 0
        for m in self.manifests():
            self.fail_closed += int(m.get("fail_closed_frames", 0) or 0)
            for seq in m.get("chunk_seqs", []):
                outcome[(m["camera_id"], int(seq))] = "out"
        reasons: dict[str, int] = {}
        by_offset = self.produced
        for rec, meta in self.dlq_records(dlq_timeout_s, dlq_quiet_s):
            ident = None
            if rec.source_topic == self.cfg.kafka.topics.raw:
                ident = by_offset.get((rec.source_partition, rec.source_offset))
            elif meta.get("camera_id") is not None:
                ident = (meta["camera_id"], int(meta.get("chunk_seq", -1)))
            if ident is not None and outcome.get(ident) != "out":
                outcome[ident] = f"dlq:{rec.reason}"
            reasons[rec.reason] = reasons.get(rec.reason, 0) + 1
        for ident in self.drops():
            outcome.setdefault(ident, "dropped")
        return outcome, reasons

    def read_raw(self) -> None:
        """``produced`` from the raw topic itself (when ingest, not the harness, produced)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from schemas.messages import decode_chunk_captured

        c = Consumer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers, "group.id": f"raw-{uuid.uuid4()}",
                      "enable.auto.commit": False, "fetch.max.bytes": 64 * 1024 * 1024})
        c.assign([TopicPartition(self.cfg.kafka.topics.raw, p, OFFSET_BEGINNING) for p in range(2)])
        quiet = time.monotonic() + 3.0
        while time.monotonic() < quiet:
            m = c.poll(0.3)
            if m is None or m.error():
                continue
            quiet = time.monotonic() + 1.5
            try:
                meta = decode_chunk_captured(m.value(), m.headers())
                self.produced[(m.partition(), m.offset())] = (meta.camera_id, meta.chunk_seq)
            except Exception:  # noqa: BLE001 - a bad message is still an input to account for
                self.produced[(m.partition(), m.offset())] = ("raw", m.partition(), m.offset())
        c.close()

    def ingest_done(self) -> bool:
        if not self.sc.ingest:
            return True
        log = self.log("ingest").split("ingest started")[-1]  # the running (restarted) worker
        return all(f"camera finished camera={cam} " in log for cam, _c, _n in WORKLOAD)

    def wait_accounted(self, timeout_s: float, interval_s: float = 0.5) -> bool:
        """Polls every ``interval_s`` (the DLQ read goes on from the last poll, up to 0.5 s of
        silence) until every produced chunk is accounted for. Each poll lists the bucket's
        manifests and reads on in the DLQ; it used to sleep 2 s and read the DLQ from its start
        for 2 s: up to 4 s after the last chunk was accounted for, in every scenario."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.sc.ingest:
                if not self.ingest_done():
                    time.sleep(2.0)
                    continue
                self.read_raw()
            want = set(self.produced.values())
            outcome, _ = self.account(dlq_timeout_s=2.0, dlq_quiet_s=0.5)
            if want <= set(outcome):
                return True
            for name, p in self.procs.items():
                if p.poll() is not None and name in ("process", "sink"):
                    self.notes.append(f"{name} exited rc={p.returncode}")
                    return False
            time.sleep(interval_s)
        return False

    def wait_progress(self, min_out: int, timeout_s: float = 90.0) -> bool:
        """Until at least ``min_out`` chunks reached the redacted topic (process log)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.cfg.kafka.bootstrap_servers, "group.id": f"peek-{uuid.uuid4()}",
                      "enable.auto.commit": False})
        c.assign([TopicPartition(self.cfg.kafka.topics.redacted, p, OFFSET_BEGINNING) for p in range(2)])
        n, deadline = 0, time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline and n < min_out:
                m = c.poll(0.5)
                if m is not None and not m.error():
                    n += 1
            return n >= min_out
        finally:
            c.close()

    def scan_segments(self) -> tuple[int, int]:
        import av

        st = self.store()
        leaked = frames = 0
        for k in [k for k in st.list_objects("camera=") if k.endswith(".mp4")]:
            data = st.get_object(k)
            with av.open(io.BytesIO(data)) as c:
                for i, f in enumerate(c.decode(video=0)):
                    frames += 1
                    img = f.to_ndarray(format="bgr24")
                    found = self.scan.faces(img)
                    leaked += len(found)
                    for box, score in found:  # evidence for whoever reads the table
                        import cv2

                        x, y, w, h = (int(v) for v in box)
                        self.notes.append(f"face in {k} frame {i} at {x},{y} {w}x{h} score {score:.2f}")
                        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 0, 255), 1)
                        cv2.imwrite(str(self.dir / f"leak-{k.replace('/', '_')}-{i}.png"), img)
        return leaked, frames

    # -------------------------------------------------- the scenario
    def execute(self) -> Result:
        res = Result(self.sc.name)
        t_start = time.monotonic()
        try:
            self.create_topics()
            if self.sc.setup is not None:
                self.sc.setup(self)
            if self.sc.start_process:
                self.start("process")
            self.start("sink")
            if self.sc.ingest:
                self.start("ingest")
            else:
                self.produce(self.workload_messages())
            if self.sc.inject is not None:
                self.sc.inject(self)
            done = self.wait_accounted(self.timeout_s)
            res.chunks_in = len(set(self.produced.values()))
            if not done:
                self.notes.append("timed out waiting for every chunk")
            if self.fault_at is not None:
                res.recovery_s = round(time.monotonic() - self.fault_at, 1)
        finally:
            for name in ("ingest", "process", "sink"):
                rc = self.stop(name)
                if rc not in (None, 0):
                    self.notes.append(f"{name} exit {rc}")
            if self.proxy is not None:
                self.notes.append(f"object store refused {self.proxy.refused} writes")
                self.proxy.close()
            for mp in self.extra:
                mp.stop(5.0)
        try:
            outcome, res.reasons = self.account(dlq_timeout_s=4.0)
        finally:
            self.close_readers()
        if self.sc.ingest:
            self.read_raw()
            res.chunks_in = len(set(self.produced.values()))
        for ident in set(self.produced.values()):
            state = outcome.get(ident)
            if state == "out":
                res.out += 1
            elif state == "dropped":
                res.dropped += 1
            elif state is not None:
                res.dlq += 1
            else:
                res.unaccounted += 1
                self.notes.append(f"unaccounted {ident}")
        if self.failed:
            res.unaccounted += 1
        if not self.sc.poison and res.dlq:
            # the workload is all valid input: anything dead-lettered was an outage consumed
            # as bad input (the DLQ is only for input that can never be processed)
            self.notes.append(f"valid chunks dead-lettered by an outage: {res.reasons}")
            res.unaccounted += res.dlq
        missing_reasons = [r for r in self.sc.expect_reasons if r not in res.reasons]
        if missing_reasons:
            self.notes.append(f"expected DLQ reasons missing: {missing_reasons}")
            res.unaccounted += len(missing_reasons)
        res.faces_leaked, res.frames_scanned = self.scan_segments()
        res.fail_closed = self.fail_closed
        if self.sc.expect_fail_closed and res.fail_closed == 0:
            self.notes.append("expected frames masked whole (fail closed), found none")
            res.unaccounted += 1
        res.notes = "; ".join(self.notes)[:300]
        res.notes += f" [{time.monotonic() - t_start:.0f}s, logs {self.dir}]"
        return res


# ---------------------------------------------------------------- fault injections


class RefusingS3Proxy:
    """An HTTP proxy in front of the local S3 server that answers writes (PUT/POST) with
    ``503 SlowDown`` while ``refusing`` is set: an object store that is up but refuses."""

    def __init__(self, backend_port: int) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self
        self.refusing = threading.Event()
        self.refused = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                if proxy.refusing.is_set() and self.command in ("PUT", "POST"):
                    proxy.refused += 1
                    msg = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                           b"<Message>Please reduce your request rate.</Message></Error>")
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection",)}
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status, r.reason)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815

            def log_message(self, *a: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _after_progress(n: int = 2) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    def deco(fn: Callable[[Run], None]) -> Callable[[Run], None]:
        def inject(run: Run) -> None:
            if not run.wait_progress(n, 120):
                run.notes.append("no progress before the fault")
            run.fault_at = time.monotonic()
            fn(run)
        return inject
    return deco


@_after_progress(2)
def kill_process(run: Run) -> None:
    run.kill("process")
    run.start("process")


@_after_progress(2)
def kill_sink(run: Run) -> None:
    run.kill("sink")
    run.start("sink")


@_after_progress(2)
def kill_broker(run: Run) -> None:
    from pipeline.devstack import pid_alive, wait_until
    from pipeline.devstack.stack import StackState, restart_broker

    state = StackState.load(run.stack.state_dir)
    broker = next(p for p in state.managed() if p.name == "broker")
    os.kill(broker.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(broker.pid), 10)
    time.sleep(3.0)  # down for a moment: clients retry
    restart_broker(run.stack.state_dir)


@_after_progress(1)
def stop_object_store(run: Run) -> None:
    from pipeline.devstack.stack import StackState

    state = StackState.load(run.stack.state_dir)
    s3 = next(p for p in state.managed() if p.name == "s3")
    os.kill(s3.pid, signal.SIGSTOP)
    try:
        time.sleep(15.0)
    finally:
        os.kill(s3.pid, signal.SIGCONT)


def _start_worker_node(run: Run) -> Any:
    """A second Ray node joined to the stack's head (2 CPUs): a real two-node cluster."""
    from pipeline.devstack import free_port, spawn
    from pipeline.devstack.raylocal import loopback_node_argv

    head = run.stack.ray_address
    agent = free_port()
    argv = [*loopback_node_argv(), "start", "--address", head, "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
            "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats",
            "--dashboard-agent-listen-port", str(agent)]
    for flag in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--metrics-export-port"):
        argv += [flag, str(free_port())]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = spawn("ray-node2", argv, run.dir / "ray-node2.log", marker=f"--dashboard-agent-listen-port {agent}",
                 env=env, grace_s=3.0)
    run.extra.append(proc)
    time.sleep(8.0)  # raylet registration with the GCS
    if not proc.alive():
        run.notes.append(f"second Ray node did not start: {proc.log_tail(3)}")
    return proc


def second_node(run: Run) -> None:
    run.node2 = _start_worker_node(run)  # type: ignore[attr-defined]


@_after_progress(2)
def lose_node(run: Run) -> None:
    """SIGKILL the second node's whole process group (raylet, its workers: the detector),
    then a replacement node joins 5 s later (as a Kubernetes node would be replaced)."""
    node = run.node2  # type: ignore[attr-defined]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)
    time.sleep(5.0)
    _start_worker_node(run)


@_after_progress(2)
def kill_ingest(run: Run) -> None:
    run.kill("ingest")
    run.start("ingest")


@_after_progress(2)
def refuse_writes(run: Run) -> None:
    assert run.proxy is not None
    run.proxy.refusing.set()
    try:
        time.sleep(20.0)
    finally:
        run.proxy.refusing.clear()


@_after_progress(2)
def kill_detector_actor(run: Run) -> None:
    """SIGKILL the Ray worker process hosting a DetectorActor (found by its proctitle)."""
    from pipeline.devstack import cmdline

    victims = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
               and " ".join(cmdline(int(p.name))).startswith("ray::DetectorActor")]
    if not victims:
        run.notes.append("no DetectorActor process found")
    for pid in victims[:1]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def corrupt_model_then_fix(run: Run) -> None:
    """The process worker starts with a corrupt face model: it must refuse to start (one
    clear error, nothing consumed); restarted with the good model, everything goes through."""
    p = run.procs["process"]
    try:
        p.wait(120)
    except subprocess.TimeoutExpired:
        run.notes.append("process kept running with a corrupt model")
        run.failed = True
        run.kill("process")
    run.procs.pop("process", None)
    err = [ln for ln in run.log("process").splitlines() if "error" in ln.lower()][-1:]
    run.notes.append(f"corrupt model: rc={p.returncode} {err[0][:120] if err else ''}")
    run.fault_at = time.monotonic()
    run.cfg_raw["process"] = {**run.cfg_raw["process"], "model_dir": str(YUNET.parent)}
    run.env["VEILSTREAM_MODEL_DIR"] = str(YUNET.parent)
    run.cfg_path.write_text(yaml.safe_dump(run.cfg_raw, sort_keys=False))
    run.start("process")


def _corrupt_model_dir() -> str:
    d = Path(tempfile.mkdtemp(prefix="veil-corrupt-models-"))
    (d / "yunet_n_dynamic.onnx").write_bytes(b"this is not an onnx model" * 100)
    return str(d)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("baseline", "no fault"),
    Scenario("poison", "a poison message of each kind among the workload", poison=True,
             expect_reasons=("invalid_message", "key_mismatch")),
    Scenario("kill_process", "process SIGKILLed mid-stream, restarted", inject=kill_process),
    Scenario("kill_sink", "sink SIGKILLed mid-stream, restarted", inject=kill_sink),
    Scenario("slow_detector", "detector slower than its deadline (fail closed)",
             config={"process": {"detector_timeout_s": 0.001}}, expect_fail_closed=True),
    Scenario("kill_broker", "broker SIGKILLed, restarted 3 s later on durable storage", inject=kill_broker),
    Scenario("stop_s3", "object store SIGSTOPped 15 s, resumed", inject=stop_object_store),
    Scenario("kill_detector", "a detector actor's process SIGKILLed mid-batch", inject=kill_detector_actor),
    Scenario("ray_node_lost", "two-node Ray: the node running the detector lost (SIGKILL), replaced 5 s later",
             setup=second_node, inject=lose_node,
             # spread: the detector (2 CPUs) cannot share a 2-CPU node with chunk actors under node_local,
             # and the start-up capacity check refuses that; spread puts it on the second node
             config={"ray": {"detector": {"num_cpus": 2}, "placement": "spread"}}),
    Scenario("kill_ingest", "ingest (reading 3 real-time file cameras) SIGKILLed mid-stream, restarted",
             inject=kill_ingest, ingest=True),
    Scenario("s3_refuses", "object store answers 503 SlowDown to every write for 20 s", inject=refuse_writes,
             s3_proxy=True),
    Scenario("sink_no_tmp", "the sink's temp space unusable (TMPDIR on a full/unwritable path)",
             sink_env={"TMPDIR": "/proc/veil-no-space"}),
    Scenario("corrupt_model", "corrupt face model file at start-up, then fixed", inject=corrupt_model_then_fix,
             config={"process": {"model_dir": "@corrupt", "face_model": "yunet"}},
             env={"VEILSTREAM_OFFLINE": "1", "VEILSTREAM_CACHE_DIR": "/nonexistent-veil-cache"}),
]}
CORE = ("poison", "kill_process", "slow_detector")
"""The subset ``make test`` runs (time budget); ``make test-faults`` runs all of them."""


# ---------------------------------------------------------------- driver


@contextlib.contextmanager
def local_stack(work: Path) -> Iterator[Any]:
    from pipeline.devstack.stack import down, up

    state = up(state_dir=work / "stack", ray=True, num_cpus=2, partitions=2, ray_object_store_mb=200)
    try:
        yield state
    finally:
        down(state_dir=work / "stack")


def run_scenarios(names: list[str], work: Path | None = None, out: Callable[[str], None] = print) -> list[Result]:
    work = Path(work or tempfile.mkdtemp(prefix="veil-faults-"))
    scan = FaceScan()
    wl = build_workload(scan)
    out(f"workload: {len(wl.chunks)} chunks, {wl.raw_frames} frames of {len(WORKLOAD)} cameras; "
        f"YuNet finds {wl.raw_faces} faces in the raw frames")
    results = []
    with local_stack(work) as stack:
        for name in names:
            sc = SCENARIOS[name]
            if sc.config.get("process", {}).get("model_dir") == "@corrupt":
                bad = _corrupt_model_dir()  # in the config and in $VEILSTREAM_MODEL_DIR: whichever wins
                sc = replace(sc, config=_merge(sc.config, {"process": {"model_dir": bad}}),
                             env={**sc.env, "VEILSTREAM_MODEL_DIR": bad})
            out(f"-- {name}: {sc.what}")
            res = Run(stack, wl, sc, scan, work).execute()
            out(f"   {res}")
            results.append(res)
    out(table(results))
    return results


def table(results: list[Result]) -> str:
    head = f"{'scenario':<15} {'in':>4} {'out':>4} {'dlq':>4} {'drop':>4} {'lost':>4} {'leaked':>6} " \
           f"{'frames':>6} {'masked':>6} {'recovery':>8}  dlq reasons / notes"
    rows = [head, "-" * len(head)]
    for r in results:
        rec = f"{r.recovery_s:.1f}s" if r.recovery_s is not None else "-"
        reasons = ",".join(f"{k}={v}" for k, v in sorted(r.reasons.items()))
        if not r.ok:
            reasons += f"  FAILED: {r.notes}"
        rows.append(f"{r.scenario:<15} {r.chunks_in:>4} {r.out:>4} {r.dlq:>4} {r.dropped:>4} {r.unaccounted:>4} "
                    f"{r.faces_leaked:>6} {r.frames_scanned:>6} {r.fail_closed:>6} {rec:>8}  {reasons}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="all", help=f"comma list or all (default); core = {','.join(CORE)}")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    names = list(SCENARIOS) if args.scenarios == "all" else list(CORE) if args.scenarios == "core" \
        else [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    results = run_scenarios(names, args.work)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
