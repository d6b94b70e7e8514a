"""Irreversible box and region masks: mosaic, blur, solid fill.

Every anonymizer works the same way: for each box it pads the box (a fraction of the
box's own width/height on each side), clips it to the frame, renders a replacement for
that rectangle of interest (ROI) from a *low-resolution summary* of the ROI only, and
writes the replacement under the box's shape (rectangle, or the ellipse inscribed in the
padded box, padded at least :data:`ELLIPSE_MIN_PADDING` so that the ellipse circumscribes
the unpadded box). Overlapping boxes of similar size (one object's detection and the boxes
temporal fill carried to it, neighbours in a crowd) are rendered once, as the ROI of their
hull with cells sized by the largest and written under the union of their shapes
(:func:`_merged`). :meth:`coverage_mask` returns exactly the pixels written.

Why a low-resolution summary: a plain Gaussian blur is a linear filter that can be
largely deconvolved, and a mosaic whose blocks are a pixel or two wide is a resize. Here
the ROI is first averaged down to a grid whose cells are at least 2 px and scale with the
box (``INTER_AREA``); everything written afterwards is a deterministic function of that
grid, so the only information left about the box is a few cells across its shorter side,
whatever is done to the output. Nothing is added that a model could subtract (no noise).

Pixel geometry: box corners are continuous coordinates; a pixel ``(row, col)`` covers
``[col, col + 1) x [row, row + 1)``. A padded box masks every pixel it touches
(``floor`` / ``ceil``: fail closed); a zero-area box on integer coordinates touches none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import cv2
import numpy as np
import numpy.typing as npt

from .types import Boxes, ConfigError, Frames, Label

BoolMask = npt.NDArray[np.bool_]

SHAPES: tuple[str, ...] = ("rect", "ellipse")

DEFAULT_MOSAIC_BLOCKS = 6.0
"""Mosaic blocks across the padded box's shorter side."""
DEFAULT_BLUR_KERNEL = 0.5
"""Blur kernel size as a fraction of the padded box's shorter side."""
DEFAULT_FILL_BGR: tuple[int, int, int] = (0, 0, 0)

MIN_CELL_PX = 2
"""Smallest low-resolution cell (mosaic block / blur decimation cell), in frame pixels.
With 1 px cells a tiny box would be copied unchanged."""

MAX_PADDING = 2.0
"""Padding above this is almost surely a unit mistake (percent instead of fraction)."""

ELLIPSE_MIN_PADDING = (math.sqrt(2.0) - 1.0) / 2.0
"""An ellipse mask is inscribed in its box padded by at least this (0.2071): its semi-axes
are then at least ``1/sqrt(2)`` of the box's width and height, so it passes through (or
outside) the box's corners and covers the whole detection box, whatever the configured
padding. (With padding 0.2, the face default until round 3, the semi-axes were 0.70 of the
box and the corners' last pixels stayed unmasked.) This is the smallest-area ellipse of the
box's aspect that contains it: pi/2 = 1.57x the box's area, against 1.96x for the box padded
by 0.2 as a rectangle."""

# Blur: the Gaussian is applied on an intermediate image with this many pixels per
# low-res cell, then resized to the ROI. Its cost no longer grows with the box (a 720 px
# whole-frame blur with a 360 px kernel costs the same as a face), and the result is
# still a function of the low-res grid only.
_BLUR_MID_PX_PER_CELL = 4
_BLUR_MID_SIGMA = 0.5 * _BLUR_MID_PX_PER_CELL  # sigma = half a cell, cells = 2 * sigma


@dataclass(frozen=True, slots=True)
class MaskSpec:
    """How to mask one kind of box.

    Attributes:
        style: ``mosaic`` | ``blur`` | ``fill``.
        shape: ``rect`` (plates, text, persons) | ``ellipse`` (inscribed in the padded
            box, never smaller than the one circumscribing the unpadded box; faces).
        padding: fraction of the box width (height) added on the left and right (top and
            bottom), >= 0.
        strength: style-specific; ``None`` takes the style's default.
            mosaic: blocks across the padded box's shorter side (default 6; block size
            scales with the box, at least 2 px). blur: kernel size as a fraction of the
            padded box's shorter side, in (0, 1] (default 0.5; the ROI is also decimated
            to cells of ``kernel / 3``, so about 6 cells across at the default). fill: BGR
            colour, three ints in [0, 255] (default black).
    """

    style: str = "mosaic"
    shape: str = "rect"
    padding: float = 0.15
    strength: float | tuple[int, int, int] | None = None

    def problems(self) -> list[str]:
        """Every problem with this spec, as ``field: message`` strings (empty if valid)."""
        out: list[str] = []
        if self.style not in ANONYMIZERS:
            out.append(f"style: expected one of {', '.join(ANONYMIZERS)}, got {self.style!r}")
        if self.shape not in SHAPES:
            out.append(f"shape: expected one of {', '.join(SHAPES)}, got {self.shape!r}")
        if (not _is_number(self.padding) or not math.isfinite(float(self.padding))
                or not 0.0 <= float(self.padding) <= MAX_PADDING):
            out.append(f"padding: expected a number in [0, {MAX_PADDING:g}] (fraction of box size), "
                       f"got {self.padding!r}")
        s = self.strength
        if s is None or self.style not in ANONYMIZERS:
            return out
        if self.style == "mosaic":
            if not _is_number(s) or not math.isfinite(float(s)) or float(s) < 1.0:  # type: ignore[arg-type]
                out.append(f"strength: mosaic expects the number of blocks across the box's "
                           f"shorter side, a number >= 1, got {s!r}")
        elif self.style == "blur":
            if not _is_number(s) or not 0.0 < float(s) <= 1.0:  # type: ignore[arg-type]
                out.append(f"strength: blur expects the kernel size as a fraction of the box's "
                           f"shorter side, a number in (0, 1], got {s!r}")
        elif self.style == "fill":
            ok = (isinstance(s, (tuple, list)) and len(s) == 3
                  and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool)
                          and 0 <= int(c) <= 255 for c in s))
            if not ok:
                out.append(f"strength: fill expects a BGR colour, three integers in [0, 255], got {s!r}")
        return out

    def validate(self) -> MaskSpec:
        """Return ``self``; raise :class:`ConfigError` listing every problem at once."""
        problems = self.problems()
        if problems:
            raise ConfigError("invalid mask spec: " + "; ".join(problems))
        return self


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


