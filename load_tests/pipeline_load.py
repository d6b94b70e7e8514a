"""N cameras of real footage through the real pipeline on the local stack.

    .venv/bin/python load_tests/pipeline_load.py --cameras 2 --seconds 60 --fps 15
    .venv/bin/python load_tests/pipeline_load.py --knee          # largest sustained N

Each camera loops ``--source`` (default: OpenCV's ``vtest.avi`` pedestrian footage, which
``make load`` extracts from Debian's ``opencv-doc``; ``--source crowd``: a crowded hall, about 40
people a frame, built from the shared eval images by ``load_tests/crowd_source.py``) re-encoded once to ``--size`` at
``--fps`` with a keyframe every 2 s, paced in real time, through ingest -> Kafka -> process
(Ray) -> Kafka -> sink -> S3, as separate processes exactly as in production, with the
default policy of ``veilstream up``.

It samples the process stage's consumer lag on the raw topic every 2 s. ``sustained`` is
true when that lag did not grow over the second half of the run (least-squares growth
below one chunk per camera). After the run ingest stops, process gets a bounded drain,
and every frame ingest sent (``frames_sent``: the frames of the chunks in the raw topic) that
is not in the bucket by then counts in ``frames_dropped``. ``frames_offered`` is the nominal cameras x fps x seconds
of the measured window; where the frames ingest never sent went is accounted for, so that
``frames_offered = frames_sent_in_window + sum(ingest_losses) + frames_unaccounted``:
``ingest_losses`` names ``startup_before_first_chunk`` (ingest starting, joining its group and
opening each camera; from the raw topic's first timestamp per camera), every non-zero
``veil_ingest_dropped_frames_total{reason}`` of ingest's own counters at the window's end
(backpressure, producer_full, before_keyframe, ...) and ``unfinished_at_window_end`` (the
chunk each camera was still filling when the window closed). ``frames_sent_outside_window``
were sent after it (ingest is stopped a moment later); ``ingest_drops_final`` are ingest's
counters as its last log line reports them (the stop included).

``--cost`` measures what each camera costs (production segment length, not 20 s): ingest
RSS, threads and fds, sink RSS per open camera and its in-memory payload bytes (sampled
every 2 s), S3 requests by method to the pipeline's buckets (from the S3 server's access
log; the broker's own bucket excluded) and Kafka messages per topic, per camera-hour of
footage streamed; under ``cost`` in the JSON::

    .venv/bin/python load_tests/pipeline_load.py --cost --cameras 100 --size 320x180 --fps 0.5 --seconds 60

Prints a table, then one JSON line (the last line) with ``cameras``, ``fps_offered``,
``frames_offered``, ``frames_stored``, ``frames_dropped``, ``latency_p50_s``,
``latency_p95_s``, ``sustained`` and ``cpu_s_per_frame`` by stage (decode, detect, mask,
encode, kafka, object_store; from the workers' ``veil_*_cpu_seconds_total`` metrics), plus
``cpu_s_per_frame_by_process`` (ingest, process driver, Ray node, sink; from /proc, every
thread; the broker and the S3 server are not counted) and ``capacity_fps_2cpu``: the frames
per second those costs allow on 2 dedicated vCPUs (a bound that does not depend on what
else runs on a shared machine; the sustained flag does). What the local stack itself costs on
the same box is beside it, not in it: ``cpu_s_per_frame_local_stack`` (broker = tansu, s3 = the
S3 server that holds the broker's storage and the buckets; CPU-s per stored frame up to the
sink's stop), ``capacity_fps_2cpu_with_local_stack`` (the bound with them counted) and
``broker_s3_requests_per_chunk`` by kind (record batch GET/PUT and LIST per topic, ``meta``,
watermark, offset and group writes; from the S3 server's access log, per chunk sent).

The machine is shared: report ratios between runs made the same way, never absolute
pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VTEST = ROOT / "out" / "load" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data" / "vtest.avi"
CROWD = "crowd"
"""``--source crowd``: the deterministic crowd clip of ``load_tests/crowd_source.py`` (built once,
cached beside the re-encoded sources)."""
STEPS = ("decode", "detect", "mask", "encode", "kafka", "object_store")


def prepare_source(source: Path, width: int, height: int, fps: float, cache: Path) -> Path:
    """``source`` re-encoded once to H.264 ``width x height`` at ``fps``, keyframe every 2 s,
    no B-frames (what an IP camera sends); cached by name, size and rate."""
    if not source.is_file():
        raise SystemExit(f"source video {source} not found (make load extracts vtest.avi from Debian's "
                         f"opencv-doc; or pass --source FILE)")
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{source.stem}-{width}x{height}-{fps:g}fps.mp4"
    if not out.is_file():
        gop = max(1, int(round(2 * fps)))
        tmp = out.with_suffix(".tmp.mp4")
        if shutil.which("ffmpeg"):
            cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-an",
                   "-vf", f"scale={width}:{height},fps={fps:g}", "-c:v", "libx264", "-preset", "veryfast",
                   "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
                   "-pix_fmt", "yuv420p", str(tmp)]
            subprocess.run(cmd, check=True)
        else:  # no ffmpeg binary: the same encode with PyAV's bundled libx264
            encode_with_pyav(source, tmp, width, height, fps, gop)
        tmp.rename(out)
    return out


def encode_with_pyav(source: Path, out: Path, width: int, height: int, fps: float, gop: int) -> None:
    """``source`` scaled to ``width x height`` and sampled to ``fps``, H.264 with a keyframe
    every ``gop`` frames and no B-frames (what ``prepare_source`` asks ffmpeg for)."""
    from fractions import Fraction

    import av

    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(source)) as inp, av.open(str(out), "w") as dst:
        vs = inp.streams.video[0]
        ost = dst.add_stream("libx264", rate=rate)
        ost.width, ost.height, ost.pix_fmt = width, height, "yuv420p"
        ost.options = {"preset": "veryfast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0",
                       "bf": "0"}
        n = 0
        for frame in inp.decode(vs):
            t = float(frame.time) if frame.time is not None else 0.0
            if t + 1e-6 < n / fps:
                continue  # sampled down to fps
            f = frame.reformat(width=width, height=height, format="yuv420p")
            f.pts, f.time_base = n, 1 / rate
            for pkt in ost.encode(f):
                dst.mux(pkt)
            n += 1
        for pkt in ost.encode(None):
            dst.mux(pkt)


def raw_lag(cfg: Any, consumer: Any) -> int:
    """Messages in the raw topic not yet committed by the process stage's group."""
    from confluent_kafka import TopicPartition

    topic = cfg.kafka.topics.raw
    md = consumer.list_topics(topic, timeout=10)
    parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
    lag = 0
    for tp in consumer.committed(parts, timeout=10):
        lo, hi = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
        lag += max(0, hi - (tp.offset if tp.offset >= 0 else lo))
    return lag


