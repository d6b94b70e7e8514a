"""``veilstream eval --as-video``: per-frame leak rate in video, not only on stills.

Each labelled image becomes a short clip from a moving camera: ``CLIP_FRAMES`` frames at
``CLIP_FPS`` that zoom in from 1x to ``1 + ZOOM`` while panning across the image, encoded
to H.264 with PyAV (libx264, CRF 23, like a camera) and decoded again, so the detectors see
compression artefacts and motion. The clip is redacted with the VIDEO defaults
(``--detect-every`` N, boxes carried and interpolated by temporal fill, which follows the
camera's motion estimated from the clip's frames), and every frame is
scored against the image's labels mapped by the same pan and zoom (targets less than half
in view that frame are not counted). The table ends each set with its masked area (share of
the pixels of every frame).

Each ``--video-every N`` detects the clip's scheduled frames as the process stage does: the
scheduled frames as one batch to a detector (:func:`detect_as_scheduled`), so the full-frame
text pass runs on every ``text_full_every``-th scheduled frame and the plate carry spans
scheduled frames, as in the stream. (Until session 11 one pass detected every frame and each
N kept the scheduled frames' boxes: every scheduled frame at N >= 2 had had the full text pass
and a carry from the frame before, which made the video figures optimistic about plates.)
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .evaluation import Affine, Scorer, load_items, subset
from .temporal import detection_schedule
from .types import Frames, InputError

CLIP_FRAMES = 25
CLIP_FPS = 25.0
ZOOM = 0.3
DEFAULT_LIMIT = 8


def clip_from_image(img: np.ndarray, n: int = CLIP_FRAMES, zoom: float = ZOOM) -> tuple[Frames, list[Affine]]:
    """``n`` frames of a camera zooming from 1x to ``1 + zoom`` while panning left to right
    and top to middle, and per frame the affine ``(s, tx, ty)`` from image to frame pixels."""
    h, w = img.shape[:2]
    h, w = h - h % 2, w - w % 2
    img = img[:h, :w]
    frames, affines = [], []
    for i in range(n):
        t = i / max(1, n - 1)
        z = 1.0 + zoom * t
        x0 = (w - w / z) * t
        y0 = (h - h / z) * 0.5 * t
        m = np.array([[z, 0.0, -z * x0], [0.0, z, -z * y0]], np.float32)
        frames.append(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        affines.append((z, -z * x0, -z * y0))
    return np.stack(frames), affines


CLIP_X264_PARTITIONS: str | None = None
"""The clip's encoder stands in for a *camera's* encoder (the footage the stage receives), not for
the stage's output encoder: libx264 CRF 23 veryfast with the preset's own partition search, the
stage's encoder settings up to session 11. Session 12 gave the stage's encoder ``partitions=i4x4``
(:data:`operators.codec.X264_PARTITIONS`); with the clips following it, faces_wider_hard's small-face
leaks moved by 10-30 target-frames with no change to detection or masking (another bitstream of the
same pictures). Pinned here so that tuning the output encoder never changes the eval's input."""


def h264_roundtrip(frames: Frames, tmp: Path | None = None, fps: float = CLIP_FPS) -> Frames:
    """Encode to H.264 (libx264 CRF 23, veryfast, :data:`CLIP_X264_PARTITIONS`, through the process
    stage's chunk encoder :func:`operators.codec.encode_h264_chunk`) and decode again, in memory
    (``tmp`` is not used).

    Deterministic: the same frames give the same clip in every run. Until session 11 the clip
    went through :class:`operators.video.VideoWriter`, whose swscale BGR -> yuv420p conversion
    gave another bitstream in 1-2 of 30 encodes of the same frames (and another clip, detections
    and masked area: two runs of one tree differed by up to 2.7 points of a set's masked area);
    the stage's encoder converts with OpenCV and gave one bitstream in 30 of 30.
    """
    from .codec import decode_h264_chunk, encode_h264_chunk

    h, w = int(frames.shape[1]), int(frames.shape[2])
    data = encode_h264_chunk(frames, fps=fps, partitions=CLIP_X264_PARTITIONS)
    return decode_h264_chunk(data, (w, h), expected_frames=len(frames))


