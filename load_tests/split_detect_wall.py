"""Per-chunk detection wall time of the ``make demo`` street camera, one detector against a
split across two (``ChunkActor._detect``), on a local Ray with the demo's process-stage layout.

Starts a local Ray (2 CPUs), two :class:`~pipeline.process.actors.DetectorActor` of the run
config's detector settings (``make demo``: one thread each) and two
:class:`~pipeline.process.actors.ChunkActor` sending to detector 0: ``whole``
(``split_min_frames=0``, the stage before the split) and ``split`` (the default). The street
camera's chunks (ingest's own cutting, :func:`demo_chunk_cost.demo_chunks`) go through both,
alternating chunk by chunk, one chunk at a time (the other detector idle: the case the split
is for). ``--mixed`` also sends the carphone cameras' chunks of the same span of video to a
third chunk actor on detector 1 at the same moment (the demo's other traffic), so the split
sometimes finds detector 1 busy.

Prints per variant: detection wall per chunk (``ChunkResult.detect_wall_s``), the chunk's
wall in the actor, detection CPU-s per chunk (the detectors' process time, as the stage
counts it), the CPU-s of the two detector processes over each chunk (from /proc) and the
larger of the two (``critical``: the chunk's detection wall time on a machine with a core free
for each detector). Wall times are the machine's: compare the two variants within one run, and
on a shared machine read ``critical``: Linux's autogroup scheduling shares the cores between
sessions, not threads, so under other sessions' load a second busy detector of this one does
not get this session more CPU and the wall times hide the parallelism.

    python load_tests/split_detect_wall.py --config .veilstream/demo/run-config.yaml --seconds 8 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_chunk_cost import local_demo  # noqa: E402

from pipeline.process.actors import ChunkActor, ChunkResult, DetectorActor  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """user + system CPU-s of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path(".veilstream/demo/run-config.yaml"))
    ap.add_argument("--seconds", type=float, default=8.0, help="street video per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--mixed", action="store_true", help="send the carphone chunks of the same span beside each")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    cfg, plan, tasks = local_demo(ap, args.config, args.seconds)
    street = [t for t in tasks if t.camera_id == "cam-002"]
    small = [t for t in tasks if t.camera_id != "cam-002"]

    import ray

    from pipeline.raynet import keep_ray_on_loopback

    keep_ray_on_loopback(None)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 * 1024, configure_logging=False)
    try:
        det = cfg.ray.detector
        dets = [ray.remote(DetectorActor).options(num_cpus=0.5, max_concurrency=64).remote(
            plan, max_batch_frames=det.batch_size, max_wait_s=det.max_wait_ms / 1000.0, timeout_s=600.0)
            for _ in range(2)]
        mk = ray.remote(ChunkActor).options(num_cpus=0.25, max_concurrency=cfg.ray.chunk_concurrency)
        actors = {"whole": mk.remote(plan, dets, crf=cfg.process.crf, preset=cfg.process.preset,
                                     detector_timeout_s=600.0, local=[0], split_min_frames=0),
                  "split": mk.remote(plan, dets, crf=cfg.process.crf, preset=cfg.process.preset,
                                     detector_timeout_s=600.0, local=[0])}
        other = mk.remote(plan, dets, crf=cfg.process.crf, preset=cfg.process.preset, detector_timeout_s=600.0,
                          local=[1], split_min_frames=0)
        ray.get([d.ready.remote() for d in dets] + [a.ready.remote() for a in (*actors.values(), other)])
        pids = ray.get([d.__ray_call__.remote(lambda self: os.getpid()) for d in dets])

        def one(name: str, t: Any, beside: list[Any]) -> dict[str, Any]:
            c0 = [proc_cpu_s(p) for p in pids]
            w0 = time.monotonic()
            refs = [other.redact.remote(s) for s in beside]
            res: ChunkResult = ray.get(actors[name].redact.remote(t))
            wall = time.monotonic() - w0
            ray.get(refs)
            if res.failed_stage is not None or res.fail_closed_frames:
                raise SystemExit(f"chunk failed: {res.failed_stage} {res.error} {res.errors}")
            per = [proc_cpu_s(p) - c for p, c in zip(pids, c0)]
            return {"variant": name, "frames": len(t.pts_ms), "detect_wall_s": res.detect_wall_s, "chunk_wall_s": wall,
                    "detect_cpu_s": res.cpu_s.get("detect", 0.0), "detectors": list(res.detectors_used),
                    "detector_procs_cpu_s": sum(per), "critical_cpu_s": max(per), "per_detector_cpu_s": per,
                    "beside": len(beside)}

        # the carphone chunks of the same span of video as each street chunk (--mixed)
        spans: list[list[Any]] = []
        if args.mixed:
            t_small, i_small, at = 0.0, 0, 0.0
            for t in street:
                at += (t.pts_ms[-1] - t.pts_ms[0]) / 1000.0 + 1.0 / t.fps
                got = []
                while i_small < len(small) and t_small < at:
                    s = small[i_small]
                    got.append(s)
                    t_small += ((s.pts_ms[-1] - s.pts_ms[0]) / 1000.0 + 1.0 / s.fps) / 2  # two cameras at once
                    i_small += 1
                spans.append(got)
        else:
            spans = [[] for _ in street]
        for name in actors:  # warm-up: first calls, allocations
            one(name, street[0], [])
        rows: list[dict[str, Any]] = []
        for r in range(args.rounds):
            for k, t in enumerate(street):
                for name in (("whole", "split") if (r + k) % 2 == 0 else ("split", "whole")):
                    rows.append(one(name, t, spans[k]))
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    report: dict[str, Any] = {}
    for name in ("whole", "split"):
        rs = [x for x in rows if x["variant"] == name]
        report[name] = {k: statistics.median(x[k] for x in rs) for k in
                        ("detect_wall_s", "chunk_wall_s", "detect_cpu_s", "detector_procs_cpu_s", "critical_cpu_s")}
        report[name]["chunks"] = len(rs)
        report[name]["split_chunks"] = sum(len(x["detectors"]) > 1 for x in rs)
        report[name]["sum_detector_procs_cpu_s"] = sum(x["detector_procs_cpu_s"] for x in rs)
        report[name]["sum_detect_cpu_s"] = sum(x["detect_cpu_s"] for x in rs)
        report[name]["sum_critical_cpu_s"] = sum(x["critical_cpu_s"] for x in rs)
    print(f"\n{'variant':7s} {'chunks':>6s} {'split':>5s} {'detect wall':>11s} {'chunk wall':>10s} "
          f"{'detect CPU-s':>12s} {'det procs CPU-s':>15s} {'critical CPU-s':>14s}  (medians per chunk; sums: procs / "
          "critical)")
    for name, s in report.items():
        print(f"{name:7s} {s['chunks']:6d} {s['split_chunks']:5d} {s['detect_wall_s']:11.2f} {s['chunk_wall_s']:10.2f} "
              f"{s['detect_cpu_s']:12.2f} {s['detector_procs_cpu_s']:15.2f} {s['critical_cpu_s']:14.2f}  sums "
              f"{s['sum_detector_procs_cpu_s']:.1f} / {s['sum_critical_cpu_s']:.1f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "summary": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
