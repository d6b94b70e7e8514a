"""Where one detector actor's call spends its time on a GPU node, and what cuDNN's algorithm search costs.

    .venv/bin/python load_tests/gpu_profile.py --images ../shared/eval/plates_traffic/images --profile
    .venv/bin/python load_tests/gpu_profile.py --images DIR --cudnn-conv-algo-search HEURISTIC
    .venv/bin/python load_tests/gpu_profile.py --providers CPUExecutionProvider --side 640 --frames 2   # smoke, CPU

Written after the one H100 run of 2026-12-05 (docs/performance.md, "GPU: one H100 node"): there one
actor's ``Redactor.detect_many`` on the CUDA provider ran 1.5-4.2 frames/s of 1280x720 and its text
pass did not get faster in batches (9.5 frames/s at batch 8, 60.9 at batch 1), while the networks alone
ran 46-300 frames/s. The run that would have said why was not lent a machine. This script is that run:
it builds the detectors of the default config (``gpu_bench.detector_config``), times two warm-up calls
(the first pays for sessions, memory arenas and, with onnxruntime's default EXHAUSTIVE cuDNN search, a
benchmark of every convolution for every new input shape: the text pass's packed crop canvases change
shape with what is in the frames), each detector alone, and then three steady calls, with wall time and
this process's CPU time per frame; ``--profile`` prints cProfile's top functions of the steady calls.
``--cudnn-conv-algo-search`` (EXHAUSTIVE, HEURISTIC, DEFAULT) is passed to the CUDA provider of every
session (onnxruntime's provider option of that name). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "load_tests"))


def with_algo_search(algo: str) -> None:
    """Make every new onnxruntime session give its CUDA provider ``cudnn_conv_algo_search=algo``."""
    import onnxruntime as ort

    real = ort.InferenceSession

    def session(*a: Any, providers: Any = None, **kw: Any) -> Any:
        providers = [(p, {"cudnn_conv_algo_search": algo}) if p == "CUDAExecutionProvider" else p
                     for p in (providers or [])]
        return real(*a, providers=providers, **kw)

    ort.InferenceSession = session  # type: ignore[misc]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=None, help="a folder of pictures used as frames (gpu_bench --images)")
    ap.add_argument("--providers", default="CUDAExecutionProvider,CPUExecutionProvider")
    ap.add_argument("--cudnn-conv-algo-search", choices=("EXHAUSTIVE", "HEURISTIC", "DEFAULT"), default=None)
    ap.add_argument("--side", type=int, default=1280, help="longer side of the 16:9 frames, px")
    ap.add_argument("--frames", type=int, default=16, help="frames per call")
    ap.add_argument("--calls", type=int, default=3, help="steady calls timed")
    ap.add_argument("--profile", action="store_true", help="print cProfile's top functions of the steady calls")
    args = ap.parse_args()
    if args.frames < 1 or args.calls < 1:
        ap.error("--frames and --calls must be >= 1")
    import gpu_bench

    gpu_bench.IMAGES = args.images
    if args.cudnn_conv_algo_search:
        with_algo_search(args.cudnn_conv_algo_search)
    from operators.redactor import Redactor

    tag = f"algo={args.cudnn_conv_algo_search or 'onnxruntime default'}"
    red = Redactor(replace(gpu_bench.detector_config(args.side),
                           providers=tuple(p for p in args.providers.split(",") if p)))
    frames = gpu_bench.frames_for(args.side, args.frames)
    n = args.frames
    for i in range(2):
        t0 = time.perf_counter()
        red.detect_many([frames])
        print(f"{tag} warm-up call {i}: {time.perf_counter() - t0:.2f} s", flush=True)
    for name, det in red.detectors.items():
        det.detect(frames)
        t0, c0 = time.perf_counter(), time.process_time()
        det.detect(frames)
        print(f"{tag} {name}: {1000 * (time.perf_counter() - t0) / n:.1f} ms/frame wall, "
              f"{1000 * (time.process_time() - c0) / n:.1f} ms CPU ({','.join(gpu_bench.session_providers(det))})",
              flush=True)
    prof = cProfile.Profile()
    t0, c0 = time.perf_counter(), time.process_time()
    if args.profile:
        prof.enable()
    for _ in range(args.calls):
        red.detect_many([frames])
    if args.profile:
        prof.disable()
    k = args.calls * n
    print(f"{tag} detect_many steady: {1000 * (time.perf_counter() - t0) / k:.1f} ms/frame wall, "
          f"{1000 * (time.process_time() - c0) / k:.1f} ms CPU/frame", flush=True)
    if args.profile:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(22)
        stats.sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
