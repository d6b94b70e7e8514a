"""Sink memory against open cameras: the sink alone, fed N cameras' redacted chunks directly.

    .venv/bin/python load_tests/sink_memory.py --cameras 100 --chunks 25 --bound-mib 16

Starts the local broker and S3 server (no Ray), writes ``--chunks`` redacted chunks per camera
(real H.264 of OpenCV's ``vtest.avi`` when ``make load`` extracted it, else synthetic frames;
one payload reused, camera timestamps of one 60 s window) into ``veil.chunks.redacted``,
interleaved by time as cameras send them, and runs ``veilstream sink`` as its own process
twice: ``sink.max_buffered_bytes: null`` (every open segment in RAM, the old sink) and
``--bound-mib``. Every camera's segment stays open until the sink is stopped, so at the end
of the feed the sink holds N open segments of ``--chunks`` chunks each. Sampled every 0.5 s
from /proc and the sink's own gauges: RSS, open segments, payload bytes in memory and in the
spool. Then SIGTERM: the sink stores every open segment, commits and exits; the bucket must
hold one MP4 per camera.

Prints one JSON line per mode and a last line with both; RSS per open camera is
``(peak RSS - RSS before the first chunk) / cameras``. The machine is shared: compare the two
modes of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load_tests"))

from pipeline_load import (  # noqa: E402
    VTEST,
    _metrics_text,
    _total,
    emit_json,
    labelled,
    metric_ports,
    proc_status,
)


def payload_frames(n: int, width: int, height: int) -> Any:
    """``n`` BGR frames of vtest.avi (or a moving synthetic pattern without it)."""
    import numpy as np

    if VTEST.is_file():
        import av

        out = []
        with av.open(str(VTEST)) as c:
            for f in c.decode(c.streams.video[0]):
                out.append(f.reformat(width=width, height=height, format="bgr24").to_ndarray())
                if len(out) == n:
                    break
        return np.stack(out)
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([np.dstack([(xx + 7 * i) % 256, (yy + 3 * i) % 256, (xx + yy + i) % 256]).astype(np.uint8)
                     for i in range(n)])


def feed(cfg: Any, cameras: int, chunks: int, fps: float, frames: Any) -> tuple[int, int]:
    """Produce every chunk; returns (messages, payload bytes of one chunk)."""
    from operators.codec import encode_h264_chunk
    from pipeline.stage import producer_for
    from schemas.messages import ChunkRedacted, encode_chunk

    payload = encode_h264_chunk(frames, fps)
    n = len(frames)
    window = (int(time.time() * 1000) // 60_000 - 2) * 60_000  # a past minute: one window per camera
    prod = producer_for(cfg.kafka, "sink-memory-feed")
    sent = 0
    for i in range(chunks):
        start = window + i * int(n * 1000 / fps)
        pts = tuple(start + int(k * 1000 / fps) for k in range(n))
        for c in range(cameras):
            cid = f"cam-{c + 1:04d}"
            msg = ChunkRedacted(camera_id=cid, chunk_seq=i, pts_ms=pts, fps=fps, width=frames.shape[2],
                                height=frames.shape[1], codec="h264", captured_at_ms=pts[0], payload=payload,
                                masks_per_class={"face": 0}, models=({"id": "none", "version": "0"},),
                                policy_id="default", policy_version=1)
            value, headers = encode_chunk(msg)
            prod.produce(cfg.kafka.topics.redacted, value, cid, headers)
            sent += 1
        prod.poll(0)
    left = prod.flush(60.0)
    if left:
        raise SystemExit(f"{left} chunk(s) not delivered to the broker")
    return sent, len(payload)


def run_sink(cfg_path: Path, log_dir: Path, total: int, cameras: int, timeout_s: float) -> dict[str, Any]:
    from pipeline import runner

    log = log_dir / "sink.log"
    log.unlink(missing_ok=True)
    proc = runner._spawn(["sink", "--config", str(cfg_path)], log, dict(os.environ))
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    base_rss = 0
    consumed_at = None
    try:
        while time.monotonic() - t0 < timeout_s:
            if proc.poll() is not None:
                raise SystemExit(f"sink exited with {proc.returncode}; see {log}")
            ports = metric_ports(log_dir)
            text = _metrics_text(ports["sink"]) if "sink" in ports else ""
            rss, threads = proc_status(proc.pid)
            chunks_in = int(_total(text, "veil_sink_chunks_in_total"))
            buffered = labelled(text, "veil_sink_buffered_bytes", "place")
            if text and chunks_in == 0:
                base_rss = rss  # ready, nothing read yet
            samples.append({"t": round(time.monotonic() - t0, 1), "rss": rss, "threads": threads,
                            "chunks_in": chunks_in, "open": int(_total(text, "veil_sink_inflight_chunks")),
                            "memory": int(buffered.get("memory", 0)), "spool": int(buffered.get("spool", 0))})
            if chunks_in >= total and consumed_at is None:
                consumed_at = time.monotonic()
            if consumed_at is not None and time.monotonic() - consumed_at > 3.0:
                break  # gauges settle on the next loop turns
            time.sleep(0.5)
        else:
            raise SystemExit(f"sink read {samples[-1]['chunks_in'] if samples else 0} of {total} chunks "
                             f"in {timeout_s:.0f}s; see {log}")
        t_stop = time.monotonic()
        rc = runner._stop(proc, "sink", 300)
        stop_s = time.monotonic() - t_stop
    finally:
        if proc.poll() is None:
            runner._stop(proc, "sink", 10)
    peak = max(samples, key=lambda s: s["rss"])
    return {"rc": rc, "rss_before_mib": round(base_rss / 2**20, 1), "rss_peak_mib": round(peak["rss"] / 2**20, 1),
            "rss_per_open_camera_mib": round((peak["rss"] - base_rss) / 2**20 / cameras, 3),
            "open_segments_peak": max(s["open"] for s in samples),
            "memory_payload_mib_peak": round(max(s["memory"] for s in samples) / 2**20, 1),
            "spool_payload_mib_peak": round(max(s["spool"] for s in samples) / 2**20, 1),
            "threads": max(s["threads"] for s in samples),
            "read_s": round((consumed_at or t_stop) - t0, 1), "stop_and_store_s": round(stop_s, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=100)
    ap.add_argument("--chunks", type=int, default=25, help="chunks per camera, all in one 60 s window (<= 30)")
    ap.add_argument("--size", default="640x360", help="WxH of the chunk frames")
    ap.add_argument("--fps", type=float, default=5.0, help="frames per second (2 s chunks)")
    ap.add_argument("--bound-mib", type=float, default=16.0, help="sink.max_buffered_bytes of the bounded run")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".veilstream" / "sink-memory")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()
    import yaml

    from pipeline.devstack.broker import DEFAULT_MESSAGE_MAX_BYTES, create_topics
    from pipeline.devstack.stack import down, up
    from pipeline.objectstore import MinioSegmentStore
    from schemas.config import load_config

    w, h = (int(v) for v in args.size.lower().split("x"))
    frames = payload_frames(int(round(2 * args.fps)), w, h)
    state = up(state_dir=args.state_dir, ray=False)
    results: dict[str, Any] = {"cameras": args.cameras, "chunks_per_camera": args.chunks, "size": args.size,
                               "fps": args.fps, "load_avg_1m_start": round(os.getloadavg()[0], 1)}
    try:
        base = yaml.safe_load(Path(state.config_path).read_text())
        log_dir = Path(state.state_dir) / "logs"
        for mode, bound in (("unbounded", None), ("bounded", int(args.bound_mib * 2**20))):
            raw = json.loads(json.dumps(base))
            tag = f"{mode}-{time.time_ns()}"
            raw["kafka"].setdefault("topics", {})["redacted"] = f"veil.sm.{tag}"
            raw["object_store"]["bucket"] = f"sm-{mode}-{time.time_ns() % 10**9}"
            raw.setdefault("sink", {}).update({"consumer_group": f"sm-{tag}", "segment_seconds": 60,
                                               "idle_flush_s": 600, "max_buffered_bytes": bound,
                                               "status_interval_s": 5,
                                               "spool_dir": str(Path(state.state_dir) / f"spool-{mode}")})
            cfg_path = Path(state.state_dir) / f"sink-memory-{mode}.yaml"
            cfg_path.write_text(yaml.safe_dump(raw, sort_keys=False))
            cfg = load_config(cfg_path)
            create_topics(cfg.kafka.bootstrap_servers, {cfg.kafka.topics.redacted: 4},
                          config={"max.message.bytes": str(DEFAULT_MESSAGE_MAX_BYTES)})
            total, size = feed(cfg, args.cameras, args.chunks, args.fps, frames)
            r = run_sink(cfg_path, log_dir, total, args.cameras, args.timeout)
            store = MinioSegmentStore.from_config(cfg.object_store)
            r["mp4_stored"] = sum(1 for k in store.list_objects("camera=") if k.endswith(".mp4"))
            r["max_buffered_mib"] = None if bound is None else args.bound_mib
            r["payload_kib"] = round(size / 1024, 1)
            r["open_payload_mib"] = round(args.cameras * args.chunks * size / 2**20, 1)
            results[mode] = r
            print(json.dumps({"mode": mode, **r}), flush=True)
    finally:
        down(state_dir=args.state_dir)
    results["load_avg_1m_end"] = round(os.getloadavg()[0], 1)
    emit_json(results, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
