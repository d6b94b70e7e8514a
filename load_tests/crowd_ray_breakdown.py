"""Where a crowded 720p frame's CPU goes in the process stage's Ray, by process, against the
per-step CPU the chunks report (issue 19, crowd target; docs/performance.md, session 11, "the Ray
remainder of a crowd frame").

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/crowd_ray_breakdown.py \\
        [--chunks 6] [--rounds 2] [--window 4] [--idle-s 5]

Starts the process stage's own actors (default layout: one detector actor, two chunk actors;
:meth:`pipeline.process.worker.ProcessWorker._start_ray`) in a local Ray and pushes ``--chunks``
chunks of ``make load SOURCE=crowd``'s source (1280x720@15, cut as ingest cuts it: 2 s, 60 frames)
through ``ChunkActor.redact``, ``--window`` in flight (as ``process.max_inflight_chunks``). CPU is
read from /proc for every process of the tree, grouped by role (``snapshot_cpu_breakdown.role_of``),
and set against what the chunks report (``ChunkResult.cpu_s``: decode, mask, encode are thread
time in the chunk actor; detect is process time around the detector's batch): per frame, each
role's CPU, the reported steps, and the rest (the chunk actor's CPU less decode + mask + encode;
the detector's less detect). Before pushing, the idle tree is measured for ``--idle-s``.
Read the ratios when the machine is shared.
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

from snapshot_cpu_breakdown import ROLES, diff, tree_cpu_by_role  # noqa: E402

from pipeline.process.actors import ChunkResult, ChunkTask  # noqa: E402
from schemas.config import parse_config  # noqa: E402

STEPS = ("decode", "detect", "mask", "encode")


def actor_pids(root: int, name: str) -> list[int]:
    """Live descendants of ``root`` whose command line names ``name`` (e.g. ``ChunkActor``)."""
    from pipeline_load import process_tree_cpu

    out = []
    for q in process_tree_cpu(root):
        try:
            if name in Path(f"/proc/{q}/cmdline").read_bytes().decode(errors="replace"):
                out.append(q)
        except OSError:
            continue
    return out


def thread_cpu(pids: list[int]) -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, tid) -> (thread name, user+system CPU-s) of every live thread of ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[tuple[int, int], tuple[str, float]] = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                raw = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            except OSError:
                continue
            comm = raw[raw.index("(") + 1:raw.rindex(")")]
            f = raw.rsplit(")", 1)[1].split()
            out[(pid, tid)] = (comm, (int(f[11]) + int(f[12])) / tick)
    return out


def by_thread_name(before: dict[tuple[int, int], tuple[str, float]],
                   after: dict[tuple[int, int], tuple[str, float]]) -> dict[str, float]:
    """CPU-s between two :func:`thread_cpu` snapshots by thread name (threads alive at the end)."""
    out: dict[str, float] = {}
    for key, (comm, cpu) in after.items():
        out[comm] = out.get(comm, 0.0) + cpu - before.get(key, (comm, 0.0))[1]
    return out


def crowd_tasks(n: int) -> list[ChunkTask]:
    from load_tests.stage_cost import crowd_source
    from operators.codec import split_gops

    gops = [g for _, g in zip(range(n), split_gops(str(crowd_source()), 2.0))]
    return [ChunkTask("h264", g.payload, f"cam-{i % 3}", g.fps, tuple(g.pts_ms), g.width, g.height)
            for i, g in enumerate(gops)]


def push(worker: Any, tasks: list[ChunkTask], window: int) -> dict[str, float]:
    import ray

    inflight: dict[Any, ChunkTask] = {}
    worker.handler = type("H", (), {"inflight": inflight})()  # what _least_loaded reads
    todo = list(tasks)
    got: dict[str, float] = dict.fromkeys((*STEPS, "frames", "failed"), 0.0)
    while todo or inflight:
        while todo and len(inflight) < window:
            t = todo.pop(0)
            inflight[worker._submit_task(t)] = t
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.05, fetch_local=True)
        for ref in ready:
            inflight.pop(ref)
            worker._sent.pop(ref, None)
            res: ChunkResult = ray.get(ref)
            if res.failed_stage is not None or res.outage or res.fail_closed_frames:
                got["failed"] += 1
            for k in STEPS:
                got[k] += res.cpu_s.get(k, 0.0)
            got["frames"] += len(res.pts_ms)
    return got


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--idle-s", type=float, default=5.0)
    args = ap.parse_args(argv)
    import ray

    from pipeline.process.worker import ProcessWorker

    me = os.getpid()
    worker = ProcessWorker(parse_config({"ray": {"num_cpus": 2}, "metrics": {"enabled": False}}))
    worker._start_ray()
    tasks = crowd_tasks(args.chunks)
    rows: list[dict[str, float]] = []
    try:
        push(worker, tasks[:2], args.window)  # warm-up: sessions, compiles, Ray workers
        c0, t0 = tree_cpu_by_role(me), time.perf_counter()
        time.sleep(args.idle_s)
        idle = {k: v / (time.perf_counter() - t0) for k, v in diff(c0, tree_cpu_by_role(me)).items()}
        print("idle CPU-s per second: " + "  ".join(f"{k} {v:.4f}" for k, v in idle.items()), flush=True)
        chunk_pids = actor_pids(me, "ChunkActor")
        for r in range(args.rounds):
            th0 = thread_cpu(chunk_pids)
            c0, t0 = tree_cpu_by_role(me), time.perf_counter()
            got = push(worker, tasks, args.window)
            by = diff(c0, tree_cpu_by_role(me))
            th = by_thread_name(th0, thread_cpu(chunk_pids))
            n = got["frames"]
            # threads that ended during the round (FFmpeg's per-chunk decoder threads) are not in
            # /proc/PID/task any more: the chunk actors' CPU less that of the threads still alive
            th["(threads ended during the round)"] = by["chunk_actor"] - sum(th.values())
            print(f"round {r} chunk actors by thread name, CPU-s per frame: " + "  ".join(
                f"{k} {v / n:.4f}" for k, v in sorted(th.items(), key=lambda kv: -kv[1]) if abs(v) / n >= 0.00005),
                flush=True)
            row = {**{k: by[k] / n for k in ROLES}, **{k: got[k] / n for k in STEPS}}
            row["total"] = sum(by.values()) / n
            row["chunk_rest"] = row["chunk_actor"] - row["decode"] - row["mask"] - row["encode"]
            row["detector_rest"] = row["detector"] - row["detect"]
            row["wall_s"] = time.perf_counter() - t0
            row["failed"] = got["failed"]
            row["load"] = os.getloadavg()[0]
            rows.append(row)
            print(f"round {r}: " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    finally:
        worker._release_actors(ray)
        ray.shutdown()
    keys = [*ROLES, "total", *STEPS, "chunk_rest", "detector_rest"]
    print("\nCPU-s per frame (mean of rounds)")
    for k in keys:
        print(f"{k:<14} {sum(r[k] for r in rows) / len(rows):.4f}   (" + " / ".join(f"{r[k]:.4f}" for r in rows) + ")")
    print(json.dumps({"rounds": rows, "idle_cpu_s_per_s": idle, "chunks": args.chunks}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
