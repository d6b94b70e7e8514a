"""A crowd chunk's decode in the chunk actor, this tree against a baseline commit's
``operators/codec.py``, alternated in one process (issue 19, crowd target; docs/performance.md,
session 11, "the Ray remainder of a crowd frame").

    .venv/bin/python load_tests/crowd_decode_ab.py [--baseline 10541eb] [--chunks 4] [--rounds 5]

Cuts ``make load SOURCE=crowd``'s source (1280x720@15, 2 s chunks: 60 frames) as ingest does,
checks that both decodes give the same pixels, then decodes every chunk with each, round by
round, on a worker thread (the chunk actor decodes in ``asyncio.to_thread``) and prints per frame:
process CPU (FFmpeg's own decode threads count), the calling thread's CPU (what the stage's
``decode`` metric reads), wall and minor page faults. Then the scheduled frames' copy
(``frames[sched]``) and their pickle with out-of-band buffers plus one copy (what Ray does to put
them in the object store). CPU seconds: read the ratios when the machine is shared.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators import codec  # noqa: E402
from operators.codec import split_gops  # noqa: E402
from operators.temporal import detection_schedule  # noqa: E402


def load_baseline(commit: str) -> Any:
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:operators/codec.py"],
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="codec_base_")) / "codec_base.py"
    path.write_text(src)
    # loaded as a module of the ``operators`` package, so its relative imports resolve
    spec = importlib.util.spec_from_file_location("operators._codec_base", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def in_thread(fn: Any) -> Any:
    box: list[Any] = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="10541eb")
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--detect-every", type=int, default=4)
    ap.add_argument("--one-thread", action="store_true", help="also this tree's decode on one FFmpeg thread")
    args = ap.parse_args(argv)
    from load_tests.stage_cost import crowd_source

    gops = [g for _, g in zip(range(args.chunks), split_gops(str(crowd_source()), 2.0))]
    base = load_baseline(args.baseline)
    variants = {"baseline": base.decode_h264_chunk, "now": codec.decode_h264_chunk}
    if args.one_thread:  # FFmpeg decoding a 720p chunk on the calling thread only (as small chunks do)
        def one_thread(*a: Any, **kw: Any) -> Any:
            old = codec.SMALL_DECODE_PIXELS
            codec.SMALL_DECODE_PIXELS = 1 << 62
            try:
                return codec.decode_h264_chunk(*a, **kw)
            finally:
                codec.SMALL_DECODE_PIXELS = old
        variants["now_1thread"] = one_thread

    def run(fn: Any, g: Any) -> np.ndarray:
        out: np.ndarray = fn(g.payload, (g.width, g.height), expected_frames=len(g.pts_ms), strict_size=True)
        return out

    for g in gops:
        a = run(variants["baseline"], g)
        for name, fn in variants.items():
            b = run(fn, g)
            if not np.array_equal(a, b) or not b.flags.c_contiguous or not b.flags.writeable:
                print(f"CHECK FAILED: {name}'s decoded frames differ from the baseline's")
                return 1
    n = sum(len(g.pts_ms) for g in gops)
    print(f"{len(gops)} chunks, {n} frames, {gops[0].width}x{gops[0].height}: the same pixels")
    rows: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            def one(fn: Any = fn) -> tuple[float, float, float, float]:
                p0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                for g in gops:
                    out = run(fn, g)
                    del out
                return ((time.process_time() - p0) / n * 1e3, (time.thread_time() - t0) / n * 1e3,
                        (time.perf_counter() - w0) / n * 1e3,
                        (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n)
            rows[name].append(in_thread(one))
    print("ms per frame, each round; best (least process CPU) in brackets")
    for name, rs in rows.items():
        best = min(rs)
        print(f"{name:9s} process " + " ".join(f"{r[0]:.3f}" for r in rs) + f" [{best[0]:.3f}]"
              + " | thread " + " ".join(f"{r[1]:.3f}" for r in rs)
              + " | wall " + " ".join(f"{r[2]:.2f}" for r in rs)
              + " | minflt/frame " + " ".join(f"{r[3]:.0f}" for r in rs))
    b = min(rows["baseline"])
    for name in list(variants)[1:]:
        c = min(rows[name])
        print(f"{name} / baseline (best process CPU): x{c[0] / b[0]:.3f}; medians x"
              f"{np.median([r[0] for r in rows[name]]) / np.median([r[0] for r in rows['baseline']]):.3f}")
    import pickle

    frames = run(variants["now"], gops[0])
    sched = [i for i, s in enumerate(detection_schedule(len(frames), args.detect_every)) if s]
    for _ in range(3):
        p0 = time.process_time()
        for _ in range(5):
            sent = frames[sched]
        copy = (time.process_time() - p0) / 5 / len(frames) * 1e3
        p0 = time.process_time()
        for _ in range(5):
            bufs: list[Any] = []
            pickle.dumps(sent, protocol=5, buffer_callback=bufs.append)
            bytearray(bufs[0].raw())
        put = (time.process_time() - p0) / 5 / len(frames) * 1e3
        print(f"scheduled frames ({len(sched)} of {len(frames)}, {sent.nbytes / 1e6:.1f} MB): copy {copy:.3f}, "
              f"pickle out-of-band + one copy {put:.3f} ms per chunk frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
