"""What the plate/text detector's full-frame pass costs at each input size (README "Measured
quality": the 640 px CPU default against 960 / 1280 px).

    .venv/bin/python load_tests/text_pass_cost.py

CPU seconds per detected frame of the default detectors (faces + plates, one intra-op thread,
8 detected frames per call) on the 720p load source (the frames ``quantize_models.py --detect``
uses: every 4th of vtest 720p), per ``text_max_side``, interleaved rounds in this one process,
best round kept (the machine is shared: report ratios, not seconds). Prints one line per setting
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETTINGS: dict[str, dict[str, object]] = {
    "640 (CPU default)": {},
    "960": {"text_max_side": 960},
    "1280 (native 720p)": {"text_max_side": 1280},
    "1280, no vehicle crops": {"text_max_side": 1280, "plate_crops": False},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=16, help="detected frames of the load source")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from quantize_models import calibration_frames, detection_cpu

    from operators.redactor import RedactionConfig, Redactor

    frames = calibration_frames(args.frames)[0]
    reds = {k: Redactor(RedactionConfig(classes=("face", "plate"), threads=1, providers=("cpu",), **v).validate())  # type: ignore[arg-type]
            for k, v in SETTINGS.items()}
    cpu = detection_cpu(reds, frames, args.rounds)
    base = min(next(iter(cpu.values())))
    rows = [{"text_max_side": k, "detect_cpu_s_per_detected_frame": round(min(v) / len(frames), 4),
             "ratio": round(min(v) / base, 3)} for k, v in cpu.items()]
    for row in rows:
        print(f"{row['text_max_side']:<24} {row['detect_cpu_s_per_detected_frame']:.4f} CPU-s per detected frame "
              f"(x{row['ratio']:.2f})", flush=True)
    print(json.dumps({"frames": f"{len(frames)} detected frames (every 4th) of the 720p load source", "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