def topic_by_camera(cfg: Any, topic: str, quiet_s: float = 3.0, limit_s: float = 60.0,
                    chunks: bool = True) -> dict[str, dict[str, Any]]:
    """Every message of ``topic`` (read from the start until it stays quiet), per key (the
    camera): ``messages``, and for chunk topics ``frames``, the frames' ``pts_ms`` and
    ``dropped_before_first``: the drops ingest carried in the camera's earliest chunk (frames
    it dropped before any of the camera's chunks got out)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from schemas.messages import decode_chunk_captured

    c = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": f"load-count-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.message.max.bytes": 64 << 20})
    out: dict[str, dict[str, Any]] = {}
    md = c.list_topics(topic, timeout=10)
    if topic not in md.topics or md.topics[topic].error is not None:
        c.close()
        return out
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    t0 = time.monotonic()
    last = t0 + 10.0  # quiet counts from the first message
    try:
        while time.monotonic() - last < quiet_s and time.monotonic() - t0 < limit_s:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                print("count:", m.error(), file=sys.stderr)
                continue
            last = time.monotonic()
            rec = out.setdefault((m.key() or b"").decode("utf-8", "replace"),
                                 {"messages": 0, "bytes": 0, "frames": 0, "pts_ms": [], "dropped_before_first": 0})
            rec["messages"] += 1
            rec["bytes"] += len(m.value() or b"")
            if not chunks:
                continue
            try:
                chunk = decode_chunk_captured(m.value(), m.headers())
            except Exception as exc:  # noqa: BLE001 - a bad message is the DLQ's business, not a frame sent
                print("count:", exc, file=sys.stderr)
                continue
            pts = chunk.pts_ms
            if pts and (not rec["pts_ms"] or pts[0] < min(rec["pts_ms"])):
                rec["dropped_before_first"] = int(chunk.dropped_frames)
            rec["frames"] += len(pts)
            rec["pts_ms"].extend(int(p) for p in pts)
    finally:
        c.close()
    return out


def frames_in_topic(cfg: Any, topic: str, quiet_s: float = 3.0, limit_s: float = 60.0) -> int:
    """Frames of every chunk in ``topic`` (read from the start until it stays quiet)."""
    return sum(int(r["frames"]) for r in topic_by_camera(cfg, topic, quiet_s, limit_s).values())


def ingest_accounting(sent_pts: dict[str, list[int]], cameras: list[str], fps: float, t0_ms: float,
                      t_end_ms: float, drops: dict[str, float],
                      dropped_before_first: dict[str, int] | None = None) -> dict[str, Any]:
    """Where the frames the cameras offered in ``[t0_ms, t_end_ms)`` went, so that
    ``frames_offered == frames_sent_in_window + sum(ingest_losses) + frames_unaccounted``.

    Args:
        sent_pts: per camera, the camera timestamps (ms) of every frame in the raw topic.
        cameras: every camera of the run (one that sent nothing lost its whole window).
        fps: the rate each camera offers.
        drops: ingest's own ``veil_ingest_dropped_frames_total`` per reason, read when the
            window ended (backpressure, producer_full, before_keyframe, ...).
        dropped_before_first: per camera, the drops its first sent chunk carries
            (``dropped_frames``): they lie before that chunk, so they are not start-up.

    Losses: ``startup_before_first_chunk`` (window frames before a camera's first sent
    frame: ingest starting, joining its group, opening the camera), each ingest drop reason
    with a non-zero count, and ``unfinished_at_window_end`` (window frames after a camera's
    last sent frame, for a camera that sent nothing later: the chunk being cut when the
    window closed). ``frames_unaccounted`` is what is left: rounding at the window's end (a
    frame that starts inside the window and ends after it counts whole: up to -1 frame per
    camera, visible at low fps) and a drop after a camera's last sent chunk (counted twice);
    anything larger is a loss no counter names.
    """
    frame_ms = 1000.0 / fps
    per_cam = (t_end_ms - t0_ms) / frame_ms
    offered = int(round(len(cameras) * per_cam))
    startup = unfinished = 0.0
    in_window = outside = 0
    for cam in cameras:
        pts = sorted(sent_pts.get(cam, ()))
        inside = [p for p in pts if t0_ms <= p < t_end_ms]
        in_window += len(inside)
        outside += len(pts) - len(inside)
        if not pts:
            startup += per_cam
            continue
        before = max(0.0, (pts[0] - t0_ms) / frame_ms) - (dropped_before_first or {}).get(cam, 0)
        startup += min(per_cam, max(0.0, before))
        if pts[-1] < t_end_ms and inside:
            unfinished += max(0.0, (t_end_ms - (inside[-1] + frame_ms)) / frame_ms)
    losses: dict[str, int] = {"startup_before_first_chunk": int(round(startup))}
    for reason, n in sorted(drops.items()):
        if n:
            losses[reason] = int(round(n))
    losses["unfinished_at_window_end"] = int(round(unfinished))
    return {"frames_offered": offered, "frames_sent_in_window": in_window, "frames_sent_outside_window": outside,
            "ingest_losses": losses, "frames_unaccounted": offered - in_window - sum(losses.values())}


def growth_over_second_half(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of lag over the second half of the samples, times that half's span."""
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return 0.0
    ts = [t for t, _ in half]
    ys = [float(y) for _, y in half]
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    den = sum((t - mt) ** 2 for t in ts) or 1.0
    slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / den
    return slope * (ts[-1] - ts[0])