@dataclass(frozen=True, slots=True)
class _Region:
    """One area to write: ROI rows ``y0:y1``, cols ``x0:x1``; ``mask`` restricts the write
    inside the ROI (``None`` = the whole ROI); ``short_px`` sizes the low-res grid."""

    y0: int
    y1: int
    x0: int
    x1: int
    mask: BoolMask | None
    short_px: float


I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class _Layout:
    """One frame's regions as arrays, one entry per region (a padded box's window, or a
    region mask's bounding box): rows ``y0:y1``, cols ``x0:x1``, ``short`` sizes the low-res
    grid, ``full``: the whole window is written. The pixels written are row runs: run ``j``
    is frame row ``row[j]``, columns ``lo[j]:hi[j]`` (non-empty), of region ``run_of[j]``;
    a region has at most one run per row unless it is a region mask. A full region's runs
    are its window's rows."""

    y0: I64
    y1: I64
    x0: I64
    x1: I64
    short: npt.NDArray[np.float64]
    full: BoolMask
    run_of: I64
    row: I64
    lo: I64
    hi: I64

    def __len__(self) -> int:
        return len(self.y0)

    @staticmethod
    def empty() -> _Layout:
        z = np.zeros(0, np.int64)
        return _Layout(z, z, z, z, np.zeros(0), np.zeros(0, bool), z, z, z, z)

    @staticmethod
    def concat(parts: Sequence[_Layout]) -> _Layout:
        """The regions of ``parts`` one after the other (run indices shifted)."""
        parts = [q for q in parts if len(q)]
        if len(parts) < 2:
            return parts[0] if parts else _Layout.empty()
        shift = np.cumsum([0] + [len(q) for q in parts[:-1]])
        cat = np.concatenate
        return _Layout(cat([q.y0 for q in parts]), cat([q.y1 for q in parts]), cat([q.x0 for q in parts]),
                       cat([q.x1 for q in parts]), cat([q.short for q in parts]), cat([q.full for q in parts]),
                       cat([q.run_of + int(d) for q, d in zip(parts, shift, strict=True)]),
                       cat([q.row for q in parts]), cat([q.lo for q in parts]), cat([q.hi for q in parts]))


