"""CPU inference backends per detector model: onnxruntime vs OpenVINO, same process, interleaved.

    .venv/bin/python load_tests/backend_bench.py [--threads 2] [--rounds 7] [--ov-precision bf16] [--json-out F]
    .venv/bin/python load_tests/backend_bench.py --pipeline [--threads 1]   # default detectors per setting

Each case builds its detector twice (``providers="cpu"``: onnxruntime; ``"openvino"``), the
same graph (dims made dynamic, PP-OCR folded / int8 as the detectors run it on CPU), records
the exact inputs ``detect`` feeds the network for real 1280x720 frames (``ro_*`` dashcam
frames of shared/eval plates_traffic), then times ``session.run`` on those inputs, the
backends alternating within each round (so the machine's noise hits them alike). Printed per
model: median wall ms and CPU ms (process time: all threads) per inference call for each
backend and the ratios onnxruntime / OpenVINO (> 1: OpenVINO faster); OpenVINO as it runs a
recurring shape (its static-shape compile) and, for comparison, its dynamic-shape model
(what a shape without its own compile gets); the largest output difference; and the extra
cost of the first call at an input shape the session has not seen (OpenVINO builds that
shape's kernels then; onnxruntime re-plans). On a loaded machine wall time mostly measures
the wait for a core: read the CPU columns. Numbers compare backends on one machine, never
pass/fail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("cpu", "openvino")


def frames(eval_dir: Path, n: int) -> np.ndarray:
    from operators.video import read_image

    paths = sorted((eval_dir / "plates_traffic" / "images").glob("ro_*"))
    imgs = [im for im in (read_image(p) for p in paths[:: max(1, len(paths) // (2 * n))]) if im.shape[:2] == (720, 1280)]
    if not imgs:
        raise SystemExit(f"no 1280x720 ro_* frames under {eval_dir}/plates_traffic/images: pass --eval-dir")
    return np.stack(imgs[:n])


def cases() -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(label, registry model, detector factory, kwargs): the models at the sizes the defaults run them."""
    from operators.detectors import (
        CenterFaceDetector,
        TextDetector,
        YoloxPersonDetector,
        YuNetDetector,
    )

    return [
        ("centerface max_side 1280", "centerface", CenterFaceDetector, {"max_side": 1280}),
        ("centerface (default 640)", "centerface", CenterFaceDetector, {"max_side": 640}),
        ("yunet_n (default 1280)", "yunet_n", YuNetDetector, {"max_side": 1280}),
        ("yolox_nano (default 640)", "yolox_nano", YoloxPersonDetector, {"vehicles": True, "max_side": 640,
                                                                     "max_upscale": 2.0}),
        ("yolox_nano max_side 416 letterbox", "yolox_nano", YoloxPersonDetector, {"vehicles": True}),
        ("ppocr_det_v5 (default 640)", "ppocr_det_v5", TextDetector, {"max_side": 640}),
        ("ppocr_det_v5 max_side 960", "ppocr_det_v5", TextDetector, {"max_side": 960}),
        ("ppocr_det int8 (640)", "ppocr_det_int8", TextDetector, {"model": "ppocr_det", "max_side": 640,
                                                                   "precision": "int8"}),
        ("ppocr_det fp32 (640)", "ppocr_det", TextDetector, {"model": "ppocr_det", "max_side": 640,
                                                              "precision": "fp32"}),
    ]


class Recorder:
    """Wraps a session: records every ``run`` call's arguments."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[Any, dict[str, np.ndarray]]] = []

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> Any:
        self.calls.append((names, {k: v.copy() for k, v in feed.items()}))
        return self.inner.run(names, feed)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


def time_calls(run: Any, calls: list[tuple[Any, dict[str, np.ndarray]]]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    for names, feed in calls:
        run(names, feed)
    return (time.perf_counter() - w0) / len(calls), (time.process_time() - c0) / len(calls)


def ov_dynamic(session: Any) -> Any:
    """``run`` on the session's dynamic-shape model only (what a shape without its own compile gets)."""
    def run(names: Any, feed: dict[str, np.ndarray]) -> Any:
        return session._request(session._compiled).infer(feed)
    return run


