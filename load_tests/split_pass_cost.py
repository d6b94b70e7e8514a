"""CPU of the ``make demo`` street camera's detection, whole chunks against the same chunks in two
contiguous halves, on ONE thread one after the other (no two detectors running at once, so no
contention between them): what the split of ``ChunkActor._detect`` costs by itself (the plate
carry lost at the half boundary, per-call work), per detector pass, rounds alternated; then whether any frame's detections differ.

    python load_tests/split_pass_cost.py --config .veilstream/demo/run-config.yaml --seconds 8 --rounds 2
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_chunk_cost import local_demo  # noqa: E402

from operators.codec import decode_chunk_payload  # noqa: E402
from operators.redactor import Redactor  # noqa: E402
from operators.temporal import detection_schedule  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path(".veilstream/demo/run-config.yaml"))
    ap.add_argument("--camera", default="cam-002")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    cfg, plan, tasks = local_demo(ap, args.config, args.seconds)
    red = Redactor(replace(plan.detector, detect_every=1))  # as DetectorActor builds it
    spent: dict[str, float] = {}

    def timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*a: Any, **k: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                spent[key] = spent.get(key, 0.0) + time.thread_time() - t0
        return run

    for key, det in red.detectors.items():
        name = "detect_given" if hasattr(det, "detect_given") else "detect"
        setattr(det, name, timed(key, getattr(det, name)))
    chunks: list[np.ndarray] = []
    for t in tasks:
        if t.camera_id == args.camera:
            frames = decode_chunk_payload(t.codec, t.payload, (t.width, t.height))
            chunks.append(frames[[i for i, s in enumerate(detection_schedule(len(frames), cfg.process.detect_every))
                                  if s]])
    red.detect_many([chunks[0]])  # warm-up
    out: dict[str, dict[str, float]] = {}
    for r in range(args.rounds):
        for mode in (("whole", "halves") if r % 2 == 0 else ("halves", "whole")):
            spent.clear()
            c0 = time.process_time()
            for c in chunks:
                if mode == "whole":
                    red.detect_many([c])
                else:
                    k = (len(c) + 1) // 2
                    red.detect_many([c[:k]])
                    red.detect_many([c[k:]])
            row = out.setdefault(mode, {})
            row["process"] = row.get("process", 0.0) + time.process_time() - c0
            for key, v in spent.items():
                row[key] = row.get(key, 0.0) + v
    print(f"{args.camera}: {len(chunks)} chunks of {[len(c) for c in chunks]} detected frames, {args.rounds} rounds; "
          "CPU-s summed over rounds (process: all threads; per pass: the calling thread)")
    for mode, row in out.items():
        print(f"{mode:7s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    # the boxes themselves: does the split (the carry lost at the boundary) change any frame's detections?
    same, differ = 0, []
    for ci, c in enumerate(chunks):
        ((whole, _, _),) = red.detect_many([c])
        k = (len(c) + 1) // 2
        ((first, _, _),) = red.detect_many([c[:k]])
        ((second, _, _),) = red.detect_many([c[k:]])
        for fi, (x, y) in enumerate(zip(whole, first + second)):
            assert x is not None and y is not None
            if len(x.xyxy) == len(y.xyxy) and np.allclose(np.sort(x.xyxy, axis=0), np.sort(y.xyxy, axis=0), atol=1.0):
                same += 1
            else:
                differ.append(f"chunk {ci} frame {fi}: {len(x.xyxy)} boxes whole, {len(y.xyxy)} split")
    print(f"detections per frame, whole vs halves: {same} identical (boxes within 1 px), {len(differ)} differ"
          + "".join(f"\n  {d}" for d in differ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