class _RoiAnonymizer:
    """Shared geometry; subclasses only say how to render one ROI."""

    style: ClassVar[str] = ""

    def __init__(self, spec: MaskSpec | None = None) -> None:
        spec = MaskSpec(style=self.style) if spec is None else spec
        spec.validate()
        if spec.style != self.style:
            raise ConfigError(f"style: {type(self).__name__} renders {self.style!r}, got {spec.style!r}")
        self.spec = spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    # -- public API -------------------------------------------------------------------

    def anonymize(self, frames: Frames, boxes: Sequence[Boxes],
                  region_masks: Sequence[BoolMask | None] | None = None, *, into: Frames | None = None) -> Frames:
        """Mask boxes (and optional per-frame regions) on a batch of frames.

        Args:
            frames: ``(N, H, W, 3)`` uint8 BGR; not mutated.
            boxes: one :class:`Boxes` per frame, pixel ``xyxy``. Boxes labelled
                ``Label.FRAME`` mask the whole frame. Boxes with NaN corners are ignored;
                infinite or out-of-frame corners are clipped to the frame.
            region_masks: optional, one ``(H, W)`` bool mask or ``None`` per frame
                (privacy zones, whole-frame fail closed); masked with the same style.
            into: write into this array (same shape and dtype; ``frames`` itself is allowed)
                instead of a new copy: several maskers in a row then copy a chunk once
                (a 2 s 720p chunk is 83 MB; three copies were 60 % of the masking time).

        Returns:
            ``into``, or new ``(N, H, W, 3)`` uint8 frames; pixels outside
            :meth:`coverage_mask` are bit-identical to the input.
        """
        _check_inputs(frames, boxes, region_masks)
        if into is not None and (into.shape != frames.shape or into.dtype != frames.dtype):
            raise ValueError(f"into: expected {frames.shape} {frames.dtype}, got {into.shape} {into.dtype}")
        out = frames.copy() if into is None else into
        h, w = frames.shape[1:3]
        if region_masks is None:
            lays = _layouts((h, w), [[(self, b)] for b in boxes])
        else:
            lays = [self._layout((h, w), b, rm) for b, rm in zip(boxes, region_masks, strict=True)]
        for i, lay in enumerate(lays):
            if len(lay):
                self._write(frames[i], out[i], lay)
        return out

    def _write(self, src: npt.NDArray[np.uint8], dst: npt.NDArray[np.uint8], lay: _Layout) -> None:
        """Render each group of ``lay``'s regions (:func:`_groups`, in their order) from ``src`` (one
        frame) and write it into ``dst`` under the union of its members' pixels."""
        groups = _groups(lay)
        for (y0, y1, x0, x1), short, mask in zip(*_group_masks(lay, groups), strict=True):
            rendered = self._render(src[y0:y1, x0:x1], short)
            d = dst[y0:y1, x0:x1]
            if mask is None:
                d[...] = rendered
            else:
                _copy_where(d, rendered, mask)

    def renders_like(self, other: _RoiAnonymizer) -> bool:
        """Whether ``other`` renders a region exactly as this one does (same style and strength:
        only shape and padding differ), so their regions may share one render."""
        return type(other) is type(self) and other.spec.strength == self.spec.strength

    def coverage_mask(self, frame_hw: tuple[int, int], boxes: Boxes,
                      region_mask: BoolMask | None = None) -> BoolMask:
        """``(H, W)`` bool: exactly the pixels :meth:`anonymize` writes for one frame."""
        h, w = int(frame_hw[0]), int(frame_hw[1])
        lay = self._layout((h, w), boxes, region_mask)
        if not len(lay):
            return np.zeros((h, w), bool)
        return _paint(h * (w + 1), lay.row * (w + 1) + lay.lo, lay.row * (w + 1) + lay.hi).reshape(h, w + 1)[:, :w]

    # -- geometry -----------------------------------------------------------------------

    def _regions(self, hw: tuple[int, int], boxes: Boxes,
                 region_mask: BoolMask | None) -> list[_Region]:
        """:meth:`_layout`'s regions one by one, each with its own mask (``None``: the whole
        window). The write path does not build these; tests and ``load_tests`` tools do."""
        lay = self._layout(hw, boxes, region_mask)
        singles = [np.array([k]) for k in range(len(lay))]
        return [_Region(y0, y1, x0, x1, m, sh) for (y0, y1, x0, x1), sh, m in zip(*_group_masks(lay, singles),
                                                                                  strict=True)]

    def _layout(self, hw: tuple[int, int], boxes: Boxes, region_mask: BoolMask | None) -> _Layout:
        """One frame's regions (:func:`_layouts`), the region mask's last."""
        lay = _layouts(hw, [[(self, boxes)]])[0]
        if region_mask is None or (len(boxes) and bool((boxes.label == _FRAME).any())):
            return lay  # the whole frame is masked
        h, w = hw
        rm = np.asarray(region_mask, bool)
        if rm.shape != (h, w):
            raise ValueError(f"region mask must be ({h}, {w}), got {rm.shape}")
        rows = np.flatnonzero(rm.any(axis=1))
        if not rows.size:
            return lay
        cols = np.flatnonzero(rm.any(axis=0))
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        sub = rm[r0:r1, c0:c1]
        one = np.array([r0]), np.array([r1]), np.array([c0]), np.array([c1]), np.array([float(min(r1 - r0, c1 - c0))])
        if sub.all():
            zone = _Layout(*one, np.ones(1, bool), np.zeros(r1 - r0, np.int64), np.arange(r0, r1),
                           np.full(r1 - r0, c0), np.full(r1 - r0, c1))
        else:
            # each row's runs: where the row switches on and off (row-major, so paired)
            edges = np.diff(sub.view(np.int8), axis=1, prepend=np.int8(0), append=np.int8(0))
            on_r, on_c = np.nonzero(edges == 1)
            _, off_c = np.nonzero(edges == -1)
            zone = _Layout(*one, np.zeros(1, bool), np.zeros(len(on_r), np.int64), on_r + r0, on_c + c0, off_c + c0)
        return _Layout.concat([lay, zone])

    def _render(self, roi: npt.NDArray[np.uint8], short_px: float) -> npt.NDArray[np.uint8]:
        raise NotImplementedError