def new_shape_ms(factory: Any, kw: dict[str, Any], backend: str, threads: int, shape_hw: tuple[int, int]) -> float:
    """Wall ms of a fresh detector's first call at an input shape its warm-up did not use."""
    det = factory(providers=backend, threads=threads, **kw)
    feed = {det.input_name: np.random.default_rng(0).uniform(0, 1, (1, 3, *shape_hw)).astype(np.float32)}
    t0 = time.perf_counter()
    det.session.run(None, feed)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    det.session.run(None, feed)
    return 1000 * (first - (time.perf_counter() - t0))


def bench_pipeline(args: argparse.Namespace, fr: np.ndarray) -> int:
    """CPU-s per detected frame of the default detectors (faces + plates, vehicle crops) under
    each backend setting, interleaved rounds in this process (``--pipeline``)."""
    from operators.redactor import RedactionConfig, Redactor

    settings = {"cpu (onnxruntime)": ("cpu",), "auto": None, "openvino": ("openvino",)}
    if args.ov_precision == "bf16":
        settings["openvino bf16"] = ("openvino",)
    reds = {}
    for k, prov in settings.items():
        prec = {"precision": "bf16"} if k.endswith("bf16") else {}
        reds[k] = Redactor(RedactionConfig(classes=("face", "plate"), threads=args.threads, providers=prov,
                                           **prec).validate())
        for d in reds[k].detectors.values():
            for part in (getattr(d, "components", None) or {"": d}).values():
                if hasattr(part.session, "synchronous_compile"):
                    part.session.synchronous_compile = True
        for _ in range(3):  # static-shape compiles, caches
            reds[k].run_detectors(fr)
    cpu: dict[str, list[float]] = {k: [] for k in reds}
    wall: dict[str, list[float]] = {k: [] for k in reds}
    for r in range(args.rounds):
        for k in (list(reds) if r % 2 == 0 else list(reds)[::-1]):
            w0, c0 = time.perf_counter(), time.process_time()
            reds[k].run_detectors(fr)
            cpu[k].append((time.process_time() - c0) / len(fr))
            wall[k].append((time.perf_counter() - w0) / len(fr))
    base = statistics.median(cpu["cpu (onnxruntime)"])
    rows = []
    for k in reds:
        backends = sorted({f"{part.name}={part.providers[0]}" for d in reds[k].detectors.values()
                           for part in (getattr(d, "components", None) or {"": d}).values()})
        rows.append({"setting": k, "cpu_s_per_frame": round(statistics.median(cpu[k]), 4),
                     "wall_s_per_frame": round(statistics.median(wall[k]), 4),
                     "ratio": round(statistics.median(cpu[k]) / base, 3), "backends": backends})
        print(f"{k:<20} {rows[-1]['cpu_s_per_frame']:.4f} CPU-s/frame (x{rows[-1]['ratio']:.2f})  "
              f"wall {rows[-1]['wall_s_per_frame']:.4f} s/frame  {' '.join(backends)}", flush=True)
    doc = {"pipeline": rows, "threads": args.threads, "frames": len(fr), "rounds": args.rounds}
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="intra-op / inference threads of both backends")
    ap.add_argument("--frames", type=int, default=4, help="720p frames per case")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median kept)")
    ap.add_argument("--only", nargs="*", default=None, help="case labels starting with these (default all)")
    ap.add_argument("--eval-dir", type=Path, default=None)
    ap.add_argument("--ov-precision", choices=("fp32", "bf16"), default="fp32",
                    help="OpenVINO's inference precision (bf16: AMX / AVX-512 BF16 CPUs; onnxruntime stays fp32)")
    ap.add_argument("--pipeline", action="store_true",
                    help="CPU-s per detected frame of the default detectors (faces + plates) per backend setting "
                         "(cpu, auto, openvino; + openvino bf16 with --ov-precision bf16) instead")
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    import onnxruntime as ort
    import openvino as ov

    from operators.evaldata import default_eval_dir

    fr = frames(args.eval_dir or default_eval_dir(), args.frames)
    if args.pipeline:
        return bench_pipeline(args, fr)
    rows = []
    print(f"onnxruntime {ort.__version__}  openvino {ov.__version__} ({args.ov_precision})  threads={args.threads}  "
          f"{len(fr)} frames 1280x720, {args.rounds} rounds", flush=True)
    print(f"{'model / input':<40} {'ort ms':>8} {'ov ms':>8} {'ratio':>6} {'ort cpu':>8} {'ov cpu':>8} {'ratio':>6} "
          f"{'ov dyn cpu':>10} {'max |diff|':>10} {'new shape ort/ov ms':>20}", flush=True)
    for label, model, factory, kw in cases():
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        if args.ov_precision == "bf16" and "precision" in kw:
            continue  # the int8 graph: not run in bf16
        dets, calls = {}, {}
        for b in BACKENDS:
            bkw = {**kw, "precision": "bf16"} if b == "openvino" and args.ov_precision == "bf16" else kw
            det = factory(providers=b, threads=args.threads, **bkw)
            if b == "openvino":
                det.session.synchronous_compile = True  # static shapes compiled before timing
            rec = Recorder(det.session)
            det.session = rec
            det.detect(fr)
            det.session = rec.inner
            dets[b], calls[b] = det, rec.calls
        assert dets["openvino"].providers == ["openvino"] and dets["cpu"].providers == ["CPUExecutionProvider"]
        assert dets["openvino"].precision == ("bf16" if args.ov_precision == "bf16" else dets["cpu"].precision)
        feeds = calls["cpu"]  # both backends get onnxruntime's recorded inputs (they are the same)
        diff = 0.0
        for _ in range(3):  # OpenVINO compiles the recurring shapes (STATIC_AFTER calls)
            for names, feed in feeds:
                dets["openvino"].session.run(names, feed)
        for names, feed in feeds:
            a = dets["cpu"].session.run(names, feed)
            o = dets["openvino"].session.run(names, feed)
            diff = max(diff, *(float(np.abs(x - y).max()) for x, y in zip(a, o)))
        runs = {"cpu": dets["cpu"].session.run, "openvino": dets["openvino"].session.run,
                "ov_dyn": ov_dynamic(dets["openvino"].session)}
        wall: dict[str, list[float]] = {b: [] for b in runs}
        cpu: dict[str, list[float]] = {b: [] for b in runs}
        for r in range(args.rounds):
            for b in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                w, c = time_calls(runs[b], feeds)
                wall[b].append(1000 * w)
                cpu[b].append(1000 * c)
        med = {b: statistics.median(wall[b]) for b in runs}
        medc = {b: statistics.median(cpu[b]) for b in runs}
        shape = feeds[0][1][next(iter(feeds[0][1]))].shape
        label = f"{label} {shape[3]}x{shape[2]}"
        new_hw = (shape[2] - 64, shape[3] - 96)
        fresh = {b: new_shape_ms(factory, {**kw, "precision": "bf16"} if b == "openvino" and args.ov_precision == "bf16"
                                 else kw, b, args.threads, new_hw) for b in BACKENDS}
        row = {"case": label, "model": model, "input": list(shape), "calls_per_frame": len(feeds) / len(fr),
               "ort_ms": round(med["cpu"], 2), "openvino_ms": round(med["openvino"], 2),
               "ratio": round(med["cpu"] / med["openvino"], 2),
               "ort_cpu_ms": round(medc["cpu"], 2), "openvino_cpu_ms": round(medc["openvino"], 2),
               "cpu_ratio": round(medc["cpu"] / medc["openvino"], 2),
               "openvino_dynamic_ms": round(med["ov_dyn"], 2), "openvino_dynamic_cpu_ms": round(medc["ov_dyn"], 2),
               "static_compile_s": round(dets["openvino"].session.static_compile_s, 2),
               "max_abs_diff": diff, "new_shape_extra_ms": {"ort": round(fresh["cpu"], 1),
                                                             "openvino": round(fresh["openvino"], 1)}}
        rows.append(row)
        print(f"{label:<40} {row['ort_ms']:>8.1f} {row['openvino_ms']:>8.1f} {row['ratio']:>5.2f}x "
              f"{row['ort_cpu_ms']:>8.1f} {row['openvino_cpu_ms']:>8.1f} {row['cpu_ratio']:>5.2f}x "
              f"{row['openvino_dynamic_cpu_ms']:>10.1f} {diff:>10.1e} "
              f"{fresh['cpu']:>9.0f}/{fresh['openvino']:.0f}", flush=True)
    doc = {"onnxruntime": ort.__version__, "openvino": ov.__version__, "threads": args.threads,
           "openvino_precision": args.ov_precision,
           "rounds": args.rounds, "rows": rows}
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
