"""What the lit-plate pass (``RedactionConfig.plate_lit_pass``, docs/quality.md "Plates round 3")
costs in detection CPU.

    .venv/bin/python load_tests/lit_pass_cost.py [--frames 16] [--rounds 3]

CPU seconds per detected frame of the default detectors (faces + plates, one intra-op thread,
8 detected frames per call), with the pass off and on, interleaved rounds in this one process,
best round kept (the machine is shared: report ratios, not seconds), on three sources:

* ``load 720p``: the 720p load source (every 4th frame of vtest re-encoded to 1280x720);
* ``bench 720p``: bigbuckbunny, the input of ``make bench``;
* ``dark 720p``: the plates_traffic ``ro_*`` frames the pass searches (dark by its own test),
  its worst case: night footage;
* ``dim 720p``: those between that test and ``NATIVE_MEDIAN`` (dusk), where only the native
  full-frame pass runs.

Settings: the pass off, on (the defaults), and on with the full-frame pass at its own 640 px in
dark frames too (``NATIVE_SIDE`` None: the pass before the native full-frame pass).

Prints one line per source and setting and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def dark_frames(n: int, lo: float = 0.0, hi: float | None = None) -> np.ndarray:
    """Up to ``n`` 1280x720 plates_traffic ``ro_*`` frames whose median grey level
    (:func:`operators.detectors.litplate.median_grey`) lies in ``[lo, hi)`` (default: below the
    pass's darkness gate ``DARK_MEDIAN``)."""
    from operators.detectors import litplate
    from operators.evaldata import load_plates_traffic
    from operators.video import read_image

    top = litplate.DARK_MEDIAN if hi is None else hi
    out = []
    for item in load_plates_traffic():
        if item.tags.get("subset") != "ro" or item.tags.get("blank") == "1":
            continue
        img = read_image(item.image_path)
        if img.shape[:2] == (720, 1280) and lo <= litplate.median_grey(img) < top:
            out.append(img)
        if len(out) >= n:
            break
    return np.stack(out)


class _NotNative:
    """A redactor whose text pass keeps its own size in dark frames (``litplate.NATIVE_SIDE``
    None while it detects): the lit-plate pass before the native full-frame pass."""

    def __init__(self, red: Any) -> None:
        self.red = red

    def run_detectors(self, frames: np.ndarray) -> Any:
        from operators.detectors import litplate

        side, litplate.NATIVE_SIDE = litplate.NATIVE_SIDE, None
        try:
            return self.red.run_detectors(frames)
        finally:
            litplate.NATIVE_SIDE = side


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=16, help="detected frames per source")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from quantize_models import calibration_frames, detection_cpu

    from operators.redactor import RedactionConfig, Redactor

    load, bench = calibration_frames(args.frames)
    from operators.detectors import litplate

    sources = {"load 720p": load, "bench 720p": bench, "dark 720p": dark_frames(args.frames),
               "dim 720p": dark_frames(args.frames, litplate.DARK_MEDIAN, litplate.NATIVE_MEDIAN)}
    reds: dict[str, Any] = {name: Redactor(RedactionConfig(classes=("face", "plate"), threads=1, providers=("cpu",),
                                                           plate_lit_pass=on).validate())
                            for name, on in (("lit pass off", False), ("lit pass on", True))}
    reds["on, 640 px only"] = _NotNative(reds["lit pass on"])
    rows = []
    for src, frames in sources.items():
        cpu = detection_cpu(reds, frames, args.rounds)
        base = min(cpu["lit pass off"])
        for k, v in cpu.items():
            row = {"source": src, "setting": k, "frames": len(frames),
                   "detect_cpu_s_per_detected_frame": round(min(v) / len(frames), 4), "ratio": round(min(v) / base, 3)}
            rows.append(row)
            print(f"{src:<11} {k:<16} {row['detect_cpu_s_per_detected_frame']:.4f} CPU-s per detected frame "
                  f"(x{row['ratio']:.3f})", flush=True)
    print(json.dumps({"lit_pass_cost": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
