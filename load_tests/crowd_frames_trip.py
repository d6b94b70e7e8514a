"""What a crowd chunk's scheduled frames cost to cross from a chunk actor to a detector actor
through Ray's object store, by process (issue 19, crowd target; docs/performance.md, session 11,
"the Ray remainder of a crowd frame"). Microbenchmark: no detection, no masking.

    .venv/bin/python load_tests/crowd_frames_trip.py [--calls 20] [--rounds 3]

A sender actor holds one decoded 60-frame 1280x720 crowd chunk and calls a receiver actor with
the scheduled frames (every 4th, as ``detect_every: 4``), ``--calls`` times a variant, awaiting
each answer (a few bytes); variants alternate round by round:

* ``stacked``: ``frames[sched]`` (a copy), then Ray puts it in the object store (a second copy),
  the receiver reads it zero-copy (what ``ChunkActor._detect`` does today);
* ``views``: a list of the frames themselves (each a contiguous view, put straight in the object
  store: one copy), the receiver stacks them into one array (the copy moves there);
* ``views_nostack``: the same list, the receiver only reads a byte of each (a lower bound: what
  a detector that took a list of frames would pay).

Per variant: CPU-s per chunk frame of the sender, the receiver, raylet and the rest of the tree
(/proc), alternated; read the ratios when the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load_tests"))

from pipeline_load import process_tree_cpu  # noqa: E402

VARIANTS = ("stacked", "views", "views_nostack")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import ray
    from stage_cost import crowd_source

    from operators.codec import decode_h264_chunk, split_gops
    from operators.temporal import detection_schedule

    g = next(iter(split_gops(str(crowd_source()), 2.0)))
    payload, size, n = g.payload, (g.width, g.height), len(g.pts_ms)

    class Receiver:
        def take(self, frames: Any, stack: bool) -> int:
            if isinstance(frames, list):
                arr = np.stack(frames) if stack else frames
                return int(sum(int(f[0, 0, 0]) for f in arr))
            return int(frames[:, 0, 0, 0].sum())

        def pid(self) -> int:
            return os.getpid()

    class Sender:
        def __init__(self, rx: Any) -> None:
            self.rx = rx
            self.frames = decode_h264_chunk(payload, size, expected_frames=n, strict_size=True)
            self.sched = [i for i, s in enumerate(detection_schedule(n, 4)) if s]

        async def send(self, variant: str, calls: int) -> int:
            f, sched = self.frames, self.sched
            for _ in range(calls):
                if variant == "stacked":
                    await self.rx.take.remote(f[sched], False)
                else:
                    await self.rx.take.remote([f[i] for i in sched], variant == "views")
            return len(sched)

        def pid(self) -> int:
            return os.getpid()

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        rx = ray.remote(Receiver).options(num_cpus=0).remote()
        tx = ray.remote(Sender).options(num_cpus=0).remote(rx)
        pids = {"sender": ray.get(tx.pid.remote()), "receiver": ray.get(rx.pid.remote())}
        me = os.getpid()

        def snap() -> dict[str, float]:
            cpu = process_tree_cpu(me)
            out = {k: cpu.get(p, 0.0) for k, p in pids.items()}
            raylet = 0.0
            for q, s in cpu.items():
                try:
                    if b"raylet" in Path(f"/proc/{q}/cmdline").read_bytes().split(b"\0")[0]:
                        raylet += s
                except OSError:
                    pass
            out["raylet"] = raylet
            out["rest"] = sum(cpu.values()) - sum(out.values())
            return out

        for v in VARIANTS:
            ray.get(tx.send.remote(v, 3))  # warm-up
        rows: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                c0 = snap()
                ray.get(tx.send.remote(v, args.calls))
                c1 = snap()
                frames = args.calls * n
                rows[v].append({k: (c1[k] - c0[k]) / frames * 1e3 for k in c0})
        print(f"ms CPU per chunk frame ({n}-frame chunk, {len(range(0, n, 4))}+ scheduled frames a call, "
              f"{args.calls} calls a round), rounds: sender / receiver / raylet / rest / total")
        for v, rs in rows.items():
            print(f"{v:<14} " + "   ".join(
                f"{x['sender']:.3f} / {x['receiver']:.3f} / {x['raylet']:.3f} / {x['rest']:.3f} / "
                f"{sum(x.values()):.3f}" for x in rs))
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
