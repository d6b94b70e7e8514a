"""CPU of the full-frame text pass per 720p frame, by precision and by a dark frame's native side
(docs/performance.md "Session 9: detection per 720p frame").

    .venv/bin/python load_tests/text_precision_cost.py [--rounds 3] [--sides 1280,960,800,0]

Frames: one frame from the middle of each of the crowd load source's 6 pictures
(``load_tests/crowd_source.py``; 4 of them darker than ``litplate.NATIVE_MEDIAN``, so they get the
native-resolution pass) and 6 detected frames of ``make bench``'s clip (daylight). The text
detector is the default policy's (``build_detectors``: 640 px pass, lit-plate pass, one thread),
with the full-frame pass in fp32 or bf16 (``text_full_precision`` and ``text_dark_precision``
both bf16), and ``litplate.NATIVE_SIDE`` set per variant (0 = no native pass: the frame's own
640 px). Process CPU seconds (every thread) per frame of ``TextDetector.detect``, median of the
interleaved rounds, all in this one process; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sides", default="1280,960,800,0", help="litplate.NATIVE_SIDE values (0 = None)")
    args = ap.parse_args()
    models = ROOT.parent / "shared" / "models"
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))
    from load_tests.crowd_source import build_crowd_clip
    from load_tests.pass_cost import _video_frames, scheduled
    from operators.detectors import litplate
    from operators.redactor import RedactionConfig, build_detectors
    from operators.video import sample_video

    crowd = _video_frames(build_crowd_clip(ROOT / "out" / "load" / "sources"), 360)
    cams = {"crowd (6 pictures)": np.stack([crowd[60 * k + 30] for k in range(6)]),
            "bench": scheduled(_video_frames(sample_video("bigbuckbunny.mp4"), 49), 4)[:6]}
    dets = {p: build_detectors(RedactionConfig(classes=("face", "plate"), threads=1, text_full_precision=p,
                                               text_dark_precision=p).validate())["text"]
            for p in ("fp32", "bf16")}
    sides = [int(s) or None for s in args.sides.split(",")]
    cpu: dict[tuple[str, str, int | None], list[float]] = {}
    for r in range(args.rounds + 1):  # round 0 warms up (shape compiles)
        for cam, frames in cams.items():
            for p, det in dets.items():
                for side in sides:
                    litplate.NATIVE_SIDE = side
                    t0 = time.process_time()
                    det.detect(frames)
                    if r:
                        cpu.setdefault((cam, p, side), []).append((time.process_time() - t0) / len(frames))
    rows = [{"frames": cam, "precision": dets[p].full_precision, "native_side": side,
             "cpu_s_per_frame": round(statistics.median(v), 4)} for (cam, p, side), v in cpu.items()]
    for row in rows:
        print(f"{row['frames']:<20} {row['precision']:<5} native side {str(row['native_side']):<5} "
              f"{row['cpu_s_per_frame']:.4f} CPU-s/frame")
    print(json.dumps({"text_full_pass": rows, "rounds": args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