def anonymize_together(frames: Frames, parts: Sequence[tuple[_RoiAnonymizer, Sequence[Boxes]]], *,
                       into: Frames | None = None) -> Frames:
    """Several anonymizers' boxes on one batch of frames, as :meth:`_RoiAnonymizer.anonymize`
    for each in turn would mask them, but with the regions of anonymizers that render alike
    (:meth:`_RoiAnonymizer.renders_like`: one policy's face, head, plate and text masks differ
    only in shape and padding) merged across them (:func:`_merged`): a face, the head box of
    its person and the boxes carried to both are one render. Each box keeps its own geometry
    (its anonymizer's padding and shape), so the pixels written are exactly the union of each
    anonymizer's :meth:`~_RoiAnonymizer.coverage_mask`; a merged group's cells are sized by
    its largest member, never smaller than any member's own.

    Args:
        frames: ``(N, H, W, 3)`` uint8 BGR; not mutated unless it is ``into``.
        parts: ``(anonymizer, one Boxes per frame)`` pairs.
        into: as in :meth:`_RoiAnonymizer.anonymize`.
    """
    for _, boxes in parts:
        _check_inputs(frames, boxes, None)
    if into is not None and (into.shape != frames.shape or into.dtype != frames.dtype):
        raise ValueError(f"into: expected {frames.shape} {frames.dtype}, got {into.shape} {into.dtype}")
    groups: list[list[tuple[_RoiAnonymizer, Sequence[Boxes]]]] = []
    for anon, boxes in parts:
        for g in groups:
            if g[0][0].renders_like(anon):
                g.append((anon, boxes))
                break
        else:
            groups.append([(anon, boxes)])
    out = frames.copy() if into is None else into
    h, w = frames.shape[1:3]
    for k, g in enumerate(groups):
        lead = g[0][0]
        src = frames if k == 0 else out  # later styles mask the earlier ones' output, as in turn
        lays = _layouts((h, w), [[(anon, boxes[i]) for anon, boxes in g] for i in range(frames.shape[0])])
        for i, lay in enumerate(lays):
            if len(lay):
                lead._write(src[i], out[i], lay)
    return out


def _copy_where(dst: npt.NDArray[np.uint8], src: npt.NDArray[np.uint8], mask: BoolMask) -> None:
    """``dst[mask] = src[mask]`` in place. ``cv2.copyTo`` is ~25x faster than ``np.copyto`` with a
    broadcast ``where``. OpenCV takes ``dst`` as its output only when its pixels are packed
    (rows may be strided: a view of a frame is); other layouts take numpy's path, and so does
    any case where OpenCV hands back a new array instead: the write never goes astray."""
    if dst.strides[1:] == (3, 1) and dst.flags.writeable:  # read-only: numpy's ValueError
        done = cv2.copyTo(src, mask.view(np.uint8), dst)
        if done is dst:
            return
    np.copyto(dst, src, where=mask[:, :, None])


def _ellipse_mask(r0: int, r1: int, c0: int, c1: int,
                  box: tuple[float, float, float, float]) -> BoolMask:
    """Pixels of rows ``r0:r1``, cols ``c0:c1`` that touch the ellipse inscribed in ``box``.

    Scaling x by ``1/a`` and y by ``1/b`` maps the ellipse to the unit disc and each pixel
    square to an axis-aligned rectangle, so "touches" is exact: the rectangle's point
    nearest the origin lies within radius 1. Tiny ellipses thus never vanish.
    """
    x1, y1, x2, y2 = box
    cx, cy, a, b = (x1 + x2) / 2.0, (y1 + y2) / 2.0, (x2 - x1) / 2.0, (y2 - y1) / 2.0
    cols = np.arange(c0, c1, dtype=np.float64)
    rows = np.arange(r0, r1, dtype=np.float64)
    # the nearest point of each pixel's interval to 0: clip(0, lo, hi), spelt out (faster)
    nx = np.minimum(np.maximum((cols - cx) / a, 0.0), (cols + 1.0 - cx) / a)
    ny = np.minimum(np.maximum((rows - cy) / b, 0.0), (rows + 1.0 - cy) / b)
    return np.asarray((ny[:, None] ** 2 + nx[None, :] ** 2) <= 1.0)


_BATCH_BOXES = 2048
"""Boxes whose regions :func:`_layouts` draws in one pass (several frames of a chunk at once: the
numpy calls' fixed cost is paid per batch, not per frame and label, and the per-row arrays stay
around a megabyte)."""

_FRAME = int(Label.FRAME)


def _layouts(hw: tuple[int, int],
             frames: Sequence[Sequence[tuple[_RoiAnonymizer, Boxes]]]) -> list[_Layout]:
    """Per frame, the regions of each ``(anonymizer, boxes)`` pair in turn, in the boxes' order:
    a padded box's window clipped to the frame, and its pixels (the whole window, or those
    touching the ellipse inscribed in the padded box: :func:`_ellipse_mask`). Boxes with NaN
    corners, windows outside the frame and ellipses that touch no pixel give none; a pair with a
    ``Label.FRAME`` box gives one region, the whole frame."""
    out: list[_Layout] = []
    start = n = 0
    for i, parts in enumerate(frames):
        n += sum(len(b) for _, b in parts)
        if n >= _BATCH_BOXES or i == len(frames) - 1:
            out += _layout_batch(hw, frames[start:i + 1])
            start, n = i + 1, 0
    return out


