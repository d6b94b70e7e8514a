"""Where a 320x180 snapshot frame's CPU goes in the process stage's Ray, by process, per detector
layout (issue 19 "Throughput", item 3; docs/performance.md "Session 9: snapshot cameras").

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/snapshot_cpu_breakdown.py \\
        [--chunks 240] [--rounds 2] [--layouts nolanes,default,t1,t1x2] [--idle-s 10]

Starts the process stage's own actors (:meth:`pipeline.process.worker.ProcessWorker._start_ray`)
once per layout in one local Ray, and pushes ``--chunks`` one-frame chunks of ``make load``'s
320x180 0.5 fps source through each, as the stage does in a backlog (``chunk_batch_cost.push``:
``process.max_inflight_chunks`` in flight, :func:`~pipeline.process.batching.plan_batches`
batches through ``ChunkActor.redact_many``). Layouts (``ray.*`` settings):

* ``default``: one detector actor on all cores (``threads: null``), two chunk actors; small
  frames on its one-thread lanes (``ray.detector.small_lanes`` 2);
* ``nolanes``: the same with ``small_lanes: 0`` (small frames on the all-cores sessions too: the
  default before session 9);
* ``t1``: the same with ``ray.detector.threads: 1``;
* ``t1x2``: two one-thread detectors (``replicas: 2``, ``num_cpus: 0.5``, ``worker_num_cpus:
  0.25``: the demo's layout), each chunk actor sending to the detector of its placement group.

CPU is read from /proc for every process of the Ray tree, grouped by role (command line):
the detector actors, the chunk actors, ``raylet``, ``gcs_server``, other Ray processes (idle
workers, monitors, agents), and this driver. Per mode it reports CPU-s per frame of each group,
and inside the detector actors the detection CPU they report (``cpu_s["detect"]``: process time
around ``Redactor.detect_many``) against the rest of that process (Ray calls, object transfer,
the batch loop). Before pushing, the tree is left idle for ``--idle-s`` to measure what Ray burns
with nothing to do (CPU-s per second: at 50 fps, that divided by 50 is its share of a frame).
Layouts alternate within each round; compare within one run (the machine is shared).
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

from chunk_batch_cost import SOURCE, push, snapshot_tasks  # noqa: E402
from pipeline_load import process_tree_cpu  # noqa: E402

from pipeline.process.batching import BatchLimits  # noqa: E402
from schemas.config import parse_config  # noqa: E402

LAYOUTS: dict[str, dict[str, Any]] = {
    "default": {},
    "nolanes": {"detector": {"small_lanes": 0}},
    "t1": {"detector": {"threads": 1}},
    "t1x2": {"detector": {"threads": 1, "replicas": 2, "num_cpus": 0.5}, "worker_num_cpus": 0.25},
}
ROLES = ("detector", "chunk_actor", "raylet", "gcs", "ray_other", "driver")


def role_of(pid: int, cmdline: str, driver: int) -> str:
    """The group a process of the Ray tree counts under."""
    if pid == driver:
        return "driver"
    if "DetectorActor" in cmdline:
        return "detector"
    if "ChunkActor" in cmdline:
        return "chunk_actor"
    if "raylet" in cmdline.split(" ", 1)[0]:
        return "raylet"
    if "gcs_server" in cmdline.split(" ", 1)[0]:
        return "gcs"
    return "ray_other"


def tree_cpu_by_role(root: int) -> dict[str, float]:
    """User+system CPU seconds of ``root`` and its live descendants (from /proc), by :func:`role_of`."""
    cpu = process_tree_cpu(root)
    out = dict.fromkeys(ROLES, 0.0)
    for q, seconds in cpu.items():
        try:
            cmd = Path(f"/proc/{q}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmd = ""
        out[role_of(q, cmd, root)] += seconds
    return out


def diff(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in ROLES}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=240, help="chunks (frames) per layout and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--layouts", default="nolanes,default,t1,t1x2", help=f"comma-separated of {', '.join(LAYOUTS)}")
    ap.add_argument("--idle-s", type=float, default=10.0, help="idle seconds measured before pushing")
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--config", type=Path, default=None,
                    help="a stage config (e.g. make load's .veilstream/load/load-config.yaml) whose process block "
                         "and policies the actors get (its Ray address and CPUs are not used); default: the defaults")
    args = ap.parse_args(argv)
    layouts = args.layouts.split(",")
    bad = [x for x in layouts if x not in LAYOUTS]
    if bad or args.chunks < 1 or args.rounds < 1:
        ap.error(f"unknown layout(s) {bad}: choose from {', '.join(LAYOUTS)}" if bad else "--chunks/--rounds >= 1")

    import ray

    from pipeline.process.worker import ProcessWorker

    me = os.getpid()
    sets: dict[str, Any] = {}
    # Ray's CPUs are bookkeeping here (threads are what run): room for every layout's placement groups
    base: dict[str, Any] = {}
    if args.config is not None:
        import yaml

        full = yaml.safe_load(args.config.read_text()) or {}
        base = {k: full[k] for k in ("process", "policies_dir") if k in full}
    for name in layouts:
        over = LAYOUTS[name]
        ray_cfg = {"num_cpus": 4 * len(layouts), **over}
        if "detector" in over:
            ray_cfg["detector"] = dict(over["detector"])
        sets[name] = ProcessWorker(parse_config({**base, "ray": ray_cfg, "metrics": {"enabled": False}}))
        sets[name]._start_ray()
    tasks = snapshot_tasks(args.source, args.chunks)
    window = sets[layouts[0]].cfg.process.max_inflight_chunks
    limits = BatchLimits()
    tot: dict[str, dict[str, float]] = {m: {} for m in layouts}
    try:
        for name in layouts:  # warm-up: sessions, static compiles, Ray workers, the lanes' build
            push(sets[name], tasks[:48], "batch", window, limits)
        time.sleep(15.0)
        for name in layouts:
            push(sets[name], tasks[:48], "batch", window, limits)
        time.sleep(2.0)
        c0, t0 = tree_cpu_by_role(me), time.perf_counter()
        time.sleep(args.idle_s)
        idle = {k: v / (time.perf_counter() - t0) for k, v in diff(c0, tree_cpu_by_role(me)).items()}
        print("idle CPU-s per second: " + "  ".join(f"{k} {v:.4f}" for k, v in idle.items()), flush=True)
        for r in range(args.rounds):
            for name in (layouts if r % 2 == 0 else layouts[::-1]):
                c0 = tree_cpu_by_role(me)
                got = push(sets[name], tasks, "batch", window, limits)
                by = diff(c0, tree_cpu_by_role(me))
                acc = tot[name]
                for k, v in {**by, "detect_s": got["detect_s"], "frames": got["frames"], "wall_s": got["wall_s"],
                             "calls": got["calls"], "failed": got["failed"]}.items():
                    acc[k] = acc.get(k, 0.0) + v
                n = got["frames"]
                print(f"round {r} {name:<8} total {sum(by.values()) / n:.4f}  " + "  ".join(
                    f"{k} {by[k] / n:.4f}" for k in ROLES) + f"  detect(reported) {got['detect_s'] / n:.4f}  "
                      f"wall/frame {got['wall_s'] / n:.4f}  failed {got['failed']:.0f}  load {os.getloadavg()[0]:.1f}",
                      flush=True)
    finally:
        for w in sets.values():
            w._release_actors(ray)
        ray.shutdown()
    out: dict[str, Any] = {}
    for name, t in tot.items():
        n = t["frames"]
        row = {k: round(t[k] / n, 4) for k in ROLES}
        row["total"] = round(sum(t[k] for k in ROLES) / n, 4)
        row["detect_reported"] = round(t["detect_s"] / n, 4)
        row["detector_rest"] = round((t["detector"] - t["detect_s"]) / n, 4)
        row["wall_s_per_frame"] = round(t["wall_s"] / n, 4)
        row["chunks_per_call"] = round(n / t["calls"], 2)
        row["failed"] = int(t["failed"])
        out[name] = row
    base = out[layouts[0]]["total"]
    print(f"\n{'layout':<8} {'total':>7} {'vs ' + layouts[0]:>10} " + " ".join(f"{k:>11}" for k in ROLES)
          + f" {'detect':>7} {'det.rest':>8} {'chunks/call':>11}")
    for name, o in out.items():
        print(f"{name:<8} {o['total']:>7.4f} {'x%.2f' % (o['total'] / base):>10} "
              + " ".join(f"{o[k]:>11.4f}" for k in ROLES)
              + f" {o['detect_reported']:>7.4f} {o['detector_rest']:>8.4f} {o['chunks_per_call']:>11}")
    print(json.dumps({"layouts": out, "idle_cpu_s_per_s": {k: round(v, 4) for k, v in idle.items()},
                      "chunks": args.chunks, "rounds": args.rounds, "load_avg": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
