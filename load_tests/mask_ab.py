"""The mask step of the process stage (``Redactor.apply``: plan, mask, count's middle), this tree's
``operators/anonymize.py`` against a baseline commit's, alternated in one process (issue 19, crowd
target; docs/performance.md, session 13, "the crowd's masking step").

    .venv/bin/python load_tests/mask_ab.py [--baseline 28ff8fb] [--sources crowd,vtest,snapshot]
        [--rounds 5] [--styles]

Each source's chunks are cut as ingest cuts them and their detections read from
``load_tests/stage_cost.py``'s cache (``out/stage_cost/<source>-<chunks>.pkl``; build it with
``stage_cost.py --source <source> --chunks <chunks> --rounds 1 --detections <that file>``):
``crowd`` (``make load SOURCE=crowd``'s 1280x720@15, ~920 boxes a frame to mask), ``vtest``
(``make load``'s 1280x720@15) and ``snapshot`` (320x180, one frame per 2 s chunk). Every chunk
is planned once (``Redactor.plan_from``, this tree) and masked by both codes.

Checks first: the masked frames of both codes are ``np.array_equal`` on every chunk, with the
stream's default maskers and (``--styles``) with every style the product ships (mosaic, blur,
fill) in each shape (rect, ellipse) for every label; and ``Redactor.coverage`` (what the eval
scores) is the same on every frame. Then each code masks every chunk in place on a copy made
outside the timer (as the chunk actor does), round by round, the order swapped each round, and
the CPU seconds (``time.process_time``) per frame are printed per round with the ratio. Read the
ratios when the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import operators.anonymize as anon_now  # noqa: E402
import operators.redactor as redactor_mod  # noqa: E402
from load_tests.mask_cost import load_at  # noqa: E402
from operators.redactor import RedactionConfig, Redactor  # noqa: E402
from operators.types import Boxes  # noqa: E402

CHUNKS = {"crowd": 2, "vtest": 2, "snapshot": 30}
"""Source -> chunks (the cache file's name)."""


def chunks_of(source: str) -> tuple[list[np.ndarray], list[list[Boxes | None]]]:
    """A source's decoded chunks and the raw detections of their scheduled frames."""
    from load_tests.stage_cost import source_for
    from operators.codec import decode_chunk_payload, split_gops
    from operators.temporal import detection_schedule

    n = CHUNKS[source]
    cache = ROOT / "out" / "stage_cost" / f"{source}-{n}.pkl"
    if not cache.is_file():
        raise SystemExit(f"{cache} missing: run `VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python "
                         f"load_tests/stage_cost.py --source {source} --chunks {n} --rounds 1 "
                         f"--detections {cache.relative_to(ROOT)}` first")
    cached = pickle.loads(cache.read_bytes())
    chunks: list[np.ndarray] = []
    raws: list[list[Boxes | None]] = []
    for seq, g in zip(range(n), split_gops(str(source_for(source)), 2.0)):
        frames = decode_chunk_payload("h264", g.payload, (g.width, g.height), expected_frames=len(g.pts_ms))
        raw: list[Boxes | None] = [None] * len(frames)
        for j, i in enumerate(i for i, s in enumerate(detection_schedule(len(frames), 4)) if s):
            raw[i] = cached[seq][j]
        chunks.append(frames)
        raws.append(raw)
    return chunks, raws


def masker_of(mod: Any, styles: tuple[str, str] | None = None) -> Callable[..., Any]:
    """``Redactor.apply`` masking with ``mod``'s anonymizers (and its ``anonymize_together``);
    ``styles``: every label's masker in this (style, shape) instead of the defaults."""
    red = Redactor(RedactionConfig(detect_every=4).validate(), detectors={})
    specs = {lb: m.spec if styles is None else replace(m.spec, style=styles[0], shape=styles[1], strength=None)
             for lb, m in red._maskers.items()}
    red._maskers = {lb: mod.make_anonymizer(s) for lb, s in specs.items()}
    red._region_masker = mod.make_anonymizer(red._region_masker.spec)

    def apply(frames: np.ndarray, boxes: list[Boxes]) -> np.ndarray:
        orig = redactor_mod.anonymize_together
        redactor_mod.anonymize_together = mod.anonymize_together
        try:
            return red.apply(frames, boxes, in_place=True)
        finally:
            redactor_mod.anonymize_together = orig

    apply.redactor = red  # type: ignore[attr-defined]
    return apply


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="28ff8fb", help="commit whose operators/anonymize.py is the baseline")
    ap.add_argument("--sources", default="crowd,vtest,snapshot")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--styles", action="store_true", help="also check every style x shape (identity only)")
    args = ap.parse_args(argv)
    base_mod = load_at(args.baseline, "anonymize.py", "_base_anonymize")
    planner = Redactor(RedactionConfig(detect_every=4).validate(), detectors={})
    variants = {"baseline": masker_of(base_mod), "now": masker_of(anon_now)}
    load = os.getloadavg()
    print(f"baseline {args.baseline}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    ok = True
    results = []
    for source in args.sources.split(","):
        chunks, raws = chunks_of(source)
        plans = [planner.plan_from(raw, [], f.shape[1:3], frames=f) for f, raw in zip(chunks, raws, strict=True)]
        n = sum(len(f) for f in chunks)
        boxes = sum(len(b) for p in plans for b in p) / n
        combos: list[tuple[str, str] | None] = [None]
        if args.styles:
            combos += [(st, sh) for st in anon_now.ANONYMIZERS for sh in anon_now.SHAPES]
        for combo in combos:
            pair = variants if combo is None else {"baseline": masker_of(base_mod, combo),
                                                   "now": masker_of(anon_now, combo)}
            same = all(np.array_equal(pair["baseline"](f.copy(), p), pair["now"](f.copy(), p))
                       for f, p in zip(chunks, plans, strict=True))
            print(f"{source} {'default maskers' if combo is None else '/'.join(combo)}: "
                  f"{'identical' if same else 'DIFFERENT'}", flush=True)
            ok &= same
        reds = {k: v.redactor for k, v in variants.items()}  # type: ignore[attr-defined]
        cov_same = all(np.array_equal(reds["baseline"].coverage(f.shape[1:3], b), reds["now"].coverage(f.shape[1:3], b))
                       for f, p in zip(chunks, plans, strict=True) for b in p)
        print(f"{source} coverage: {'identical' if cov_same else 'DIFFERENT'}", flush=True)
        ok &= cov_same
        for fn in variants.values():  # warm up, untimed
            fn(chunks[0].copy(), plans[0])
        per: dict[str, list[float]] = {k: [] for k in variants}
        faults: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                t = 0.0
                flt = 0
                for f, p in zip(chunks, plans, strict=True):
                    buf = f.copy()
                    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    t0 = time.process_time()
                    variants[name](buf, p)
                    t += time.process_time() - t0
                    flt += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
                per[name].append(t / n)
                faults[name].append(flt / n)
        ratios = [a / b for a, b in zip(per["now"], per["baseline"], strict=True)]
        results.append((source, chunks[0].shape, n, boxes, per, ratios, faults))
    load = os.getloadavg()
    print(f"\nCPU ms per frame of the mask step (Redactor.apply in place), {args.rounds} rounds alternated; "
          f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for source, shape, n, boxes, per, ratios, faults in results:
        print(f"{source} ({shape[2]}x{shape[1]}, {n} frames, {boxes:.1f} boxes a frame)")
        for name, ts in per.items():
            print(f"  {name:8s} " + " ".join(f"{t * 1e3:7.3f}" for t in ts) + f"   median {np.median(ts) * 1e3:.3f}"
                  f"   (minor page faults a frame, median {np.median(faults[name]):.0f})")
        print("  now/base " + " ".join(f"{x:7.3f}" for x in ratios) + f"   median {np.median(ratios):.3f}")
    print("every check identical" if ok else "CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