def tree_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process and its live descendants (from /proc)."""
    return sum(process_tree_cpu(pid).values())


def process_tree_cpu(pid: int) -> dict[int, float]:
    """User+system CPU seconds of a process and of each live descendant (from /proc), by pid."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu seconds)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        kids = [c for c, (pp, _) in stats.items() if pp == parent and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return {q: stats[q][1] for q in tree if q in stats}


def metric_ports(log_dir: Path) -> dict[str, int]:
    ports = {}
    for name in ("ingest", "process", "sink"):
        log = log_dir / f"{name}.log"
        if log.is_file():
            found = re.findall(r"metrics stage=\w+ port=(\d+)", log.read_text(errors="replace"))
            if found:
                ports[name] = int(found[-1])
    return ports


def _metrics_text(port: int) -> str:
    try:
        return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
    except OSError:
        return ""


def _total(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (any labels) in a /metrics body."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def metric_lag(ports: dict[str, int]) -> int | None:
    """Chunks ingest delivered to Kafka that process has not finished (redacted + DLQ),
    from the workers' own counters: the local broker's watermarks under-report."""
    if "ingest" not in ports or "process" not in ports:
        return None
    ing, proc = _metrics_text(ports["ingest"]), _metrics_text(ports["process"])
    if not ing or not proc:
        return None
    done = _total(proc, "veil_process_chunks_out_total") + _total(proc, "veil_process_dlq_total")
    return int(max(0.0, _total(ing, "veil_ingest_chunks_out_total") - done))


def labelled(text: str, name: str, label: str) -> dict[str, float]:
    """``name{label="v"} x`` samples of a /metrics body as ``{v: x}``."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(rf'^{name}{{[^}}]*{label}="([^"]*)"[^}}]*}} ([0-9.e+-]+)$', text, re.M)}


def final_ingest_drops(log: Path) -> dict[str, int] | None:
    """The drop counts of ingest's last ``ingest stopped ... dropped_frames=r:n,...`` line."""
    if not log.is_file():
        return None
    found = re.findall(r"ingest stopped .* dropped_frames=(\S+)", log.read_text(errors="replace"))
    if not found:
        return None
    return {} if found[-1] == "-" else {r: int(n) for r, n in (kv.split(":") for kv in found[-1].split(","))}


def scrape_cpu(ports: dict[str, int]) -> dict[str, float]:
    """``veil_<stage>_cpu_seconds_total{step=...}`` summed by step over the workers."""
    out: dict[str, float] = {}
    for port in ports.values():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        for m in re.finditer(r'^veil_\w+_cpu_seconds_total\{step="(\w+)"\} ([0-9.e+-]+)$', text, re.M):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    """``KEY.PATH=VALUE`` settings (value read as YAML) written into the config mapping ``raw``."""
    import yaml

    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. ray.detector.replicas=2")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)


def proc_status(pid: int) -> tuple[int, int]:
    """``(RSS bytes, threads)`` of one process from /proc (``(0, 0)`` once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    rss = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    threads = re.search(r"^Threads:\s+(\d+)", text, re.M)
    return (int(rss.group(1)) * 1024 if rss else 0), (int(threads.group(1)) if threads else 0)


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


S3_REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)?(GET|PUT|HEAD|POST|DELETE) /([^/ ?"]+)')


def s3_requests(log: Path, start: int, buckets: set[str]) -> dict[str, int]:
    """Requests to ``buckets`` by method in the S3 server's access log from byte ``start`` on."""
    out: dict[str, int] = {}
    if not log.is_file():
        return out
    with open(log, "rb") as f:
        f.seek(start)
        for line in f.read().decode("utf-8", "replace").splitlines():
            m = S3_REQUEST.search(line)
            if m and m.group(2) in buckets:
                out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


BROKER_OBJECT = re.compile(r'"(?:\x1b\[[0-9;]*m)?(GET|PUT|HEAD|POST|DELETE) /([^/ ?"]+)(/[^ ?"]*)?(\?[^ "]*)?')


def broker_request_kind(method: str, key: str, query: str) -> str:
    """What one request of the broker (tansu's ``s3://`` storage) to its bucket is, from its
    method and object key: ``<method> batch <topic>`` (a record batch), ``LIST <topic>`` (a
    fetch lists the partition's batches), ``PUT meta`` (the idempotent producers' sequences,
    one per produce), ``PUT watermark <topic>`` (one per produce), ``PUT offsets <group>`` (a
    commit, one per partition), ``PUT group <group>`` (the group's state), else ``<method> other``."""
    if method == "GET" and not key.strip("/") and "list-type" in query:
        m = re.search(r"prefix=[^&]*?topics/([^/&]+)/", query)
        return f"LIST {m.group(1) if m else '?'}"
    m = re.search(r"/topics/([^/]+)/partitions/\d+/(records/\d+\.batch|watermark\.json)$", key)
    if m:
        return f"{method} {'batch' if m.group(2).endswith('.batch') else 'watermark'} {m.group(1)}"
    m = re.search(r"/groups/consumers/([^/]+?)(\.json|/offsets/.*)$", key)
    if m:
        return f"{method} {'group' if m.group(2) == '.json' else 'offsets'} {m.group(1)}"
    if key.endswith("/meta.json"):
        return f"{method} meta"
    return f"{method} other"


def broker_requests(log: Path, start: int, end: int | None, bucket: str) -> dict[str, int]:
    """Requests of the broker to its ``bucket`` in the S3 server's access log between byte
    ``start`` and ``end`` (None: the end of the file), by :func:`broker_request_kind`."""
    out: dict[str, int] = {}
    if not log.is_file():
        return out
    with open(log, "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(max(0, end - start))
    for line in data.decode("utf-8", "replace").splitlines():
        m = BROKER_OBJECT.search(line)
        if m and m.group(2) == bucket:
            kind = broker_request_kind(m.group(1), m.group(3) or "", m.group(4) or "")
            out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def local_stack_summary(cpu_s: dict[str, float], pipeline_cpu_s: float, requests: dict[str, int], frames: int,
                        chunks: int) -> dict[str, Any]:
    """What the local stack's broker and S3 server cost per stored frame (``cpu_s``: CPU-s of
    each one's process tree) and the broker's S3 requests per chunk sent, by kind. Kept out of
    ``capacity_fps_2cpu`` (production brokers and object stores run elsewhere), but on this
    box they share the same 2 vCPU: ``capacity_fps_2cpu_with_local_stack`` counts them too
    (``pipeline_cpu_s``: ingest, process, Ray and sink, the CPU ``capacity_fps_2cpu`` counts)."""
    per_frame, per_chunk = 1.0 / max(frames, 1), 1.0 / max(chunks, 1)
    total = (pipeline_cpu_s + sum(cpu_s.values())) * per_frame
    return {
        "cpu_s_per_frame_local_stack": {n: round(v * per_frame, 4) for n, v in cpu_s.items()},
        # the broker stores every chunk sent, stored or not: per chunk sent reads the same in a run
        # that fell behind (per stored frame counts that work over fewer frames)
        "cpu_ms_per_chunk_sent_local_stack": {n: round(1000 * v * per_chunk, 2) for n, v in cpu_s.items()},
        "capacity_fps_2cpu_with_local_stack": round(2.0 / max(1e-9, total), 1),
        "broker_s3_requests": requests,
        "broker_s3_requests_per_chunk": {k: round(n * per_chunk, 3) for k, n in requests.items()},
        "broker_s3_requests_per_chunk_total": round(sum(requests.values()) * per_chunk, 2),
    }


def cost_summary(samples: list[dict[str, Any]], cameras: int, camera_hours: float, segments: int,
                 segment_seconds: float, chunk_seconds: float, s3: dict[str, int],
                 messages: dict[str, int]) -> dict[str, Any]:
    """Per-camera costs of one run from its samples (see ``--cost``)."""
    def peak(key: str) -> int:
        return max((int(x[key]) for x in samples), default=0)

    busiest = max(samples, key=lambda x: (x["sink_open_segments"], x["t"]), default=None)
    per_hour = 1.0 / camera_hours if camera_hours > 0 else 0.0
    puts = s3.get("PUT", 0)
    return {
        "ingest_rss_mib": round(peak("ingest_rss") / 2**20, 1),
        "ingest_rss_mib_per_camera": round(peak("ingest_rss") / 2**20 / cameras, 2),
        "ingest_threads": peak("ingest_threads"),
        "ingest_threads_per_camera": round(peak("ingest_threads") / cameras, 2),
        "ingest_fds": peak("ingest_fds"),
        "sink_rss_mib": round(peak("sink_rss") / 2**20, 1),
        "sink_open_segments_peak": peak("sink_open_segments"),
        "sink_rss_mib_at_peak_open": round(busiest["sink_rss"] / 2**20, 1) if busiest else None,
        "sink_rss_mib_per_open_camera": (round(busiest["sink_rss"] / 2**20 / busiest["sink_open_segments"], 2)
                                         if busiest and busiest["sink_open_segments"] else None),
        "sink_buffered_mib_peak": round(peak("sink_buffered") / 2**20, 2),
        "sink_threads": peak("sink_threads"),
        "camera_hours": round(camera_hours, 4),
        "s3_requests": s3,
        "segments_stored": segments,
        "s3_puts_per_segment": round(puts / segments, 2) if segments else None,
        # a short run ends every camera's segment early (at stop): the steady rate is
        # PUTs per segment x segments per hour at the configured segment length
        "s3_puts_per_camera_hour_measured": round(puts * per_hour),
        "s3_puts_per_camera_hour_steady": round(puts / segments * 3600 / segment_seconds) if segments else None,
        "s3_requests_per_camera_hour_measured": round(sum(s3.values()) * per_hour),
        "kafka_messages": messages,
        "kafka_messages_per_camera_hour": {t: round(n * per_hour) for t, n in messages.items()},
        "kafka_chunk_messages_per_camera_hour_steady": round(3600 / chunk_seconds),
    }


def sample_usage(pids: dict[str, int], ports: dict[str, int], t: float) -> dict[str, Any]:
    """One ``--cost`` sample: ingest and sink RSS, threads and fds; the sink's open segments
    and buffered payload bytes (its own gauges)."""
    ing_rss, ing_threads = proc_status(pids["ingest"])
    sink_rss, sink_threads = proc_status(pids["sink"])
    text = _metrics_text(ports["sink"]) if "sink" in ports else ""
    return {"t": round(t, 1), "ingest_rss": ing_rss, "ingest_threads": ing_threads,
            "ingest_fds": open_fds(pids["ingest"]), "sink_rss": sink_rss, "sink_threads": sink_threads,
            "sink_open_segments": int(_total(text, "veil_sink_inflight_chunks")),
            "sink_buffered": int(labelled(text, "veil_sink_buffered_bytes", "place").get("memory", 0))}


class StageExitedError(RuntimeError):
    """A stage exited while the run still needed it (its own error line in the message)."""


def exited_stage(procs: dict[str, Any], log_dir: Path, offsets: dict[str, int] | None = None) -> str | None:
    """One line for the first stage in ``procs`` (name -> ``Popen``) that has exited: its name,
    exit code and its own error (the CLI's ``veilstream: error: ...`` line, e.g. the process
    stage's start-up check that the actors fit the local Ray, else the last line it logged
    since ``offsets[name]``); ``None`` while every one runs. Any exit counts: a stage stops only
    when this run stops it, after taking it out of ``procs``."""
    for name, proc in procs.items():
        code = proc.poll()
        if code is None:
            continue
        log = log_dir / f"{name}.log"
        try:
            with open(log, "rb") as f:
                f.seek((offsets or {}).get(name, 0))
                lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        errors = [ln.split("veilstream: error:", 1)[1].strip() for ln in lines if "veilstream: error:" in ln]
        why = errors[-1] if errors else (lines[-1] if lines else "nothing logged")
        return f"{name} stage exited with code {code}: {why} (log: {log})"
    return None


def _fail_if_exited(workers: Any, log_dir: Path) -> None:
    line = exited_stage(workers.procs, log_dir, workers.log_offsets)
    if line is not None:
        raise StageExitedError(line)


def run_once(cameras: int, seconds: float, source: Path, fps: float, state_dir: Path, drain_s: float,
             out: Any = print, overrides: list[str] | None = None, cost: bool = False,
             hooks: Any = None, broker_storage: str = "s3") -> dict[str, Any]:
    """One run; ``hooks`` (optional) gets ``started(state)`` once the local stack is up, before
    the workers start, and ``finished(cfg, raw_topic)`` (a dict merged into the result) after
    they stopped, while the stack still runs (``load_tests/cluster_load.py`` adds Ray nodes)."""
    import yaml
    from confluent_kafka import Consumer

    from pipeline import runner
    from pipeline.devstack.stack import BROKER_BUCKET, down, up
    from schemas.config import load_config

    state = up(state_dir=state_dir, broker_storage=broker_storage)
    workers = None
    extra: dict[str, Any] = {}
    try:
        if hooks is not None:
            hooks.started(state)
        cfg_path = Path(state.config_path)
        raw = yaml.safe_load(cfg_path.read_text())
        raw.setdefault("ingest", {})["cameras"] = [
            {"camera_id": f"cam-{i + 1:03d}", "url": str(source), "kind": "file", "loop": True, "realtime": True}
            for i in range(cameras)]
        if not cost:  # --cost keeps the production segment length: S3 requests per hour depend on it
            raw.setdefault("sink", {}).update({"segment_seconds": 20.0, "idle_flush_s": 10.0})
        apply_overrides(raw, overrides or [])
        run_cfg = cfg_path.with_name("load-config.yaml")
        run_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
        cfg = load_config(run_cfg)
        log_dir = run_cfg.parent / "logs"
        workers = runner.Workers(run_cfg, log_dir)
        workers.start()
        ray_pid = next((p["pid"] for p in state.processes if "ray" in str(p.get("name", ""))), None)
        pids = {**{n: p.pid for n, p in workers.procs.items()}, **({"ray": ray_pid} if ray_pid else {})}
        cpu0 = {n: tree_cpu_s(pid) for n, pid in pids.items()}
        # the local stack's broker and S3 server: not in capacity_fps_2cpu, reported beside it
        stack_pids = {str(p["name"]): int(p["pid"]) for p in state.processes if p.get("name") in ("broker", "s3")}
        stack0 = {n: tree_cpu_s(pid) for n, pid in stack_pids.items()}
        admin = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": cfg.process.consumer_group,
                          "enable.auto.commit": False})
        samples: list[tuple[float, int]] = []  # lag from the workers' counters (broker lag when absent)
        usage: list[dict[str, Any]] = []  # --cost: RSS, threads, open segments over the run
        s3_log = Path(state.state_dir) / "logs" / "s3.log"
        s3_start = s3_log.stat().st_size if s3_log.is_file() else 0
        t0 = time.time()
        try:
            while time.time() < t0 + seconds:
                _fail_if_exited(workers, log_dir)
                ports = metric_ports(log_dir)
                lag = metric_lag(ports)
                samples.append((time.time() - t0, lag if lag is not None else raw_lag(cfg, admin)))
                if cost:
                    usage.append(sample_usage(pids, ports, time.time() - t0))
                # the last sleep ends at the window's end, not up to 2 s past it: ingest is stopped
                # then, so a run's last frame per camera is sent (or not) by the window, not by how
                # long the samples took (0.5 fps cameras: one frame each, ~4 % of the window)
                time.sleep(max(0.0, min(2.0, t0 + seconds - time.time())))
            lag_end = samples[-1][1] if samples else raw_lag(cfg, admin)
        finally:
            admin.close()
        # the window is over: ingest's own drop counters now, before anything is stopped
        ports = metric_ports(log_dir)
        ing_text = _metrics_text(ports["ingest"]) if "ingest" in ports else ""
        drops_window = labelled(ing_text, "veil_ingest_dropped_frames_total", "reason")
        # stop: ingest now, process after a bounded drain, then sink (flushes open segments)
        cpu_ingest = tree_cpu_s(pids["ingest"]) - cpu0["ingest"]
        t_stop = time.time()
        runner._stop(workers.procs.pop("ingest"), "ingest", 30)
        drops_final = final_ingest_drops(log_dir / "ingest.log")
        # in slices: a process stage that exited (e.g. after a window shorter than its start-up)
        # stops the run with its error instead of a drain that cannot finish and "0 stored"
        drain_end = time.time() + drain_s
        while True:
            _fail_if_exited(workers, log_dir)
            left = drain_end - time.time()
            if left <= 0 or runner._wait_drained(cfg, cfg.kafka.topics.raw, cfg.process.consumer_group,
                                                 timeout_s=min(5.0, left), warn=False):
                break
        _fail_if_exited(workers, log_dir)
        steps = scrape_cpu(ports)
        cpu_run = {n: tree_cpu_s(pid) - cpu0[n] for n, pid in pids.items()}  # run + drain: every stored frame
        cpu_run["ingest"] = cpu_ingest
        runner._stop(workers.procs.pop("process"), "process", 120)
        runner._wait_drained(cfg, cfg.kafka.topics.redacted, cfg.sink.consumer_group, timeout_s=15, warn=False)
        steps_sink = scrape_cpu({"sink": ports["sink"]} if "sink" in ports else {})
        runner._stop(workers.procs.pop("sink"), "sink", 120)
        # every stored frame's broker and S3 work is done (before this harness reads the topics)
        stack_cpu = {n: tree_cpu_s(pid) - stack0[n] for n, pid in stack_pids.items()}
        s3_end = s3_log.stat().st_size if s3_log.is_file() else 0
        per_cam = runner.report(cfg, t0, out=lambda *_a: None)
        raw_topic = topic_by_camera(cfg, cfg.kafka.topics.raw)
        sent = sum(int(r["frames"]) for r in raw_topic.values())
        chunks_sent = sum(int(r["messages"]) for r in raw_topic.values())
        broker_reqs = broker_requests(s3_log, s3_start, s3_end, BROKER_BUCKET)
        lat = [x for xs in runner.chunk_latencies(cfg).values() for x in xs]
        costs = None
        if cost:
            t = cfg.kafka.topics
            messages = {"raw": sum(int(r["messages"]) for r in raw_topic.values())}
            for name, topic in (("redacted", t.redacted), ("audit", t.audit), ("dlq", t.dlq)):
                messages[name] = sum(int(r["messages"]) for r in
                                     topic_by_camera(cfg, topic, quiet_s=2.0, chunks=False).values())
            spans = [max(r["pts_ms"]) - min(r["pts_ms"]) + 1000.0 / fps for r in raw_topic.values() if r["pts_ms"]]
            buckets = {cfg.object_store.bucket, cfg.object_store.audit_bucket, cfg.object_store.raw_bucket}
            costs = cost_summary(usage, cameras, sum(spans) / 3.6e6,
                                 sum(int(c["segments"]) for c in per_cam.values()), cfg.sink.segment_seconds,
                                 cfg.ingest.chunk_seconds, s3_requests(s3_log, s3_start, buckets), messages)
            costs["ingest_seconds_after_window"] = round(t_stop - (t0 + seconds), 1)
            # ingest's CPU over the window, per camera-hour streamed (the broker's excluded)
            costs["ingest_cpu_s_per_camera_hour"] = round(cpu_ingest / max(1e-9, costs["camera_hours"]), 1)
        if hooks is not None:
            extra = hooks.finished(cfg, raw_topic)
    finally:
        if workers is not None:
            workers.kill_all()
        if hooks is not None:
            hooks.stop()
        down(state_dir=state_dir)
    for k, v in steps_sink.items():
        steps[k] = max(steps.get(k, 0.0), v)
    offered = int(round(cameras * fps * seconds))
    cam_ids = [f"cam-{i + 1:03d}" for i in range(cameras)]
    accounting = ingest_accounting({c: r["pts_ms"] for c, r in raw_topic.items()}, cam_ids, fps, t0 * 1000.0,
                                   (t0 + seconds) * 1000.0, drops_window,
                                   {c: int(r["dropped_before_first"]) for c, r in raw_topic.items()})
    stored = sum(int(c["frames"]) for c in per_cam.values())
    growth = growth_over_second_half(samples)
    per_frame = max(stored, 1)
    res = {
        "cameras": cameras, "settings": list(overrides or []), "fps_offered": round(cameras * fps, 1),
        "seconds": seconds, "source": source.name, "broker_storage": broker_storage,
        "frames_offered": offered, "frames_sent": sent, "frames_stored": stored,
        # offered = sent_in_window + sum(ingest_losses) + unaccounted (see ingest_accounting)
        **{k: v for k, v in accounting.items() if k != "frames_offered"},
        "ingest_drops_final": drops_final,
        "frames_dropped": max(0, (offered if sent is None else sent) - stored),
        "frames_dropped_by_policy": sum(int(c["dropped"]) for c in per_cam.values()),
        "latency_p50_s": round(runner._pct(lat, 0.5), 2) if lat else None,
        "latency_p95_s": round(runner._pct(lat, 0.95), 2) if lat else None,
        "lag_end_chunks": lag_end, "lag_growth_second_half_chunks": round(growth, 1),
        "sustained": bool(samples) and growth < max(1.0, float(cameras)),
        "cpu_s_per_frame": {s: (round(steps[s] / per_frame, 4) if s in steps else None) for s in STEPS},
        "cpu_s_per_frame_by_process": {n: round(v / per_frame, 4) for n, v in cpu_run.items()},
        "capacity_fps_2cpu": round(2.0 / max(1e-9, sum(cpu_run.values()) / per_frame), 1),
        **local_stack_summary(stack_cpu, sum(cpu_run.values()), broker_reqs, stored, chunks_sent),
        "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if costs is not None:
        res["cost"] = costs
    res.update(extra)
    return res


def table(rows: list[dict[str, Any]], out: Any = print) -> None:
    out(f"{'cams':>4} {'fps in':>7} {'offered':>8} {'sent':>6} {'stored':>7} {'dropped':>7} {'p50 s':>6} {'p95 s':>6} "
        f"{'lag end':>7} {'growth':>6} {'sustained':>9}  cpu s/frame decode/detect/mask/encode/kafka/store")
    for r in rows:
        c = r["cpu_s_per_frame"]
        cpu = "/".join("-" if c[s] is None else f"{c[s]:.3f}" for s in STEPS)
        sent = r.get("frames_sent")
        out(f"{r['cameras']:>4} {r['fps_offered']:>7} {r['frames_offered']:>8} {'-' if sent is None else sent:>6} "
            f"{r['frames_stored']:>7} "
            f"{r['frames_dropped']:>7} {r['latency_p50_s'] if r['latency_p50_s'] is not None else '-':>6} "
            f"{r['latency_p95_s'] if r['latency_p95_s'] is not None else '-':>6} {r['lag_end_chunks']:>7} "
            f"{r['lag_growth_second_half_chunks']:>6} {str(r['sustained']):>9}  {cpu}")
        stack = r.get("cpu_s_per_frame_local_stack")
        if stack is not None:
            out(f"{'':>4} local stack (not in capacity_fps_2cpu {r['capacity_fps_2cpu']}): CPU-s/frame "
                + " ".join(f"{n} {v:.4f}" for n, v in sorted(stack.items()))
                + f"; with it {r['capacity_fps_2cpu_with_local_stack']} fps per 2 vCPU; broker S3 requests/chunk "
                f"{r['broker_s3_requests_per_chunk_total']}")


def emit_json(result: dict[str, Any], json_out: Path | None) -> None:
    """The result as the last line of output (and into ``json_out`` when given)."""
    line = json.dumps(result)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(line + "\n")
    print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--source", type=Path, default=None,
                    help="video file (default: OpenCV's vtest.avi), or 'crowd': the crowded 1280x720 clip "
                         "load_tests/crowd_source.py builds from the shared eval images (about 40 people a frame)")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--size", default="1280x720", help="WxH every camera sends (default 1280x720)")
    ap.add_argument("--drain-seconds", type=float, default=30.0, help="process drain after ingest stops")
    ap.add_argument("--knee", action="store_true", help="search the largest sustained camera count")
    ap.add_argument("--cost", action="store_true", help="also measure per-camera costs (RSS, threads, S3 requests, "
                    "Kafka messages) with the production segment length")
    ap.add_argument("--max-cameras", type=int, default=8, help="--knee: upper bound")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON result here")
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".veilstream" / "load",
                    help="the local stack's state directory (a separate one per concurrent run)")
    ap.add_argument("--broker-storage", choices=("s3", "memory"), default="s3",
                    help="the local broker's storage: s3 (default, durable in the local S3 server, as `veilstream "
                         "up` runs it) or memory (lost on a broker restart; measures what the durable one costs)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="config setting for the run, value as YAML (repeatable), e.g. ray.detector.threads=1")
    args = ap.parse_args()
    models = ROOT.parent / "shared" / "models"  # what the Makefile exports; the workers inherit it
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))
    w, h = (int(v) for v in args.size.lower().split("x"))
    sources = ROOT / "out" / "load" / "sources"
    if args.source is not None and str(args.source) == CROWD:
        from load_tests.crowd_source import build_crowd_clip

        args.source = build_crowd_clip(sources)
    source = prepare_source(args.source or VTEST, w, h, args.fps, sources)
    state = args.state_dir
    try:
        return _run(args, source, state)
    except StageExitedError as exc:  # one line, no traceback: the stage's own error says what to change
        print(f"pipeline_load: error: {exc}", file=sys.stderr, flush=True)
        return 1


