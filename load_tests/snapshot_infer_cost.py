"""Inference CPU per 320x180 snapshot frame, per model: batch 1 against a stacked batch, and
onnxruntime against OpenVINO, at the input sizes the default detectors use on such a frame
(issue 19 "Throughput", item 3; docs/performance.md "Session 9: snapshot cameras").

    .venv/bin/python load_tests/snapshot_infer_cost.py [--frames 16] [--batch 8] [--rounds 5] [--threads 1]

Builds each default detector of the face + plate policy (CenterFace, YuNet, YOLOX-nano, the
PP-OCRv5 full-frame text pass) on each CPU backend (``cpu``: onnxruntime, ``openvino``), with
the default small-frame sizing (``small_frame_side`` 320: every pass at the camera's own size,
padded to the stride), records the exact network inputs ``detect`` feeds for ``--frames``
frames of ``make load``'s 320x180 source, then times ``session.run`` on them in process CPU
time (every thread; never wall: the machine is shared):

* ``b1``: one frame per call (what every detector does on CPU today);
* ``bN``: the same inputs stacked ``N`` to a call (what batching the detectors' inference
  across the chunks of one ``redact_many`` call would do); ``-`` where the graph does not take
  a batch (YOLOX-nano's export hard-codes batch 1 in its output Reshape).

Backends and batch modes alternate within each round (so the machine's noise hits them
alike); the median round is kept. The column ``auto`` marks the backend the default
(``providers: auto``) picks for that model. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend_bench import Recorder  # noqa: E402 - records every session.run feed

SOURCE = ROOT / "out" / "load" / "sources" / "vtest-320x180-0.5fps.mp4"
BACKENDS = ("cpu", "openvino")


def snapshot_frames(n: int) -> np.ndarray:
    """``n`` frames of the snapshot source (its frames in turn, repeated if it has fewer)."""
    import cv2

    if not SOURCE.is_file():
        raise SystemExit(f"{SOURCE} not found: `make load CAMERAS=1 FPS=0.5 LOAD_ARGS=\"--size 320x180\"` builds it")
    cap = cv2.VideoCapture(str(SOURCE))
    out: list[np.ndarray] = []
    while len(out) < 4 * n:
        ok, fr = cap.read()
        if not ok:
            break
        out.append(fr)
    cap.release()
    if not out:
        raise SystemExit(f"{SOURCE}: no frames")
    step = max(1, len(out) // n)
    return np.stack([out[(i * step) % len(out)] for i in range(n)])


def models(red: Any) -> dict[str, Any]:
    """name -> the detector object that owns the session, for the default face + plate policy."""
    face = red.detectors["face"]
    return {"centerface": face.centerface, "yunet": face.yunet, "yolox": red.detectors["person"],
            "text_full": red.detectors["text"]}


def stacked(calls: list[tuple[Any, dict[str, np.ndarray]]], batch: int) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """The one-frame calls ``calls`` regrouped ``batch`` to a call (same inputs, stacked)."""
    out = []
    for i in range(0, len(calls), batch):
        part = calls[i:i + batch]
        shapes = {tuple(f[k].shape[1:]) for _, f in part for k in f}
        if len(shapes) != 1:
            raise ValueError(f"inputs of different shapes cannot be stacked: {sorted(shapes)}")
        out.append((part[0][0], {k: np.concatenate([f[k] for _, f in part]) for k in part[0][1]}))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.frames < 1 or args.batch < 2 or args.rounds < 1 or args.threads < 1:
        ap.error("--frames, --rounds and --threads must be >= 1, --batch >= 2")
    models_dir = ROOT.parent / "shared" / "models"
    if models_dir.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models_dir))

    from operators.redactor import RedactionConfig, Redactor

    frames = snapshot_frames(args.frames)
    # The full-frame text pass in fp32: its bf16 default (a63591d) runs on a second session that this
    # per-backend comparison does not time (text_precision_cost.py measures bf16 against fp32).
    auto = {k: m.providers[0] for k, m in models(Redactor(RedactionConfig(
        classes=("face", "plate"), threads=args.threads, text_full_precision="fp32").validate())).items()}
    # (model, backend) -> {"b1": calls, "bN": calls or None, "run": session.run}
    cases: dict[tuple[str, str], dict[str, Any]] = {}
    for backend in BACKENDS:
        red = Redactor(RedactionConfig(classes=("face", "plate"), threads=args.threads, providers=(backend,),
                                       text_full_precision="fp32").validate())
        for name, det in models(red).items():
            sess = det.session
            if hasattr(sess, "synchronous_compile"):
                sess.synchronous_compile = True  # OpenVINO's static-shape compile before timing
            rec = Recorder(sess)
            det.session = rec
            det.detect(frames)
            det.session = sess
            one = [c for c in rec.calls if all(v.shape[0] == 1 for v in c[1].values())]
            if len(one) != len(rec.calls):
                raise SystemExit(f"{name}: expected one frame per call, got {[c[1] for c in rec.calls][:1]}")
            many: list[Any] | None = stacked(one, args.batch)
            try:
                sess.run(*many[0])
            except Exception as exc:  # noqa: BLE001 - a graph that takes no batch: measured as not applicable
                print(f"{name} on {backend}: no batch of {args.batch} ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:120]})", flush=True)
                many = None
            for names, feed in one[:3]:  # warm-up, and OpenVINO's compiles of both shapes
                sess.run(names, feed)
            if many is not None:
                sess.run(*many[0])
            cases[(name, backend)] = {"b1": one, "bN": many, "run": sess.run,
                                      "shape": tuple(next(iter(one[0][1].values())).shape[1:])}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    for r in range(args.rounds):
        order = list(cases.items()) if r % 2 == 0 else list(cases.items())[::-1]
        for (name, backend), c in order:
            for mode in (("b1", "bN") if r % 2 == 0 else ("bN", "b1")):
                calls = c[mode]
                if calls is None:
                    continue
                t0 = time.process_time()
                for names, feed in calls:
                    c["run"](names, feed)
                cpu.setdefault((name, backend, mode), []).append((time.process_time() - t0) / len(c["b1"]))
    rows = []
    bn = f"b{args.batch}"
    print(f"\nCPU-s per frame, {len(frames)} frames of {SOURCE.name}, threads={args.threads}, median of {args.rounds} "
          f"rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<11} {'input (C,H,W)':<16} {'backend':<9} {'auto':<5} {'b1':>8} {bn:>8} {bn + '/b1':>7}")
    for (name, backend), c in cases.items():
        b1 = statistics.median(cpu[(name, backend, "b1")])
        b_n = statistics.median(cpu[(name, backend, "bN")]) if c["bN"] is not None else None
        is_auto = (auto[name] == "openvino") == (backend == "openvino")
        rows.append({"model": name, "input": list(c["shape"]), "backend": backend, "auto": is_auto,
                     "b1": round(b1, 5), bn: None if b_n is None else round(b_n, 5),
                     "ratio": None if b_n is None else round(b_n / b1, 3)})
        print(f"{name:<11} {str(c['shape']):<16} {backend:<9} {'*' if is_auto else '':<5} {b1:>8.4f} "
              + (f"{b_n:>8.4f} {b_n / b1:>7.2f}" if b_n is not None else f"{'-':>8} {'-':>7}"))
    print(json.dumps({"rows": rows, "frames": len(frames), "batch": args.batch, "threads": args.threads,
                      "rounds": args.rounds, "auto": auto, "load_avg_1m": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
