"""The process driver's CPU for collecting chunk results from Ray: one ``ray.get`` per chunk
(before) against one ``ray.get`` per ``ray.wait`` batch (``ProcessHandler._get_all``), alternated
round by round on one local Ray (issue 19, snapshot target; docs/performance.md, session 13).

    .venv/bin/python load_tests/driver_ray_get_ab.py [--rounds 8] [--chunks 400] [--batch 8]

A stand-in chunk actor answers ``redact_many`` at once with a one-frame 320x180 chunk's result
(a 13 KB payload), so what differs is the driver's side of Ray: submit ``--batch`` chunks a call
(``num_returns``), ``ray.wait`` on what is in flight (20 ms, as the stage when busy), then get
the ready results either way. Prints ms of the driver's CPU (``time.process_time``: every
thread of the driver process, Ray's core worker threads included) per chunk; read the ratio.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--chunks", type=int, default=400, help="chunks a round")
    ap.add_argument("--batch", type=int, default=8, help="chunks a redact_many call")
    ap.add_argument("--inflight", type=int, default=32, help="chunks in flight at most")
    args = ap.parse_args(argv)
    import ray

    from pipeline.process.actors import ChunkResult, ChunkTask
    from pipeline.process.raysettings import apply_quiet_ray_env

    apply_quiet_ray_env(os.environ)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=128 * 1024 * 1024)
    payload = os.urandom(13_000)

    @ray.remote(num_cpus=0.5, max_concurrency=3)
    class Stub:
        def redact_many(self, *tasks: Any) -> Any:
            out = [ChunkResult(payload=payload, pts_ms=t.pts_ms, masks_per_class={"face": 1, "plate": 0},
                               cpu_s={"decode": 0.001, "detect": 0.02, "mask": 0.0004, "encode": 0.002})
                   for t in tasks]
            return out if len(out) > 1 else out[0]

    actors = [Stub.remote() for _ in range(2)]  # type: ignore[attr-defined]
    ray.get([a.redact_many.remote(ChunkTask(codec="h264", payload=b"x", camera_id="c", fps=0.5, pts_ms=(0,),
                                            width=320, height=180, policy_id=None)) for a in actors])

    def one_round(batched: bool, r: int) -> tuple[float, int]:
        tasks = [ChunkTask(codec="h264", payload=os.urandom(13_000), camera_id=f"cam-{i % 100:03d}", fps=0.5,
                           pts_ms=(r * 1_000_000 + i * 2000,), width=320, height=180, policy_id=None)
                 for i in range(args.chunks)]
        inflight: list[Any] = []
        got = 0
        w = 0
        t0 = time.process_time()
        while tasks or inflight:
            while tasks and len(inflight) + args.batch <= args.inflight:
                part, tasks = tasks[:args.batch], tasks[args.batch:]
                out = actors[w % 2].redact_many.options(num_returns=len(part)).remote(*part)
                w += 1
                inflight.extend(list(out) if len(part) > 1 else [out])
            ready, inflight = ray.wait(inflight, num_returns=len(inflight), timeout=0.02, fetch_local=True)
            if batched and len(ready) > 1:
                res = ray.get(ready)
            else:
                res = [ray.get(ref) for ref in ready]
            got += sum(1 for x in res if x.payload)
        return time.process_time() - t0, got

    rows: dict[str, list[float]] = {"one_get_per_chunk": [], "one_get_per_wait": []}
    for r in range(args.rounds + 1):
        order = [False, True] if r % 2 == 0 else [True, False]
        for batched in order:
            cpu, got = one_round(batched, r)
            assert got == args.chunks, got
            if r > 0:
                rows["one_get_per_wait" if batched else "one_get_per_chunk"].append(cpu / args.chunks * 1000)
    ray.shutdown()
    load = os.getloadavg()
    a, b = rows["one_get_per_chunk"], rows["one_get_per_wait"]
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {args.rounds} rounds of {args.chunks} chunks, "
          f"{args.batch} a call; driver CPU ms per chunk (median; min-max)")
    print(f"  one get per chunk  {statistics.median(a):.3f} ({min(a):.3f}-{max(a):.3f})")
    print(f"  one get per wait   {statistics.median(b):.3f} ({min(b):.3f}-{max(b):.3f})"
          f"  ratio x{statistics.median(ratios):.2f} (per round {min(ratios):.2f}-{max(ratios):.2f})")
    print(json.dumps({"load_avg": [round(x, 1) for x in load], "per_chunk_ms": {k: round(statistics.median(v), 4)
                                                                                for k, v in rows.items()},
                      "ratio_median": round(statistics.median(ratios), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
