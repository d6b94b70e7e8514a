"""Where a 320x180 snapshot frame's CPU goes in the process stage's Ray, by process, per detector
layout (issue 19 "Throughput", item 3; docs/performance.md "Session 9: snapshot cameras").

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/snapshot_cpu_breakdown.py \\
        [--chunks 240] [--rounds 2] [--layouts nolanes,batchlanes,default,t1,t1x2] [--idle-s 10] \\
        [--check-chunks 64]

Starts the process stage's own actors (:meth:`pipeline.process.worker.ProcessWorker._start_ray`)
once per layout in one local Ray, and pushes ``--chunks`` one-frame chunks of ``make load``'s
320x180 0.5 fps source through each, as the stage does in a backlog (``chunk_batch_cost.push``:
``process.max_inflight_chunks`` in flight, :func:`~pipeline.process.batching.plan_batches`
batches through ``ChunkActor.redact_many``). Layouts (``ray.*`` settings):

* ``default``: one detector actor on all cores (``threads: null``), two chunk actors; small
  frames on its one-thread lanes (``ray.detector.small_lanes`` 2), each lane with its own batch
  loop (a free lane takes the next small callers; none waits for another);
* ``batchlanes``: the same with the lanes of session 12 (``DetectorActor(independent_lanes=False)``:
  one batch loop splits each batch's small chunks over the lanes and waits for all of them);
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

After the rounds, ``--check-chunks`` chunks are decoded here and sent, the same groups to every
layout, straight to its detector actors (``detect_many``, as a chunk actor sends a batch): the
boxes of each layout are compared with the first layout's (exactly equal, else the largest
difference), so a layout that is cheaper because it finds something else shows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from chunk_batch_cost import SOURCE, push, snapshot_tasks  # noqa: E402
from pipeline_load import process_tree_cpu  # noqa: E402

from pipeline.process.actors import ChunkTask, DetectorActor  # noqa: E402
from pipeline.process.batching import BatchLimits  # noqa: E402
from schemas.config import parse_config  # noqa: E402

LAYOUTS: dict[str, dict[str, Any]] = {
    "default": {},
    "batchlanes": {},  # + DETECTOR_KWARGS
    "nolanes": {"detector": {"small_lanes": 0}},
    "t1": {"detector": {"threads": 1}},
    "t1x2": {"detector": {"threads": 1, "replicas": 2, "num_cpus": 0.5}, "worker_num_cpus": 0.25},
}
DETECTOR_KWARGS: dict[str, dict[str, Any]] = {"batchlanes": {"independent_lanes": False}}
"""Constructor arguments a layout's detector actors get beyond what the stage passes (no config key:
the layout before is kept only to measure against)."""
ROLES = ("detector", "chunk_actor", "raylet", "gcs", "ray_other", "driver")


@contextlib.contextmanager
def detector_kwargs(extra: dict[str, Any]) -> Any:
    """While open, ``ray.remote(DetectorActor).options(...).remote(...)`` (how the stage starts its
    detectors) also passes ``extra``: driver side only, the actor class itself is the stage's."""
    import ray

    real = ray.remote

    class Options:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def options(self, **opts: Any) -> Any:
            started = self.handle.options(**opts)
            return type("Started", (), {"remote": lambda _s, *a, **k: started.remote(*a, **{**k, **extra})})()

    def remote(*args: Any, **kwargs: Any) -> Any:
        handle = real(*args, **kwargs)
        return Options(handle) if extra and args and args[0] is DetectorActor else handle

    ray.remote = remote
    try:
        yield
    finally:
        ray.remote = real


def decoded(tasks: list[ChunkTask]) -> list[Any]:
    """Each task's frames, decoded as a chunk actor decodes them."""
    from operators.codec import decode_chunk_payload

    return [decode_chunk_payload(t.codec, t.payload, (t.width, t.height) if t.width else None,
                                 expected_frames=len(t.pts_ms), strict=True) for t in tasks]


def check_boxes(sets: dict[str, Any], layouts: list[str], tasks: list[ChunkTask], group: int) -> dict[str, Any]:
    """The boxes every layout's detector actors find for the same chunks, sent in the same groups
    of ``group`` (a chunk actor's batch), against the first layout's: frames compared, frames
    with boxes exactly equal, the largest coordinate and score difference, and boxes found."""
    import ray

    frames = decoded(tasks)
    groups = [frames[i:i + group] for i in range(0, len(frames), group)]
    found: dict[str, list[Any]] = {}
    for name in layouts:
        dets = sets[name].detectors
        for _ in range(2):  # the second pass is the one kept: the lanes are built and serving by then
            refs = [dets[i % len(dets)].detect_many.remote(g) for i, g in enumerate(groups)]
            found[name] = [b for ref in refs for d in ray.get(ref) for b in d.boxes]
    ref_boxes = found[layouts[0]]
    out: dict[str, Any] = {}
    for name in layouts:
        same = 0
        dxy = dscore = 0.0
        count = failed = 0
        for a, b in zip(ref_boxes, found[name]):
            if a is None or b is None:
                failed += 1
                continue
            count += len(b)
            if len(a) == len(b) and np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.score, b.score) \
                    and np.array_equal(a.label, b.label):
                same += 1
            elif len(a) == len(b) and np.array_equal(a.label, b.label):
                dxy = max(dxy, float(np.abs(a.xyxy - b.xyxy).max(initial=0.0)))
                dscore = max(dscore, float(np.abs(a.score - b.score).max(initial=0.0)))
            else:
                dxy = dscore = float("inf")
        out[name] = {"frames": len(found[name]), "equal": same, "failed": failed, "boxes": count,
                     "max_dxy": dxy, "max_dscore": dscore}
    return out


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
    ap.add_argument("--layouts", default="nolanes,batchlanes,default,t1,t1x2",
                    help=f"comma-separated of {', '.join(LAYOUTS)}")
    ap.add_argument("--check-chunks", type=int, default=64,
                    help="chunks whose boxes are compared across the layouts after the rounds (0 = none)")
    ap.add_argument("--check-group", type=int, default=8, help="chunks per detect_many call in that check")
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
        with detector_kwargs(DETECTOR_KWARGS.get(name, {})):
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
        for name in layouts:  # what each layout's detectors did (their own counters)
            counters = [ray.get(d.__ray_call__.remote(lambda a: {
                "independent_lanes": a.independent_lanes, "lanes": a._lanes_state, "calls": a.calls,
                "batches": a.batches, "lane_runs": a.lane_runs})) for d in sets[name].detectors]
            print(f"detectors {name:<10} " + "; ".join(json.dumps(c) for c in counters), flush=True)
        check = check_boxes(sets, layouts, tasks[:args.check_chunks], args.check_group) if args.check_chunks else {}
        for name, c in check.items():
            print(f"boxes {name:<10} vs {layouts[0]}: {c['equal']}/{c['frames']} frames equal, {c['failed']} failed, "
                  f"{c['boxes']} boxes, max |dxy| {c['max_dxy']:.2g} px, max |dscore| {c['max_dscore']:.2g}", flush=True)
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
    print(json.dumps({"layouts": out, "boxes_vs_first": check,
                      "idle_cpu_s_per_s": {k: round(v, 4) for k, v in idle.items()},
                      "chunks": args.chunks, "rounds": args.rounds, "load_avg": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