def _layout_batch(hw: tuple[int, int], frames: Sequence[Sequence[tuple[_RoiAnonymizer, Boxes]]]) -> list[_Layout]:
    h, w = hw
    if h == 0 or w == 0:
        return [_Layout.empty() for _ in frames]
    whole = np.array([[0.0, 0.0, float(w), float(h)]])  # Label.FRAME: unpadded, it is the frame
    coords: list[npt.NDArray[np.float64]] = []
    pads: list[float] = []
    shapes: list[bool] = []
    of_frame: list[int] = []
    for i, parts in enumerate(frames):
        for anon, boxes in parts:
            if not len(boxes):
                continue
            if bool((boxes.label == _FRAME).any()):
                xyxy, p, ellipse = whole, 0.0, False
            else:
                ellipse = anon.spec.shape == "ellipse"
                pad = float(anon.spec.padding)
                p = max(pad, ELLIPSE_MIN_PADDING) if ellipse else pad
                xyxy = np.asarray(boxes.xyxy, np.float64).reshape(-1, 4)
                xyxy = xyxy[~np.isnan(xyxy).any(axis=1)]
            coords.append(xyxy)
            pads.append(p)
            shapes.append(ellipse)
            of_frame.append(i)
    if not coords:
        return [_Layout.empty() for _ in frames]
    counts = [len(c) for c in coords]
    xyxy = np.concatenate(coords)
    p_all = np.repeat(np.array(pads), counts)
    # All boxes at once (the same float64 operations, in the same order, as one box at a time:
    # the same pixels). Clamp far-away corners first so sizes stay finite; an inverted box still
    # names a region (fail closed), so order the corners instead of dropping it.
    xs = np.sort(np.clip(xyxy[:, 0::2], -2.0 * w, 3.0 * w), axis=1)
    ys = np.sort(np.clip(xyxy[:, 1::2], -2.0 * h, 3.0 * h), axis=1)
    bw, bh = xs[:, 1] - xs[:, 0], ys[:, 1] - ys[:, 0]
    px1, px2 = xs[:, 0] - p_all * bw, xs[:, 1] + p_all * bw
    py1, py2 = ys[:, 0] - p_all * bh, ys[:, 1] + p_all * bh
    c0 = np.maximum(0, np.floor(px1)).astype(np.int64)
    c1 = np.minimum(w, np.ceil(px2)).astype(np.int64)
    r0 = np.maximum(0, np.floor(py1)).astype(np.int64)
    r1 = np.minimum(h, np.ceil(py2)).astype(np.int64)
    short = np.minimum(px2 - px1, py2 - py1)
    keep = np.flatnonzero((c1 > c0) & (r1 > r0))
    # a zero-width or zero-height padded ellipse writes its whole (one pixel wide) window
    ell = np.repeat(np.array(shapes), counts)[keep] & (px2[keep] > px1[keep]) & (py2[keep] > py1[keep])
    fr = np.repeat(np.array(of_frame, np.int64), counts)[keep]
    y0, y1, x0, x1, short = r0[keep], r1[keep], c0[keep], c1[keep], short[keep]
    run_of, row, _ = _axis_pixels(y0, y1)
    lo, hi = x0[run_of], x1[run_of]
    if ell.any():
        kx1, kx2, ky1, ky2 = px1[keep], px2[keep], py1[keep], py2[keep]
        centre_semi = ((kx1 + kx2) / 2.0, (ky1 + ky2) / 2.0, (kx2 - kx1) / 2.0, (ky2 - ky1) / 2.0)
        if ell.all():  # (a crowd's faces) no rows to pick
            first, last = _ellipse_row_runs(row.astype(np.float64), *(v[run_of] for v in centre_semi))
            np.maximum(lo, first, out=lo)
            np.minimum(hi, last + 1, out=hi)
        else:
            on = np.flatnonzero(ell[run_of])  # the ellipses' rows
            first, last = _ellipse_row_runs(row[on].astype(np.float64), *(v[run_of[on]] for v in centre_semi))
            lo[on] = np.maximum(lo[on], first)
            hi[on] = np.minimum(hi[on], last + 1)
        ok = np.flatnonzero(hi > lo)
        if len(ok) < len(row):
            run_of, row, lo, hi = run_of[ok], row[ok], lo[ok], hi[ok]
        alive = np.zeros(len(y0), bool)
        alive[run_of] = True  # an ellipse that touches no pixel of the frame is dropped
        if not alive.all():
            run_of = (np.cumsum(alive) - 1)[run_of]
            y0, y1, x0, x1, short, ell, fr = (v[alive] for v in (y0, y1, x0, x1, short, ell, fr))
    # per frame: its regions and their runs are slices (both are in frame order)
    at = np.searchsorted(fr, np.arange(len(frames) + 1))
    run_at = np.searchsorted(run_of, at)
    out: list[_Layout] = []
    for a, b, ra, rb in zip(at[:-1].tolist(), at[1:].tolist(), run_at[:-1].tolist(), run_at[1:].tolist(),
                            strict=True):
        out.append(_Layout(y0[a:b], y1[a:b], x0[a:b], x1[a:b], short[a:b], ~ell[a:b], run_of[ra:rb] - a,
                           row[ra:rb], lo[ra:rb], hi[ra:rb]) if b > a else _Layout.empty())
    return out


MERGE_SCALE = 1.5
"""Overlapping regions are rendered as one when the largest's shorter side is at most this
many times each other's (see :func:`_merged`): every box then gets cells at least as large as
its own and at most this much larger."""


