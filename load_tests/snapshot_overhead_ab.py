"""Session 11 (issue 19, snapshot target): h2's lossless per-frame cuts against the code before
them, in one process, alternated round by round; CPU per frame (``time.process_time``).

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/snapshot_overhead_ab.py [--rounds 6]

On 64 one-frame chunks of ``make load``'s 320x180 0.5 fps source:

* decode (``decode_chunk_payload``): decoded frames to BGR by PyAV's per-frame
  ``to_ndarray(format="bgr24")`` (old) or :func:`operators.codec.frame_to_bgr` (new, one swscale
  context per thread);
* detection (``Redactor.detect_many``, 8 chunks a call, ``threads: 1``: what a detector lane runs):
  the text pass's and CenterFace's input blobs as the strided expressions before (old) or by
  :func:`operators.detectors._common.nchw_float32` (new, C-contiguous).

It first checks that both give the same decoded pixels and the same boxes, scores and labels (after
a warm-up pass: the first calls of a shape run before its static OpenVINO compile is in, which
moves scores whichever blob is used).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from chunk_batch_cost import SOURCE, snapshot_tasks  # noqa: E402

from operators import codec  # noqa: E402
from operators.detectors import centerface as cfmod  # noqa: E402
from operators.detectors import text as textmod  # noqa: E402
from operators.redactor import RedactionConfig, Redactor  # noqa: E402

NEW = {"text": textmod.nchw_float32, "cf": cfmod.nchw_float32, "bgr": codec._to_bgr}
OLD = {"text": lambda a, m, s: (a.transpose(0, 3, 1, 2).astype(np.float32) - m) * s,
       "cf": lambda a: a.transpose(0, 3, 1, 2).astype(np.float32),
       "bgr": lambda fr: fr.to_ndarray(format="bgr24")}


def use(v: dict[str, Any]) -> None:
    textmod.nchw_float32, cfmod.nchw_float32, codec._to_bgr = v["text"], v["cf"], v["bgr"]  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--chunks", type=int, default=64)
    args = ap.parse_args(argv)
    tasks = snapshot_tasks(SOURCE, args.chunks)
    red = Redactor(RedactionConfig(detect_every=1, threads=1))

    def decode_all() -> list[np.ndarray]:
        return [codec.decode_chunk_payload(t.codec, t.payload, (t.width, t.height), expected_frames=len(t.pts_ms),
                                           strict=True) for t in tasks]

    def detect_all(frames: list[np.ndarray]) -> list[Any]:
        return [r for i in range(0, len(frames), 8) for r in red.detect_many(frames[i:i + 8])]

    detect_all(decode_all())  # warm-up (see the docstring)
    got = {}
    for name, v in (("old", OLD), ("new", NEW)):
        use(v)
        fr = decode_all()
        got[name] = (fr, detect_all(fr))
    same_px = all(np.array_equal(a, b) for a, b in zip(got["old"][0], got["new"][0]))
    same_boxes = all(fa == fb and all(np.array_equal(x.xyxy, y.xyxy) and np.array_equal(x.score, y.score)
                                      and np.array_equal(x.label, y.label) for x, y in zip(ba, bb))
                     for (ba, fa, _), (bb, fb, _) in zip(got["old"][1], got["new"][1]))
    print(f"decoded frames identical: {same_px}; boxes, scores and labels identical: {same_boxes}")
    acc = {k: {"decode": 0.0, "detect": 0.0} for k in ("old", "new")}
    frames = got["new"][0]
    for r in range(args.rounds):
        for name, v in (("old", OLD), ("new", NEW)) if r % 2 == 0 else (("new", NEW), ("old", OLD)):
            use(v)
            c = time.process_time()
            decode_all()
            acc[name]["decode"] += time.process_time() - c
            c = time.process_time()
            detect_all(frames)
            acc[name]["detect"] += time.process_time() - c
    use(NEW)
    n = args.rounds * len(tasks)
    for k in ("decode", "detect"):
        o, w = acc["old"][k] / n * 1e3, acc["new"][k] / n * 1e3
        print(f"{k}: old {o:.3f} ms/frame, new {w:.3f} ms/frame, x{w / o:.3f}, saved {o - w:.3f} ms")
    return 0 if same_px and same_boxes else 1


if __name__ == "__main__":
    raise SystemExit(main())
