"""CPU per snapshot-camera frame through the process stage's real Ray actors: one chunk per
chunk-actor call against several (issue 19 "Throughput", item 3).

Starts the process stage's own actors on a local Ray exactly as ``veilstream process`` does
(:meth:`pipeline.process.worker.ProcessWorker._start_ray`: the detector actor, the chunk
actors, their placement groups), cuts ``make load``'s 320x180 0.5 fps source into chunks as
ingest does (one frame per chunk), and pushes ``--chunks`` of them through, keeping
``process.max_inflight_chunks`` in flight like the stage (what a backlog looks like), in each
mode:

* ``single``: every chunk its own ``ChunkActor.redact`` call (``_submit_task``; before);
* ``batch``: the chunks freed slots let in go as :func:`~pipeline.process.batching.plan_batches`
  groups through ``ChunkActor.redact_many`` (``_submit_batch``; the stage's default now);
  ``batchN``: the same with at most N chunks a call (default ``--max-chunks``);
* ``MODE@tN``: MODE on a second set of the stage's actors whose detector runs N inference
  threads (``ray.detector.threads``; the first set has the config's default, ``null``: all
  cores), started in the same Ray, so both are measured in one process.

Reported per mode: CPU-s per frame of the whole Ray process tree plus this driver (from
/proc), the detection CPU the actors report (``cpu_s["detect"]``), the rest (Ray calls, object
transfers, decode, mask, encode, Ray's own processes), and wall time. Modes are interleaved
round by round in one process, so they see the same machine load: compare within one run.

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/chunk_batch_cost.py \\
        --chunks 240 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_load import tree_cpu_s  # noqa: E402

from pipeline.ingest.source import camera_chunks  # noqa: E402
from pipeline.process.actors import ChunkResult, ChunkTask  # noqa: E402
from pipeline.process.batching import BatchLimits, plan_batches, task_pixels  # noqa: E402
from schemas.config import parse_camera, parse_config  # noqa: E402

SOURCE = Path(__file__).resolve().parents[1] / "out" / "load" / "sources" / "vtest-320x180-0.5fps.mp4"


def snapshot_tasks(source: Path, n: int) -> list[ChunkTask]:
    """``n`` chunks of the snapshot source, cut as ingest cuts them (2 s chunks at 0.5 fps: one
    frame each), from 100 cameras in turn."""
    if not source.is_file():
        raise SystemExit(f"{source} not found: `make load CAMERAS=1 FPS=0.5 LOAD_ARGS=\"--size 320x180\"` builds it")
    cam = parse_camera({"camera_id": "cam-000", "url": str(source), "kind": "file", "loop": False,
                        "realtime": False})
    raw = list(camera_chunks(cam, 2.0, 90))
    if not raw:
        raise SystemExit(f"{source}: no chunks")
    return [ChunkTask(r.codec, r.payload, f"cam-{i % 100:03d}", r.fps, r.pts_ms, r.width, r.height)
            for i, r in enumerate(raw[j % len(raw)] for j in range(n))]


def push(worker: Any, tasks: list[ChunkTask], mode: str, window: int, limits: BatchLimits) -> dict[str, float]:
    """All ``tasks`` through the actors, ``window`` in flight; CPU and wall of the run."""
    import ray

    inflight: dict[Any, ChunkTask] = {}
    worker.handler = type("H", (), {"inflight": inflight})()  # what _least_loaded reads
    todo = list(tasks)
    detect = frames = calls = failed = 0.0
    me = os.getpid()
    cpu0, t0 = tree_cpu_s(me), time.perf_counter()
    while todo or inflight:
        free = window - len(inflight)
        if free > 0 and todo:
            take, todo = todo[:free], todo[free:]
            if mode == "single":
                groups = [[i] for i in range(len(take))]
            else:
                k = int(mode[len("batch"):] or limits.max_chunks)
                groups = plan_batches([task_pixels(len(t.pts_ms), t.width, t.height) for t in take],
                                      BatchLimits(k, limits.max_pixels), len(worker.workers), len(inflight))
            for g in groups:
                calls += 1
                refs = ([worker._submit_task(take[g[0]])] if len(g) == 1
                        else worker._submit_batch([take[i] for i in g]))
                for ref, i in zip(refs, g):
                    inflight[ref] = take[i]
        ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0.02, fetch_local=True)
        for ref in ready:
            inflight.pop(ref)
            res: ChunkResult = ray.get(ref)
            if res.failed_stage is not None or res.outage or res.fail_closed_frames:
                failed += 1
            detect += res.cpu_s.get("detect", 0.0)
            frames += len(res.pts_ms)
    return {"cpu_s": tree_cpu_s(me) - cpu0, "wall_s": time.perf_counter() - t0, "detect_s": detect,
            "frames": frames, "calls": calls, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=240, help="chunks (frames) per mode and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="single,batch")
    ap.add_argument("--max-chunks", type=int, default=BatchLimits().max_chunks)
    ap.add_argument("--max-pixels", type=int, default=BatchLimits().max_pixels)
    ap.add_argument("--source", type=Path, default=SOURCE)
    args = ap.parse_args(argv)

    import ray

    from pipeline.process.worker import ProcessWorker

    modes = args.modes.split(",")
    threads = sorted({m.split("@t", 1)[1] for m in modes if "@t" in m})
    # Ray's CPUs are bookkeeping here (the threads are what run): room for every set's placement groups
    cfg = parse_config({"ray": {"num_cpus": 2 * (1 + len(threads))}, "metrics": {"enabled": False}})
    sets: dict[str, Any] = {"": ProcessWorker(cfg)}
    sets[""]._start_ray()
    for t in threads:
        if not t.isdigit() or int(t) < 1:
            raise SystemExit(f"mode suffix @t{t}: expected @tN with N >= 1")
        sets[t] = ProcessWorker(parse_config({"ray": {"num_cpus": cfg.ray.num_cpus, "detector": {"threads": int(t)}},
                                              "metrics": {"enabled": False}}))
        sets[t]._start_ray()
    limits = BatchLimits(args.max_chunks, args.max_pixels)
    tasks = snapshot_tasks(args.source, args.chunks)
    window = cfg.process.max_inflight_chunks
    for m in modes:
        b = m.split("@t", 1)[0]
        if b != "single" and not (b.startswith("batch") and (b[5:] == "" or b[5:].isdigit())):
            raise SystemExit(f"unknown mode {m!r}: single, batch or batchN, each optionally @tN")
    try:
        for mode in modes:  # warm-up: sessions, static compiles, Ray workers
            push(sets[mode.partition("@t")[2]], tasks[:48], mode.partition("@t")[0], window, limits)
        tot: dict[str, dict[str, float]] = {m: {} for m in modes}
        for r in range(args.rounds):
            for mode in modes:
                got = push(sets[mode.partition("@t")[2]], tasks, mode.partition("@t")[0], window, limits)
                for k, v in got.items():
                    tot[mode][k] = tot[mode].get(k, 0.0) + v
                print(f"round {r} {mode:<6} cpu/frame {got['cpu_s'] / got['frames']:.4f}  detect/frame "
                      f"{got['detect_s'] / got['frames']:.4f}  wall/frame {got['wall_s'] / got['frames']:.4f}  "
                      f"calls {got['calls']:.0f}  fail-closed/failed {got['failed']:.0f}  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for w in sets.values():
            w._release_actors(ray)
        ray.shutdown()
    out = {}
    for mode, t in tot.items():
        n = t["frames"]
        out[mode] = {"cpu_s_per_frame": round(t["cpu_s"] / n, 4), "detect_s_per_frame": round(t["detect_s"] / n, 4),
                     "rest_s_per_frame": round((t["cpu_s"] - t["detect_s"]) / n, 4),
                     "wall_s_per_frame": round(t["wall_s"] / n, 4), "chunks_per_call": round(n / t["calls"], 2),
                     "failed": int(t["failed"])}
    base = out[modes[0]]["cpu_s_per_frame"]
    for mode, o in out.items():
        print(f"{mode:<6} CPU-s/frame {o['cpu_s_per_frame']:.4f} (x{o['cpu_s_per_frame'] / base:.2f})  detect "
              f"{o['detect_s_per_frame']:.4f}  rest {o['rest_s_per_frame']:.4f}  wall {o['wall_s_per_frame']:.4f}  "
              f"chunks/call {o['chunks_per_call']}")
    print(json.dumps({"modes": out, "chunks": args.chunks, "rounds": args.rounds, "limits": vars(limits),
                      "load_avg": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