def _merged(regions: list[_Region]) -> list[_Region]:
    """Overlapping regions merged, so that each area is rendered once.

    After temporal fill one object is often four or five boxes on a frame (its own detection,
    boxes carried from both neighbouring detections, an interpolated one, a coasted one), and
    in a crowd neighbours overlap too: rendering each alone cost two resizes per box, ~345 per
    crowded 720p frame. The groups are :func:`_groups`'. A group is rendered once: its rectangle
    is the hull of its members, its write mask their union (so the pixels written are exactly
    the members' pixels, :meth:`_RoiAnonymizer.coverage_mask`), and its cells are sized by its
    leader (never smaller than any member's own, at most ``MERGE_SCALE`` times larger). The
    output stays a function of that one coarse grid of the hull. :meth:`_RoiAnonymizer._write`
    draws the same groups from a :class:`_Layout`'s row runs; this one (for tests and tools)
    from the regions' own masks.
    """
    n = len(regions)
    if n < 2:
        return regions
    y0 = np.fromiter((r.y0 for r in regions), np.int64, n)
    y1 = np.fromiter((r.y1 for r in regions), np.int64, n)
    x0 = np.fromiter((r.x0 for r in regions), np.int64, n)
    x1 = np.fromiter((r.x1 for r in regions), np.int64, n)
    short = np.fromiter((r.short_px for r in regions), np.float64, n)
    out: list[_Region] = []
    for members in _group_members(y0, y1, x0, x1, short):
        if members.size == 1:
            out.append(regions[int(members[0])])
            continue
        gy0, gy1 = int(y0[members].min()), int(y1[members].max())
        gx0, gx1 = int(x0[members].min()), int(x1[members].max())
        mask = np.zeros((gy1 - gy0, gx1 - gx0), bool)
        for k in members.tolist():
            r = regions[k]
            sub = mask[r.y0 - gy0:r.y1 - gy0, r.x0 - gx0:r.x1 - gx0]
            if r.mask is None:
                sub[...] = True
            else:
                sub |= r.mask
        out.append(_Region(gy0, gy1, gx0, gx1, None if mask.all() else mask, float(short[members].max())))
    return out


def _groups(lay: _Layout) -> list[I64]:
    """:func:`_group_members` of a layout's regions."""
    return _group_members(lay.y0, lay.y1, lay.x0, lay.x1, lay.short)


def _group_members(y0: I64, y1: I64, x0: I64, x1: I64, short: npt.NDArray[np.float64]) -> list[I64]:
    """Regions (windows ``y0:y1, x0:x1``, cells sized by ``short``) grouped to be rendered
    once each: the largest region not yet taken (by ``short``) leads a group of every region
    not yet taken whose window overlaps its own and whose ``short`` is at least
    ``1 / MERGE_SCALE`` of its; repeat. Groups are returned smallest first (write order), so
    where groups overlap the coarser one is written last. The leader's ``short`` is its
    group's largest."""
    n = len(short)
    if n < 2:
        return [np.arange(n, dtype=np.int64)] if n else []
    free = np.ones(n, bool)
    big = short * MERGE_SCALE
    out: list[I64] = []
    for lead in np.argsort(-short, kind="stable").tolist():
        if not free[lead]:
            continue
        members = np.flatnonzero(free & (y0 < y1[lead]) & (y1 > y0[lead]) & (x0 < x1[lead]) & (x1 > x0[lead])
                                 & (big >= short[lead]))
        members = members if members.size else np.array([lead])
        free[members] = False
        out.append(members)
    out.reverse()
    return out


def _group_masks(lay: _Layout, groups: Sequence[I64]) -> tuple[list[tuple[int, int, int, int]], list[float],
                                                               list[BoolMask | None]]:
    """Per group of ``lay``'s regions: its hull ``(y0, y1, x0, x1)``, its largest ``short`` and
    the union of its members' pixels inside the hull (``None`` for one full region: the whole
    window). All masks are drawn at once from the runs (:func:`_paint`): a group costs no
    per-member array, however many boxes were carried onto one face."""
    if not groups:
        return [], [], []
    sizes = np.array([len(g) for g in groups], np.int64)
    order = np.concatenate(groups)
    first = np.zeros(len(groups), np.int64)
    np.cumsum(sizes[:-1], out=first[1:])
    gy0 = np.minimum.reduceat(lay.y0[order], first)
    gy1 = np.maximum.reduceat(lay.y1[order], first)
    gx0 = np.minimum.reduceat(lay.x0[order], first)
    gx1 = np.maximum.reduceat(lay.x1[order], first)
    short = np.maximum.reduceat(lay.short[order], first)
    drawn = ~((sizes == 1) & lay.full[order[first]])
    stride = gx1 - gx0 + 1  # one spare column: each row's runs end inside the row
    size = np.where(drawn, (gy1 - gy0) * stride, 0)
    base = np.zeros(len(groups), np.int64)
    np.cumsum(size[:-1], out=base[1:])
    group_of = np.empty(len(lay), np.int64)
    group_of[order] = np.repeat(np.arange(len(groups)), sizes)
    g = group_of[lay.run_of]
    row, lo, hi = lay.row, lay.lo, lay.hi
    if not drawn.all():  # (one full region alone is written without a mask)
        sel = np.flatnonzero(drawn[g])
        g, row, lo, hi = g[sel], row[sel], lo[sel], hi[sel]
    at = base[g] + (row - gy0[g]) * stride[g] - gx0[g]
    flat = _paint(int(base[-1] + size[-1]), at + lo, at + hi)
    hulls = list(zip(gy0.tolist(), gy1.tolist(), gx0.tolist(), gx1.tolist(), strict=True))
    masks: list[BoolMask | None] = [
        flat[b:b + (y1 - y0) * (x1 - x0 + 1)].reshape(y1 - y0, x1 - x0 + 1)[:, :x1 - x0] if d else None
        for (y0, y1, x0, x1), b, d in zip(hulls, base.tolist(), drawn.tolist(), strict=True)]
    return hulls, short.tolist(), masks


