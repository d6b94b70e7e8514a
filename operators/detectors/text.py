"""PP-OCRv4 text detector (DB-net from the ``rapidocr-onnxruntime`` wheel): plates and text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..motion import MOTION_SIDE, pair_transform, warp_xyxy
from ..ovsession import OPENVINO, OpenVinoSession, bf16_supported
from ..providers import on_cpu
from ..quantize import DEFAULT_PRECISION
from ..types import Boxes, Frames, Label
from . import litplate
from ._base import OnnxDetector
from ._common import ModelRef, check_frames, finish, nchw_float32


def plan_tiles(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping ``(y0, x0, y1, x1)`` windows of at most ``tile`` px a side covering an
    ``h`` x ``w`` image (one window when it fits)."""
    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        k = -(-(n - overlap) // (tile - overlap))
        step = (n - tile) / (k - 1)
        return [round(i * step) for i in range(k)]
    return [(y, x, min(h, y + tile), min(w, x + tile)) for y in starts(h) for x in starts(w)]


def _up(v: int, m: int = 32) -> int:
    return -(-v // m) * m


def pack_shelves(sizes: Sequence[tuple[int, int]], max_w: int, max_h: int,
                 gap: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """Place ``(w, h)`` rectangles on as few canvases of at most ``max_w`` x ``max_h`` as
    shelf packing finds (first fit, tallest first), at least ``gap`` px apart, every
    rectangle at a multiple of 32 px (the network's stride: a crop sees the same grid
    wherever it lies).

    Returns:
        ``(canvas, x, y)`` per rectangle (input order) and each canvas's ``(w, h)``: the
        extent used, rounded up to a multiple of 32.

    Raises:
        ValueError: a rectangle larger than the canvas.
    """
    canvases: list[list[list[int]]] = []  # per canvas, shelves as [y, height, next x]
    tops: list[int] = []  # per canvas, where its next shelf would start
    places: list[tuple[int, int, int]] = [(0, 0, 0)] * len(sizes)
    for k in sorted(range(len(sizes)), key=lambda k: (-sizes[k][1], -sizes[k][0], k)):
        w, h = sizes[k]
        if not (0 < w and 0 < h and w + gap <= max_w and h + gap <= max_h):
            raise ValueError(f"crop of {w}x{h} px does not fit a {max_w}x{max_h} canvas")
        spot = next(((c, s) for c, shelves in enumerate(canvases) for s in shelves
                     if s[2] + w + gap <= max_w and h <= s[1]), None)
        if spot is None:
            c = next((c for c, t in enumerate(tops) if t + h + gap <= max_h), len(canvases))
            if c == len(canvases):
                canvases.append([])
                tops.append(0)
            spot = (c, [tops[c], h, 0])
            canvases[c].append(spot[1])
            tops[c] = _up(tops[c] + h + gap)
        c, shelf = spot
        places[k] = (c, shelf[2], shelf[0])
        shelf[2] = _up(shelf[2] + w + gap)
    shapes = [(0, 0)] * len(canvases)
    for k, (c, x, y) in enumerate(places):
        w, h = sizes[k]
        shapes[c] = (max(shapes[c][0], _up(x + w + gap)), max(shapes[c][1], _up(y + h + gap)))
    return places, shapes


DEFAULT_THRESHOLD = 0.25
"""Score threshold when the config sets none (see ``threshold`` below)."""

DEFAULT_MODEL = "ppocr_det_v5"
"""The text model when the config names none: PP-OCRv5 mobile (see ``model`` below)."""


def budget_zooms(windows: Sequence[tuple[int, int, int, int]], zooms: Sequence[float], budget_px: float) -> list[float]:
    """``zooms`` (one per ``(x0, y0, x1, y1)`` window) scaled by one factor so that the zoomed
    windows cover at most ``budget_px`` pixels together, no zoom brought below ``min(zoom, 1)``
    (a crop is never searched smaller than its own pixels for a budget: it may then exceed it).
    Unchanged where they already fit."""
    total = sum((x1 - x0) * (y1 - y0) * z * z for (x0, y0, x1, y1), z in zip(windows, zooms))
    if total <= budget_px:
        return list(zooms)
    s = math.sqrt(budget_px / total)
    return [max(min(z, 1.0), z * s) for z in zooms]

CARRY_MAX_HEIGHT_RATIO = 0.8
"""A searched crop's plate is carried only when it found a box no squarer than this (height
over width; ``operators.redactor.PLATE_MAX_HEIGHT_RATIO``, the same rule the plate fallback
reads): a tail light scores as text too, and is no reason to stop looking for the plate."""

CARRY_MIN_PLATE_PX = 16
"""... and only when that box is at least this tall (px, frame pixels, padding included): a
small plate is where the net finds a box in some frames only, and where the 4 px a window may
move shifts the carried box off the plate (the moving-camera video eval at detect-every 1: one
kg_* plate under 20 px wide leaked on 8 of 25 frames with every box carried, 3 searched)."""

IMAGENET_NORM_MODELS = frozenset({"ppocr_det_v5"})
"""Registry models fed ``(x/255 - ImageNet mean) / ImageNet std`` (PaddleOCR's v5 det
preprocessing, on BGR as PaddleOCR reads it); the others ``(x/255 - 0.5) / 0.5`` (RapidOCR's v4)."""


def _follow_camera(frames: Frames, j: int, i: int, boxes: Boxes) -> Boxes:
    """``boxes`` found on frame ``j`` moved by the camera motion from frame ``j`` to frame ``i``
    (estimated as temporal fill estimates it, :func:`operators.motion.pair_transform` on grey
    frames of at most ``MOTION_SIDE`` px); unmoved where it cannot be estimated."""
    if not len(boxes):
        return boxes
    h, w = frames.shape[1:3]
    scale = min(1.0, MOTION_SIDE / max(h, w, 1))

    def grey(f: np.ndarray) -> np.ndarray:
        small = f if scale == 1.0 else cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), np.uint8)

    m = pair_transform(grey(frames[j]), grey(frames[i]))
    if m is None:
        return boxes
    full = np.diag([1.0 / scale, 1.0 / scale, 1.0]) @ m @ np.diag([scale, scale, 1.0])
    moved = warp_xyxy(boxes.xyxy, full)
    np.clip(moved, 0, np.array([w, h, w, h], np.float32), out=moved)
    return Boxes(moved, boxes.score, boxes.label)


class TextDetector(OnnxDetector):
    """Text regions (licence plate characters, signs, screens) as padded axis-aligned boxes.

    Pre- and post-processing follow PaddleOCR's DB detector: BGR normalised as the model was
    trained (``IMAGENET_NORM_MODELS``), binarise the probability map at ``bin_threshold``, dilate 2x2, one box per contour
    (min-area rectangle), keep when its mean probability >= ``threshold``, then "unclip"
    (grow by ``area * unclip_ratio / perimeter`` on every side). The rotated box becomes
    its axis-aligned hull, padded by ``pad`` times its text height on every side so that
    character edges that the probability map misses are still covered.

    Two passes find plates the way a person would (see ``detect_given``):

    * full frame: frames whose longer side is below ``min_side`` are upscaled to it (plate
      characters in a 400 px photo are 4-8 px tall: below what the network finds), longer
      than ``max_side`` downscaled; a scaled frame larger than ``tile`` px is cut into
      overlapping tiles (1080p, 4K) batched through one call.
    * vehicle crops: the lower ``crop_lower`` part of every :attr:`Label.VEHICLE` box
      from the first detection stage (YOLOX), upscaled up to ``crop_max_zoom`` so that the
      crop fits ``crop_width`` x ``crop_height`` px: a 90 px plate on a 720p frame gets
      20-30 px characters, where the DB net is at its best. The zoomed crops of all frames
      of a call share canvases where they fit (``crop_pack``).

    Args:
        model: registry name or path: ``ppocr_det_v5`` (default, PP-OCRv5 mobile) or
            ``ppocr_det`` (PP-OCRv4 mobile, RapidOCR's). Same cost on CPU (63 vs 68 ms at
            960x544); v5 leaks fewer plates at every threshold of the sweep (plates_traffic
            at 0.6: 43 vs 49 of 398) and masks less elsewhere (coco_val2017: 11.4 vs 14.5 %).
        imagenet_norm: the input normalisation (``None``: by the registry name; a path
            gets the v4 one).
        label: :attr:`Label.PLATE` (default) or :attr:`Label.TEXT`: one model, two uses.
        threshold: box score threshold. 0.25, from the sweep with PP-OCRv5: plates_traffic
            leaks are flat from 0.15 to 0.35 (38 of 398) and rise above (0.6: 43), plates_eu
            leaks none anywhere, and coco_val2017's masked area is 13.0 % at 0.25 against
            11.4 % at 0.6 (target <= 15 %). (With PP-OCRv4 it was 0.6: v4's scores on other
            text and texture are higher.)
        bin_threshold: probability binarisation threshold (0.3).
        unclip_ratio: DB unclip ratio (1.6).
        pad: extra padding as a fraction of the text height, every side.
        max_side / min_side: full-frame pass input size bounds (longer side); ``None``: no bound.
        max_upscale: the full-frame pass upscales a frame toward ``min_side`` by at most this
            factor (``None``: up to ``min_side`` whatever the frame). Interpolation adds pixels,
            not detail: see ``RedactionConfig.text_max_upscale`` for the value and why.
        tile: tiles of at most this many px a side for the full-frame pass (``None``: never).
        crops: run the vehicle-crop pass in ``detect_given``.
        crop_width / crop_height: the canvas a crop is zoomed to fit (multiples of 32).
            640x352 (768x416 before): with PP-OCRv5 and the vehicle fallback plates_traffic
            leaks 20 vs 21 of 398, plates_eu 0/108 both, for x0.78 of the crop pass's CPU on
            the 720p load source (512x288: 26 leaks, x0.59).
        max_crops: at most this many vehicles per frame, largest first.
        crop_pack: pack the crops of all frames of a call onto as few ``crop_width`` x
            ``crop_height`` canvases as fit, each canvas cut to the extent it uses;
            ``False``: the unpacked pass, one crop per canvas (kept to measure against).
        crop_bonus: added to the score of every box of the vehicle-crop pass (capped at 1):
            text on the lower part of a vehicle is a plate more often than text anywhere.
            Set with PP-OCRv4 at threshold 0.6, where crop plates scored near 0.6 (measured
            then, plates_traffic unpacked: 49 -> 47 leaks of 398, masked area +0.2 points;
            0.1 to 0.25 leaked the same). With PP-OCRv5 at 0.25 it moves few boxes: not
            re-measured.
        crop_reuse: a crop whose window (within 4 px) and pixels (no 8x8 block mean more
            than this many levels apart) match a searched crop of an earlier frame of the
            same call takes that crop's boxes instead of its own pass (one such crop per
            searched crop); 0: never. 6: the median block difference of a parked car between
            detected frames of the 720p load source is 4 (H.264 noise), the 90th percentile 8.
            Measured on static-camera clips of 40 plates_traffic images (8 frames, sensor
            noise, H.264): 60 vs 59 of 392 frame-plates leaked, one plate the net finds in
            some frames only (every crop reusing one searched crop: 64).
        crop_carry: plate carry: a crop whose window (within 4 px: the vehicle barely moved) and
            pixels match (as for ``crop_reuse``) a searched crop of an earlier frame of the
            call that found a plate-shaped box takes that crop's boxes, for up to this many
            later frames per searched crop, instead of its own search: a parked car's plate is
            searched once per call and masked where it was found in every detected frame (fail
            closed: the carried box is masked; a vehicle that moved, is new, or whose picture
            changed is searched). A searched crop that found no plate lends once
            (``crop_reuse``). 0: no carry (the lend-once pass before). Within one call only
            (a chunk, or the chunks the detector actor batches): nothing is kept across calls.
        lit_pass: in the full-frame pass, also search dark frames' bright plate-shaped
            patches at native resolution, and run the pass itself at up to native resolution
            in frames darker than ``litplate.NATIVE_MEDIAN`` (:mod:`operators.detectors.litplate`);
            see ``RedactionConfig.plate_lit_pass``.
        crop_budget: at most this many zoomed crop pixels per frame, as a multiple of the
            frame's pixels: where a frame's crops (each zoomed as alone) would exceed it, every
            crop of the frame is zoomed down by one factor to fit, never below its own size
            (every vehicle is still searched: fail closed). ``None``: no budget. See
            ``RedactionConfig.text_crop_budget``.
        full_min_side: with ``crops``, frames whose longer side is below this get no
            full-frame pass in ``detect_given``, only the vehicle-crop pass (``None``: every
            frame gets both); see ``RedactionConfig.text_full_min_side``.
        crop_gap: black px kept right of and below each packed crop (at most what a canvas
            of its own leaves): 96, measured (32 and 64 leak 3-4 more plates_traffic plates).
        nms_iou: ``None``: DB contours do not overlap, no NMS.
        full_precision: ``bf16``: the full-frame pass at its own scale (not the vehicle-crop or
            lit-plate passes, nor a dark frame's native-resolution pass: ``dark_precision``)
            infers in bfloat16 where the crop pass runs on OpenVINO on a CPU with native bf16 (a
            second session of the same graph); else, or ``None``, as the crop pass
            (``precision``). See ``RedactionConfig.text_full_precision``.
        dark_precision: ``bf16``: with ``full_precision`` bf16 in effect, a dark frame's
            full-frame pass at up to native resolution (``lit_pass``,
            :func:`litplate.full_pass_scale`) infers in bfloat16 too; else, or ``None``, as the
            crop pass (fp32): round 3b's dark plates are read there. See
            ``RedactionConfig.text_dark_precision``.
        full_carry_motion: in ``detect_given`` with ``full_from``, a frame's carried full-pass
            boxes move with the camera motion from their frame to it
            (:func:`operators.motion.pair_transform`, what temporal fill follows), and stay in
            place where it cannot be estimated; ``False``: always in place. On the moving-camera
            video eval at ``text_full_every`` 2, in place masked +1.6 to +3.7 points more on three
            of the four plate-set cells, following the motion -2.9 to +0.7, with the same leaks
            (docs/performance.md "Full-frame text pass cadence").
        native_max_side: frames whose longer side is at most this get the full-frame pass at
            their own size, never upscaled toward ``min_side``: a small camera's detection costs
            what its pixels cost (``RedactionConfig.small_frame_side``). ``None``: never.
        Others as :class:`CenterFaceDetector`.
    """

    name: str = "ppocr_text"

    def __init__(self, model: ModelRef = DEFAULT_MODEL, *, imagenet_norm: bool | None = None, label: Label | int = Label.PLATE,
                 providers: Sequence[str] | str | None = None, threshold: float = DEFAULT_THRESHOLD,
                 bin_threshold: float = 0.3, unclip_ratio: float = 1.6, pad: float = 0.25,
                 max_side: int | None = 960, min_side: int | None = None, max_upscale: float | None = None,
                 tile: int | None = None,
                 crops: bool = False, crop_width: int = 640, crop_height: int = 352, crop_lower: float = 0.7,
                 crop_max_zoom: float = 6.0, max_crops: int = 8, min_vehicle_px: int = 24,
                 crop_pack: bool = True, crop_gap: int = 96, crop_bonus: float = 0.1, crop_reuse: float = 6.0,
                 crop_carry: int = 8, crop_budget: float | None = None, full_min_side: int | None = None,
                 lit_pass: bool = False,
                 nms_iou: float | None = None, native_max_side: int | None = None,
                 full_precision: str | None = None, dark_precision: str | None = None,
                 full_carry_motion: bool = True,
                 model_dir: ModelRef | None = None, threads: int | None = None, batch_size: int | None = None,
                 precision: str = DEFAULT_PRECISION) -> None:
        self.label = Label(int(label))
        self.labels = (self.label,)
        self.threshold = float(threshold)
        self.bin_threshold = float(bin_threshold)
        self.unclip_ratio = float(unclip_ratio)
        self.pad = float(pad)
        self.max_side = max_side
        self.min_side = min_side
        self.max_upscale = None if max_upscale is None else max(1.0, float(max_upscale))
        self.tile = tile
        self.crops = bool(crops)
        self.crop_width, self.crop_height = int(crop_width), int(crop_height)
        if self.crop_width % 32 or self.crop_height % 32:
            raise ValueError(f"crop_width/crop_height must be multiples of 32, got {crop_width}x{crop_height}")
        self.crop_lower = float(crop_lower)
        self.crop_max_zoom = float(crop_max_zoom)
        self.crop_pack = bool(crop_pack)
        self.crop_gap = int(crop_gap)
        self.crop_bonus = float(crop_bonus)
        self.crop_reuse = float(crop_reuse)
        self.crop_carry = int(crop_carry)
        if crop_budget is not None and not float(crop_budget) > 0:
            raise ValueError(f"crop_budget must be a number > 0 (or None), got {crop_budget!r}")
        self.crop_budget = None if crop_budget is None else float(crop_budget)
        self.full_min_side = None if full_min_side is None else int(full_min_side)
        self.native_max_side = None if native_max_side is None else int(native_max_side)
        self.lit_pass = bool(lit_pass)
        self.full_carry_motion = bool(full_carry_motion)
        self.last_crop_stats: dict[str, int] = {}
        """The last ``detect_crops`` call's crops, searched, carried (plate carry) and reused
        (lend-once) crops."""
        self.max_crops = int(max_crops)
        self.min_vehicle_px = int(min_vehicle_px)
        self.nms_iou = nms_iou
        self.batch_size = batch_size  # type: ignore[assignment]  # resolved in _start
        self._gpu_batch = 4
        if imagenet_norm is None:
            imagenet_norm = isinstance(model, str) and model in IMAGENET_NORM_MODELS
        self.imagenet_norm = bool(imagenet_norm)
        if self.imagenet_norm:
            self._mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
            self._scale = np.float32(1.0) / (np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1) * 255.0)
        else:
            self._mean = np.full((1, 3, 1, 1), 0.5 * 255.0, np.float32)
            self._scale = np.full((1, 3, 1, 1), 1.0 / (0.5 * 255.0), np.float32)
        self._full_session: Any = None
        """The full-frame pass's session at the frame's own scale (``None``: ``session``)."""
        self._dark_session: Any = None
        """... and a dark frame's native-resolution pass's (``None``: ``session``)."""
        path = self._open(model, model_dir, precision)
        self._start(path, providers, threads, (360, 640))
        self.full_precision = self.precision
        if full_precision == "bf16" and self.providers == [OPENVINO] and bf16_supported():
            self._full_session = OpenVinoSession(self._graph, threads, "bf16")
            self.full_precision = "bf16"
            self._warm_up()  # its warm-up (see OnnxDetector._start)
        self.dark_precision = self.precision
        if dark_precision == "bf16" and self._full_session is not None:
            self._dark_session = self._full_session
            self.dark_precision = "bf16"
        # On CPU a packed canvas is cut to what it uses (cost grows with pixels); on a GPU
        # every canvas keeps the one full shape (a new input shape costs a kernel search
        # there, or a TensorRT engine build, and pixels are cheap).
        self.crop_trim = on_cpu(self.providers)

    def _scale_for(self, h: int, w: int) -> float:
        side = max(h, w)
        if self.max_side is not None and side > self.max_side:
            return self.max_side / side
        if self.native_max_side is not None and side <= self.native_max_side:
            return 1.0
        if self.min_side is not None and side < self.min_side:
            up = self.min_side / side
            return up if self.max_upscale is None else min(up, self.max_upscale)
        return 1.0

    def _run(self, blob_bgr: np.ndarray, session: Any = None) -> np.ndarray:
        blob = nchw_float32(blob_bgr, self._mean, self._scale)
        prob: np.ndarray = (session or self.session).run(None, {self.input_name: blob})[0][:, 0]
        return prob

    def _detect_batch(self, frames: Frames) -> list[Boxes]:
        n, h, w = frames.shape[:3]
        s = self._scale_for(h, w)
        found: list[list[tuple[list[float], float]]] = [[] for _ in range(n)]
        for i in range(n):
            if not self.lit_pass:
                found[i].extend(self._full_frame(frames[i], s, self._full_session))
                continue
            # A dark frame is read closer to native resolution (litplate.full_pass_scale) and
            # its bright plate-shaped patches get a second look (litplate.search).
            median = litplate.median_grey(frames[i])
            sd = litplate.full_pass_scale(median, (h, w), s)
            found[i].extend(self._full_frame(frames[i], sd, self._full_session if sd == s else self._dark_session))
            # Proposals a box of this pass already covers are not searched again; the
            # covering score is fixed so the eval cache's floor run skips what the
            # default threshold's run skips (exact at thresholds <= COVER_SCORE).
            covered = np.asarray([b for b, sc in found[i] if sc >= litplate.COVER_SCORE], np.float32).reshape(-1, 4)
            found[i].extend(litplate.search(frames[i], covered, self._run, pack_shelves, self._boxes,
                                            budget=litplate.window_budget(median)))
        return [self._finish(f, (h, w)) for f in found]

    def _full_frame(self, frame: np.ndarray, s: float, session: Any) -> list[tuple[list[float], float]]:
        """The full-frame pass on one BGR frame at scale ``s`` (tiled above ``tile`` px), on
        ``session`` (``None``: the crop pass's)."""
        h, w = frame.shape[:2]
        rh, rw = max(1, round(h * s)), max(1, round(w * s))
        tiles = plan_tiles(rh, rw, self.tile, 64) if self.tile else [(0, 0, rh, rw)]
        th = max(y1 - y0 for y0, _, y1, _ in tiles)
        tw = max(x1 - x0 for _, x0, _, x1 in tiles)
        ph, pw = -(-th // 32) * 32, -(-tw // 32) * 32
        sx, sy = w / rw, h / rh
        img = frame if (rh, rw) == (h, w) else cv2.resize(
            frame, (rw, rh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        blob = np.zeros((len(tiles), ph, pw, 3), np.uint8)
        for t, (y0, x0, y1, x1) in enumerate(tiles):
            blob[t, :y1 - y0, :x1 - x0] = img[y0:y1, x0:x1]
        prob = self._run(blob, session)
        out: list[tuple[list[float], float]] = []
        for t, (y0, x0, y1, x1) in enumerate(tiles):
            out.extend(self._boxes(prob[t, :y1 - y0, :x1 - x0], sx, sy, x0 * sx, y0 * sy))
        return out

    full_cadence = True
    """``detect_given`` takes ``full_from`` (``RedactionConfig.text_full_every``)."""

    prior_labels: tuple[Label, ...] = (Label.VEHICLE,)
    """The only boxes of ``priors`` that ``detect_given`` reads: a detector that emits none of
    them (the faces) may run beside this one (``Redactor(parallel=True)``)."""

    def detect_given(self, frames: Frames, priors: Sequence[Boxes],
                     full_from: Sequence[int] | None = None) -> list[Boxes]:
        """Full-frame pass, plus (when ``crops``) the vehicle-crop pass on the
        :attr:`Label.VEHICLE` boxes of ``priors`` (one :class:`Boxes` per frame).

        ``full_from``: per frame, the index of the frame whose full-frame pass it takes; the
        pass runs only on the frames that are their own source, and each other frame gets its
        source's boxes (fail closed: a carried box is masked, never dropped), moved with the
        camera where ``full_carry_motion`` and the motion is estimated, else where they were.
        A source must be itself a source, at or before the frame (``None``: every frame its own).
        The vehicle-crop pass runs on every frame either way.
        """
        n = len(frames)
        src = list(range(n)) if full_from is None else [int(j) for j in full_from]
        if len(src) != n or any(not 0 <= j <= i or src[j] != j for i, j in enumerate(src)):
            raise ValueError(f"full_from: expected per frame an earlier frame that is its own source, got {src}")
        if self.crops and self.full_min_side is not None and max(frames.shape[1:3]) < self.full_min_side:
            full = [Boxes.empty() for _ in range(n)]  # a tiny frame: its vehicles' crops only
        else:
            runs = sorted(set(src))
            ran = dict(zip(runs, self.detect(frames if len(runs) == n else frames[runs])))
            full = [ran[j] if j == i or not self.full_carry_motion else _follow_camera(frames, j, i, ran[j])
                    for i, j in enumerate(src)]
        if not self.crops:
            return full
        return [Boxes.concat([f, c]) for f, c in zip(full, self.detect_crops(frames, priors))]

    def crop_windows(self, vehicles: Boxes, hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
        """``(x0, y0, x1, y1)`` frame windows searched for plates: the lower part of each
        vehicle box (most confident vehicles first, at most ``max_crops``)."""
        h, w = hw
        out: list[tuple[int, int, int, int]] = []
        if not len(vehicles):
            return out
        xyxy = vehicles.xyxy
        for k in np.argsort(-vehicles.score, kind="stable"):
            x1, y1, x2, y2 = (float(v) for v in xyxy[k])
            bw, bh = x2 - x1, y2 - y1
            if min(bw, bh) < self.min_vehicle_px:
                continue
            mx = 0.05 * bw
            box = (int(max(0, x1 - mx)), int(max(0, y2 - self.crop_lower * bh)),
                   int(min(w, x2 + mx)), int(min(h, y2 + 0.08 * bh)))
            if box[2] - box[0] >= 8 and box[3] - box[1] >= 8:
                out.append(box)
            if len(out) >= self.max_crops:
                break
        return out

    def detect_crops(self, frames: Frames, priors: Sequence[Boxes]) -> list[Boxes]:
        """Plates found in upscaled crops of the lower part of vehicles. Every frame's crops
        are zoomed as one crop alone would be, then packed onto as few canvases as fit
        (:func:`pack_shelves`); each crop's boxes come from its own part of the probability
        map only. A crop whose window and pixels match a crop of an earlier frame of the
        call (a parked or queued vehicle, ``crop_reuse``) takes that crop's boxes instead."""
        check_frames(frames)
        n, h, w = frames.shape[:3]
        jobs: list[tuple[int, tuple[int, int, int, int], int, int, float]] = []
        for i in range(n):
            veh = priors[i].select(priors[i].label == Label.VEHICLE) if i < len(priors) else Boxes.empty()
            wins = self.crop_windows(veh, (h, w))
            zooms = [min(self.crop_max_zoom, self.crop_width / (x1 - x0), self.crop_height / (y1 - y0))
                     for x0, y0, x1, y1 in wins]
            if self.crop_budget is not None:
                zooms = budget_zooms(wins, zooms, self.crop_budget * h * w)
            for win, z in zip(wins, zooms):
                cw, ch = win[2] - win[0], win[3] - win[1]
                jobs.append((i, win, max(1, min(self.crop_width, round(cw * z))),
                             max(1, min(self.crop_height, round(ch * z))), z))
        # A crop whose window (the vehicle barely moved) and pixels match a searched crop of an
        # earlier frame of the call (an "anchor") may take its boxes instead of a search of its
        # own: every such crop when the anchor found a plate (``crop_carry``, the found plate is
        # masked again where it still is), else one crop per searched crop (``crop_reuse``), so
        # a plate the net finds in some frames only still gets several looks.
        src: dict[int, int] = {}  # job -> the anchor it matches
        if self.crop_reuse > 0:
            anchors: list[int] = []
            for k, job in enumerate(jobs):
                r = next((r for r in reversed(anchors) if jobs[r][0] != job[0] and self._same_crop(frames, job, jobs[r])),
                         None)
                if r is None:
                    anchors.append(k)
                else:
                    src[k] = r
        first = [k for k in range(len(jobs)) if k not in src]
        per_job = self._search_crops(frames, jobs, first)
        same: dict[int, int] = {}  # job -> the searched job whose boxes it takes
        carried: dict[int, int] = {}
        later: list[int] = []  # jobs left to search
        lent: set[int] = set()
        for k, r in src.items():
            if carried.get(r, 0) < self.crop_carry and self._found_plate(per_job[r]):
                same[k] = r
                carried[r] = carried.get(r, 0) + 1
                continue
            # lend-once among the searched crops (anchors and the crops searched below)
            i = jobs[k][0]
            r2 = next((q for q in [*first, *later] if q not in lent and q not in carried and jobs[q][0] != i
                       and q < k and self._same_crop(frames, jobs[k], jobs[q])), None)
            if r2 is None:
                later.append(k)
            else:
                same[k] = r2
                lent.add(r2)
        per_job.update(self._search_crops(frames, jobs, later))
        self.last_crop_stats = {"crops": len(jobs), "searched": len(first) + len(later),
                                "carried": sum(carried.values()), "reused": len(lent)}
        found: list[list[tuple[list[float], float]]] = [[] for _ in range(n)]
        for k, job in enumerate(jobs):
            found[job[0]].extend(per_job[same.get(k, k)])
        return [self._finish(f, (h, w)) for f in found]

    def _same_crop(self, frames: Frames, a: tuple[int, tuple[int, int, int, int], int, int, float],
                   b: tuple[int, tuple[int, int, int, int], int, int, float]) -> bool:
        """Crop jobs ``a`` and ``b`` (of two frames) show the same picture: windows within 4 px
        (the vehicle barely moved) and ``_unchanged`` pixels over both."""
        return (max(abs(x - y) for x, y in zip(a[1], b[1])) <= 4
                and self._unchanged(frames[a[0]], frames[b[0]], a[1], b[1]))

    @staticmethod
    def _found_plate(found: list[tuple[list[float], float]]) -> bool:
        """Whether a searched crop found a plate-shaped box (not squarer than
        ``CARRY_MAX_HEIGHT_RATIO``: a tail light scores as text too) at least
        ``CARRY_MIN_PLATE_PX`` tall."""
        return any(CARRY_MIN_PLATE_PX <= (b[3] - b[1]) <= CARRY_MAX_HEIGHT_RATIO * (b[2] - b[0]) for b, _ in found)

    def _search_crops(self, frames: Frames, jobs: Sequence[tuple[int, tuple[int, int, int, int], int, int, float]],
                      todo: Sequence[int]) -> dict[int, list[tuple[list[float], float]]]:
        """Search the crop jobs ``todo`` (packed onto shared canvases, or one per canvas):
        job -> its boxes in frame pixels."""
        per_job: dict[int, list[tuple[list[float], float]]] = {}
        if not todo:
            return per_job
        if self.crop_pack:
            # Each crop keeps, up to crop_gap px, the black it had to its right and below on
            # a canvas of its own: the net's scores near a crop's edges depend on what lies
            # within ~100 px (measured), and the plates sit at the lower edge.
            slots = [(min(jobs[k][2] + self.crop_gap, self.crop_width), min(jobs[k][3] + self.crop_gap, self.crop_height))
                     for k in todo]
            placed, shapes = pack_shelves(slots, self.crop_width, self.crop_height, 0)
            if not self.crop_trim:
                shapes = [(self.crop_width, self.crop_height)] * len(shapes)
        else:  # one crop per full canvas, top-left
            placed = [(t, 0, 0) for t in range(len(todo))]
            shapes = [(self.crop_width, self.crop_height)] * len(todo)
        places = dict(zip(todo, placed))
        on: dict[int, list[int]] = {}
        for k, (c, _, _) in places.items():
            on.setdefault(c, []).append(k)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for c, shape in enumerate(shapes):
            by_shape.setdefault(shape, []).append(c)
        step = max(1, int(self.batch_size or 1)) * 4
        for (cw_, ch_), group in by_shape.items():
            for g0 in range(0, len(group), step):
                run = group[g0:g0 + step]
                blob = np.zeros((len(run), ch_, cw_, 3), np.uint8)
                for b, c in enumerate(run):
                    for k in on[c]:
                        i, (x0, y0, x1, y1), zw, zh, z = jobs[k]
                        _, px, py = places[k]
                        blob[b, py:py + zh, px:px + zw] = cv2.resize(
                            frames[i, y0:y1, x0:x1], (zw, zh), interpolation=cv2.INTER_CUBIC if z > 1 else cv2.INTER_AREA)
                prob = self._run(blob)
                for b, c in enumerate(run):
                    for k in on[c]:
                        i, (x0, y0, x1, y1), zw, zh, _ = jobs[k]
                        _, px, py = places[k]
                        inv = (x1 - x0) / zw
                        per_job[k] = self._boxes(prob[b, py:py + zh, px:px + zw], inv, inv, float(x0), float(y0),
                                                 self.crop_bonus)
        return per_job

    def _unchanged(self, a: np.ndarray, b: np.ndarray, wa: tuple[int, int, int, int],
                   wb: tuple[int, int, int, int]) -> bool:
        """Whether frames ``a`` and ``b`` hold the same picture over both windows: no 8x8
        block's mean differs by more than ``crop_reuse`` (in any channel)."""
        x0, y0 = min(wa[0], wb[0]), min(wa[1], wb[1])
        x1, y1 = max(wa[2], wb[2]), max(wa[3], wb[3])
        size = (max(1, (x1 - x0) // 8), max(1, (y1 - y0) // 8))
        ma = cv2.resize(a[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA).astype(np.int16)
        mb = cv2.resize(b[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA).astype(np.int16)
        return bool(np.abs(ma - mb).max() <= self.crop_reuse)

    def _finish(self, found: list[tuple[list[float], float]], hw: tuple[int, int]) -> Boxes:
        boxes = np.asarray([b for b, _ in found], np.float32).reshape(-1, 4)
        scores = np.asarray([s for _, s in found], np.float32)
        return finish(boxes, scores, self.label, hw, self.nms_iou)

    def _boxes(self, pm: np.ndarray, sx: float, sy: float, ox: float, oy: float,
               bonus: float = 0.0) -> list[tuple[list[float], float]]:
        """Boxes of one probability map, mapped to frame pixels by scale ``sx, sy`` and offset;
        ``bonus`` is added to every score (capped at 1) before the threshold."""
        kernel = np.ones((2, 2), np.uint8)
        bitmap = cv2.dilate((pm > self.bin_threshold).astype(np.uint8), kernel)
        contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        out = []
        for c in contours[:1000]:
            (cx, cy), (rw_, rh_), ang = cv2.minAreaRect(c)
            if min(rw_, rh_) < 3:
                continue
            pts = cv2.boxPoints(((cx, cy), (rw_, rh_), ang))
            score = min(1.0, self._box_score(pm, pts) + bonus)
            if score < self.threshold:
                continue
            dist = rw_ * rh_ * self.unclip_ratio / (2.0 * (rw_ + rh_))
            ew, eh = rw_ + 2 * dist, rh_ + 2 * dist
            if min(ew, eh) < 5:
                continue
            pts = cv2.boxPoints(((cx, cy), (ew, eh), ang))
            x1, y1 = pts.min(0)
            x2, y2 = pts.max(0)
            text_h = min(ew, eh) * 0.5 * (sx + sy)  # aspect is kept: sx ~= sy
            p = self.pad * text_h
            out.append(([ox + x1 * sx - p, oy + y1 * sy - p, ox + x2 * sx + p, oy + y2 * sy + p], score))
        return out

    @staticmethod
    def _box_score(pm: np.ndarray, pts: np.ndarray) -> float:
        """Mean probability inside the rotated box (RapidOCR's ``box_score_fast``)."""
        hh, ww = pm.shape
        x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, ww - 1))
        x1 = int(np.clip(np.ceil(pts[:, 0].max()), 0, ww - 1))
        y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, hh - 1))
        y1 = int(np.clip(np.ceil(pts[:, 1].max()), 0, hh - 1))
        mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        cv2.fillPoly(mask, [(pts - np.array([x0, y0], np.float32)).astype(np.int32)], 1)
        return float(cv2.mean(pm[y0:y1 + 1, x0:x1 + 1], mask)[0])