def _run(args: argparse.Namespace, source: Path, state: Path) -> int:
    rows: list[dict[str, Any]] = []
    if not args.knee:
        rows.append(run_once(args.cameras, args.seconds, source, args.fps, state, args.drain_seconds,
                             overrides=args.overrides, cost=args.cost, broker_storage=args.broker_storage))
        result: dict[str, Any] = rows[0]
    else:
        # exponential then binary search: sustained(N) is assumed monotone in N
        lo, hi, n = 0, args.max_cameras + 1, 1
        tried: dict[int, dict[str, Any]] = {}
        while lo + 1 < hi:
            r = tried[n] = run_once(n, args.seconds, source, args.fps, state, args.drain_seconds,
                                   overrides=args.overrides, broker_storage=args.broker_storage)
            rows.append(r)
            print(f"cameras={n} sustained={r['sustained']} p95={r['latency_p95_s']}", file=sys.stderr, flush=True)
            if r["sustained"] and (r["latency_p95_s"] or 1e9) < 10.0:
                lo = n
                n = min(n * 2, hi - 1) if hi > args.max_cameras else (lo + hi) // 2
            else:
                hi = n
                n = (lo + hi) // 2
            if n <= lo or n >= hi:
                n = (lo + hi) // 2
        result = {"knee_cameras": lo, "fps_per_camera": args.fps, "size": args.size, "source": source.name,
                  "runs": sorted(tried.values(), key=lambda r: r["cameras"])}
    table(sorted(rows, key=lambda r: r["cameras"]))
    emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