def _paint(size: int, start: I64, end: I64) -> BoolMask:
    """A flat ``(size,)`` bool array, True on every ``[start[j], end[j])`` (non-empty, within
    ``size``; they may overlap). The runs are sorted by start (a stable sort: they come in
    ascending stretches, a region's rows, which it merges rather than sorts), overlapping and
    touching ones merged into disjoint intervals, and the array written in one pass as
    alternating False / True stretches (``np.repeat``): no per-pixel counts."""
    if not len(start):
        return np.zeros(size, bool)
    shift = max(1, int((end - start).max()).bit_length())
    key = np.sort((start << shift) | (end - start), kind="stable")
    lo = key >> shift
    hi = lo + (key & ((1 << shift) - 1))
    reach = np.maximum.accumulate(hi)
    first = np.flatnonzero(np.concatenate([[True], lo[1:] > reach[:-1]]))  # each interval's first run
    s0 = lo[first]
    s1 = reach[np.append(first[1:] - 1, len(lo) - 1)]
    lens = np.empty(2 * len(s0) + 1, np.int64)
    lens[0] = s0[0]
    lens[1:-1:2] = s1 - s0
    lens[2:-1:2] = s0[1:] - s1[:-1]
    lens[-1] = size - s1[-1]
    on = np.zeros(len(lens), bool)
    on[1::2] = True
    return np.repeat(on, lens)