def detect_as_scheduled(red: Any, frames: Frames, every: int) -> tuple[list[Any], list[int]]:
    """Detections of a clip's frames as the process stage computes them at ``--detect-every``
    ``every``: the chunk actor sends only the scheduled frames, as one batch, to a detector whose
    :class:`~operators.redactor.Redactor` detects every frame it is given. Whatever a detector does
    across the frames of its batch therefore sees the scheduled frames only: the full-frame text
    pass on every ``text_full_every``-th *scheduled* frame, the plate carry from the previous
    *scheduled* frame. Returns per clip frame its boxes (``None`` where not scheduled) and the
    failed frames (clip indices)."""
    idx = [i for i, s in enumerate(detection_schedule(len(frames), every)) if s]
    raw_s, failed_s, _errors = red.detect_many([frames[idx]])[0]
    raw: list[Any] = [None] * len(frames)
    for j, i in enumerate(idx):
        raw[i] = raw_s[j]
    return raw, [idx[f] for f in failed_s]


def run_video_eval(args: Any, cfg: Any, names: tuple[str, ...], eval_dir: Path, limit: int | None) -> int:
    from .redactor import Redactor

    everies = [int(x) for x in str(getattr(args, "video_every", "4")).split(",") if x.strip()]
    if not everies or min(everies) < 1:
        raise InputError(f"--video-every: expected integers >= 1, got {args.video_every!r}")
    limit = limit or DEFAULT_LIMIT
    base = replace(cfg, detect_every=1)
    red = Redactor(base)
    planners = {n: Redactor(replace(base, detect_every=n), detectors={}) for n in everies}
    results: list[dict[str, Any]] = []
    progress = sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="veil-evalvideo-") as td:
        for ds in names:
            items = subset(load_items(ds, eval_dir), limit)
            still = Scorer(ds, person_class="person" in cfg.classes)
            video = {n: Scorer(ds, person_class="person" in cfg.classes) for n in everies}
            from .video import read_image

            for k, item in enumerate(items):
                img = read_image(item.image_path)
                boxes, *_ = red.plan(img[None])
                still.add(item, red.coverage(img.shape[:2], boxes[0]))
                frames, affines = clip_from_image(img)
                frames = h264_roundtrip(frames, Path(td))
                hw = (int(frames.shape[1]), int(frames.shape[2]))
                for n in everies:
                    raw_n, failed_n = detect_as_scheduled(red, frames, n)
                    planned = planners[n].plan_from(raw_n, failed_n, hw, frames=frames)
                    for i, (b, a) in enumerate(zip(planned, affines)):
                        video[n].add(item, planners[n].coverage(hw, b), affine=a,
                                     frame=f"{Path(item.image_path).name}#{i}")
                if progress:
                    print(f"\r{ds}: clip {k + 1}/{len(items)}", end="", file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr)
            srep = still.report()
            row: dict[str, Any] = {"dataset": ds, "images": len(items), "frames_per_clip": CLIP_FRAMES,
                                   "classes": []}
            for c in srep.classes:
                entry: dict[str, Any] = {"cls": c.cls, "still": {"targets": c.targets, "leaked": c.leaked,
                                                                 "leak_rate": round(c.leak_rate, 4)}}
                for n in everies:
                    vc = next(v for v in video[n].report().classes if v.cls == c.cls)
                    entry[f"video_every_{n}"] = {"target_frames": vc.targets, "leaked": vc.leaked,
                                                 "leak_rate": round(vc.leak_rate, 4)}
                row["classes"].append(entry)
            row["masked_area"] = {"still": round(srep.masked_area_share, 4),
                                  **{f"video_every_{n}": round(video[n].report().masked_area_share, 4)
                                     for n in everies}}
            results.append(row)
    head = f"{'dataset':<16} {'class':<13} {'still':>14}" + "".join(f" {'video/' + str(n):>16}" for n in everies)
    lines = [head]
    for row in results:
        for e in row["classes"]:
            if e["still"]["targets"] == 0:
                continue
            s = e["still"]
            cells = "".join(f" {e[f'video_every_{n}']['leak_rate']:>7.1%} of {e[f'video_every_{n}']['target_frames']:>5}"
                            for n in everies)
            lines.append(f"{row['dataset']:<16} {e['cls']:<13} {s['leak_rate']:>5.1%} of {s['targets']:>5}{cells}")
        area = row["masked_area"]
        lines.append(f"{row['dataset']:<16} {'masked area':<13} {area['still']:>14.1%}"
                     + "".join(f" {area[f'video_every_{n}']:>16.1%}" for n in everies))
    print(f"as video: {CLIP_FRAMES}-frame clips at {CLIP_FPS:g} fps (zoom 1 -> {1 + ZOOM:g}, pan), H.264 CRF 23; "
          f"{limit} images per set; leak rate of target-frames")
    print("\n".join(lines))
    doc = {"clip": {"frames": CLIP_FRAMES, "fps": CLIP_FPS, "zoom": 1 + ZOOM}, "limit": limit,
           "detect_every": everies, "datasets": results}
    if getattr(args, "json_out", None):
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(doc, indent=2))
    return 0