def _ellipse_row_runs(row: npt.NDArray[np.float64], cx: npt.NDArray[np.float64], cy: npt.NDArray[np.float64],
                      a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> tuple[I64, I64]:
    """:func:`_ellipse_mask` as row runs, for many rows at once (row ``row[j]`` of the ellipse
    centred ``cx[j], cy[j]`` with semi-axes ``a[j], b[j]``): the first and last column whose
    pixel touches it (the same float64 tests, so the same pixels); ``first > last`` for a row
    it does not reach. Not clipped to any window.

    A pixel touches when ``ny2 + nx2 <= 1`` (:func:`_near2`'s squared distances, summed and
    compared in float64). Along a row ``nx2`` falls to 0 (the column holding the centre) and
    rises again, never otherwise, even rounded: the column ``c``'s interval ends where
    ``c + 1``'s starts, by the same float operations, and rounding is monotonic. So the pixels
    are one run around the centre column: each end is estimated with a square root and
    corrected column by column with the exact per-pixel test (a step or none). Rows with
    ``ny2 > 1`` have none (not even the centre column).
    """
    ny2 = _near2(row, cy, b)
    first = np.ones(len(row), np.int64)
    last = np.zeros(len(row), np.int64)
    sel = np.flatnonzero(ny2 <= 1.0)
    if len(sel) < len(row):
        row, cx, a, ny2 = row[sel], cx[sel], a[sel], ny2[sel]
    centre = np.floor(cx)  # its nx2 is 0: (c - cx) <= 0 <= (c + 1 - cx) for c = floor(cx)
    reach = a * np.sqrt(1.0 - ny2)
    right = _run_end(np.maximum(np.floor(cx + reach), centre), cx, a, ny2, 1.0)
    left = _run_end(np.minimum(np.ceil(cx - reach) - 1.0, centre), cx, a, ny2, -1.0)
    if len(sel) < len(first):
        first[sel], last[sel] = left.astype(np.int64), right.astype(np.int64)
        return first, last
    return left.astype(np.int64), right.astype(np.int64)


def _run_end(p: npt.NDArray[np.float64], c: npt.NDArray[np.float64], s: npt.NDArray[np.float64],
             ny2: npt.NDArray[np.float64], out: float) -> npt.NDArray[np.float64]:
    """The outermost column (``out`` = +1: right, -1: left) of each row's run, from an estimate
    ``p`` on its side of the centre column ``floor(c)`` (or that column): step in while ``p``
    fails the per-pixel test ``ny2 + nx2 <= 1`` (the centre column passes), then out while the
    next column passes. On the right of the centre column :func:`_near2` is
    ``max((p - c) / s, 0) ** 2`` and on the left ``min((p + 1 - c) / s, 0) ** 2``, bit for bit
    (the other bound of the clip is then on the far side of 0), so only that half is computed."""

    def nx2(q: npt.NDArray[np.float64], c: npt.NDArray[np.float64],
            s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if out > 0:
            return np.asarray(np.maximum((q - c) / s, 0.0) ** 2)
        return np.asarray(np.minimum((q + 1.0 - c) / s, 0.0) ** 2)

    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        sel = np.flatnonzero(ny2 + nx2(p, c, s) > 1.0)
        while len(sel):
            p[sel] -= out
            sel = sel[ny2[sel] + nx2(p[sel], c[sel], s[sel]) > 1.0]
        sel = np.flatnonzero(ny2 + nx2(p + out, c, s) <= 1.0)
        while len(sel):
            p[sel] += out
            sel = sel[ny2[sel] + nx2(p[sel] + out, c[sel], s[sel]) <= 1.0]
    return p


def _near2(pos: npt.NDArray[np.float64], centre: npt.NDArray[np.float64],
           semi: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Squared distance to 0 of each pixel interval ``[pos, pos + 1)`` in ellipse units (its
    point nearest the centre: ``clip(0, lo, hi)``, spelt out, which is faster)."""
    return np.asarray(np.minimum(np.maximum((pos - centre) / semi, 0.0), (pos + 1.0 - centre) / semi) ** 2)


def _axis_pixels(lo: I64, hi: I64) -> tuple[I64, I64, I64]:
    """The pixels ``lo[k]:hi[k]`` (all non-empty) of every window ``k``, concatenated: each one's
    window and position, and the windows' offsets."""
    lens = hi - lo
    off = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    seg = np.repeat(np.arange(len(lens)), lens)
    return seg, np.arange(int(off[-1]), dtype=np.int64) - np.repeat(off[:-1] - lo, lens), off


def _grid(roi_h: int, roi_w: int, cell_px: float) -> tuple[int, int]:
    """Low-res grid ``(rows, cols)``: cells at least ``cell_px`` wide (floor), >= 1."""
    cell = max(float(MIN_CELL_PX), cell_px)
    return max(1, int(roi_h // cell)), max(1, int(roi_w // cell))


def mosaic_block_px(short_px: float, blocks: float = DEFAULT_MOSAIC_BLOCKS) -> int:
    """Mosaic block size in pixels for a padded box whose shorter side is ``short_px``.

    Every block of the output is at least this wide and tall (or the whole ROI side when
    the ROI is smaller), and at most twice it.
    """
    return max(MIN_CELL_PX, math.ceil(short_px / blocks))


class MosaicAnonymizer(_RoiAnonymizer):
    """Block-average the ROI (``INTER_AREA``) and upsample with ``INTER_NEAREST``.

    Blocks scale with the box: ``spec.strength`` blocks across the padded box's shorter
    side (measured before clipping to the frame), and never smaller than 2 px.
    """

    style: ClassVar[str] = "mosaic"

    def _render(self, roi: npt.NDArray[np.uint8], short_px: float) -> npt.NDArray[np.uint8]:
        blocks = float(self.spec.strength) if self.spec.strength is not None else DEFAULT_MOSAIC_BLOCKS  # type: ignore[arg-type]
        h, w = roi.shape[:2]
        gh, gw = _grid(h, w, mosaic_block_px(short_px, blocks))
        small = cv2.resize(roi, (gw, gh), interpolation=cv2.INTER_AREA)
        return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), np.uint8)


class BlurAnonymizer(_RoiAnonymizer):
    """Decimate the ROI to cells of a third of the kernel, blur, and resize back.

    A Gaussian alone can be largely deconvolved; here the ROI is first averaged down to
    cells of ``kernel / 3`` (``kernel = strength * shorter side``, about 6 cells across at
    the default), so the output is a smooth function of that grid and nothing finer.
    """

    style: ClassVar[str] = "blur"

    def _render(self, roi: npt.NDArray[np.uint8], short_px: float) -> npt.NDArray[np.uint8]:
        frac = float(self.spec.strength) if self.spec.strength is not None else DEFAULT_BLUR_KERNEL  # type: ignore[arg-type]
        h, w = roi.shape[:2]
        gh, gw = _grid(h, w, math.ceil(frac * short_px / 3.0))
        small = cv2.resize(roi, (gw, gh), interpolation=cv2.INTER_AREA)
        k = _BLUR_MID_PX_PER_CELL
        mid = cv2.resize(small, (gw * k, gh * k), interpolation=cv2.INTER_LINEAR)
        ksize = 2 * math.ceil(3.0 * _BLUR_MID_SIGMA) + 1
        mid = cv2.GaussianBlur(mid, (ksize, ksize), _BLUR_MID_SIGMA, borderType=cv2.BORDER_REPLICATE)
        return np.asarray(cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)


class FillAnonymizer(_RoiAnonymizer):
    """Solid colour (``spec.strength`` BGR, default black): nothing of the ROI survives."""

    style: ClassVar[str] = "fill"

    def _render(self, roi: npt.NDArray[np.uint8], short_px: float) -> npt.NDArray[np.uint8]:
        colour = self.spec.strength if self.spec.strength is not None else DEFAULT_FILL_BGR
        out = np.empty_like(roi)
        out[...] = np.asarray(colour, np.uint8)
        return out


ANONYMIZERS: dict[str, type[_RoiAnonymizer]] = {
    "mosaic": MosaicAnonymizer,
    "blur": BlurAnonymizer,
    "fill": FillAnonymizer,
}
"""Style name (the config's ``style``) -> anonymizer class."""


def make_anonymizer(spec: MaskSpec) -> _RoiAnonymizer:
    """Build the anonymizer for ``spec``; :class:`ConfigError` lists every bad field."""
    spec.validate()
    return ANONYMIZERS[spec.style](spec)


def _check_inputs(frames: Frames, boxes: Sequence[Boxes],
                  region_masks: Sequence[BoolMask | None] | None) -> None:
    if (not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3
            or frames.dtype != np.uint8):
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {getattr(frames, 'shape', None)} "
                         f"{getattr(frames, 'dtype', None)}")
    n = frames.shape[0]
    if len(boxes) != n:
        raise ValueError(f"{len(boxes)} Boxes for {n} frames")
    if region_masks is not None and len(region_masks) != n:
        raise ValueError(f"{len(region_masks)} region masks for {n} frames")
