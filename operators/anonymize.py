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
        for i in range(frames.shape[0]):
            rm = region_masks[i] if region_masks is not None else None
            self._write(frames[i], out[i], _merged(self._regions((h, w), boxes[i], rm)))
        return out

    def _write(self, src: npt.NDArray[np.uint8], dst: npt.NDArray[np.uint8], regions: list[_Region]) -> None:
        """Render each region from ``src`` (one frame) and write it into ``dst`` under its mask."""
        for r in regions:
            rendered = self._render(src[r.y0:r.y1, r.x0:r.x1], r.short_px)
            d = dst[r.y0:r.y1, r.x0:r.x1]
            if r.mask is None:
                d[...] = rendered
            else:
                _copy_where(d, rendered, r.mask)

    def renders_like(self, other: _RoiAnonymizer) -> bool:
        """Whether ``other`` renders a region exactly as this one does (same style and strength:
        only shape and padding differ), so their regions may share one render."""
        return type(other) is type(self) and other.spec.strength == self.spec.strength

    def coverage_mask(self, frame_hw: tuple[int, int], boxes: Boxes,
                      region_mask: BoolMask | None = None) -> BoolMask:
        """``(H, W)`` bool: exactly the pixels :meth:`anonymize` writes for one frame."""
        h, w = int(frame_hw[0]), int(frame_hw[1])
        cov = np.zeros((h, w), bool)
        for r in self._regions((h, w), boxes, region_mask):
            if r.mask is None:
                cov[r.y0:r.y1, r.x0:r.x1] = True
            else:
                cov[r.y0:r.y1, r.x0:r.x1] |= r.mask
        return cov

    # -- geometry -----------------------------------------------------------------------

    def _regions(self, hw: tuple[int, int], boxes: Boxes,
                 region_mask: BoolMask | None) -> list[_Region]:
        h, w = hw
        out: list[_Region] = []
        if h == 0 or w == 0:
            return out
        if len(boxes) and bool((boxes.label == Label.FRAME).any()):
            return [_Region(0, h, 0, w, None, float(min(h, w)))]
        pad = float(self.spec.padding)
        ellipse = self.spec.shape == "ellipse"
        p = max(pad, ELLIPSE_MIN_PADDING) if ellipse else pad
        # All boxes at once (the same float64 operations, in the same order, as one box at
        # a time: the same pixels). Clamp far-away corners first so sizes stay finite; an
        # inverted box still names a region (fail closed), so order the corners instead of
        # dropping it.
        xyxy = np.asarray(boxes.xyxy, np.float64).reshape(-1, 4)
        xyxy = xyxy[~np.isnan(xyxy).any(axis=1)]
        xs = np.sort(np.clip(xyxy[:, 0::2], -2.0 * w, 3.0 * w), axis=1)
        ys = np.sort(np.clip(xyxy[:, 1::2], -2.0 * h, 3.0 * h), axis=1)
        bw, bh = xs[:, 1] - xs[:, 0], ys[:, 1] - ys[:, 0]
        px1, px2 = xs[:, 0] - p * bw, xs[:, 1] + p * bw
        py1, py2 = ys[:, 0] - p * bh, ys[:, 1] + p * bh
        c0s = np.maximum(0, np.floor(px1)).astype(np.int64)
        c1s = np.minimum(w, np.ceil(px2)).astype(np.int64)
        r0s = np.maximum(0, np.floor(py1)).astype(np.int64)
        r1s = np.minimum(h, np.ceil(py2)).astype(np.int64)
        shorts = np.minimum(px2 - px1, py2 - py1)
        keep = np.flatnonzero((c1s > c0s) & (r1s > r0s))
        masks: list[BoolMask | None] = [None] * len(keep)
        if ellipse and len(keep):
            el = np.flatnonzero((px2[keep] > px1[keep]) & (py2[keep] > py1[keep]))
            ks = keep[el]
            found = _ellipse_masks(r0s[ks], r1s[ks], c0s[ks], c1s[ks], px1[ks], py1[ks], px2[ks], py2[ks])
            for e, m in zip(el.tolist(), found, strict=True):
                masks[e] = m if m is not None else _EMPTY
        for e, k in enumerate(keep.tolist()):
            if masks[e] is _EMPTY:
                continue  # an ellipse that touches no pixel of the frame
            out.append(_Region(int(r0s[k]), int(r1s[k]), int(c0s[k]), int(c1s[k]), masks[e], float(shorts[k])))
        if region_mask is not None:
            rm = np.asarray(region_mask, bool)
            if rm.shape != (h, w):
                raise ValueError(f"region mask must be ({h}, {w}), got {rm.shape}")
            rows = np.flatnonzero(rm.any(axis=1))
            if rows.size:
                cols = np.flatnonzero(rm.any(axis=0))
                r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
                sub = rm[r0:r1, c0:c1]
                out.append(_Region(r0, r1, c0, c1, None if sub.all() else sub,
                                   float(min(r1 - r0, c1 - c0))))
        return out

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
        for i in range(frames.shape[0]):
            regions = [r for anon, boxes in g if len(boxes[i]) for r in anon._regions((h, w), boxes[i], None)]
            if regions:
                lead._write(src[i], out[i], _merged(regions))
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


MERGE_SCALE = 1.5
"""Overlapping regions are rendered as one when the largest's shorter side is at most this
many times each other's (see :func:`_merged`): every box then gets cells at least as large as
its own and at most this much larger."""


def _merged(regions: list[_Region]) -> list[_Region]:
    """Overlapping regions merged, so that each area is rendered once.

    After temporal fill one object is often four or five boxes on a frame (its own detection,
    boxes carried from both neighbouring detections, an interpolated one, a coasted one), and
    in a crowd neighbours overlap too: rendering each alone cost two resizes per box, ~345 per
    crowded 720p frame. Here the largest region not yet taken (by the shorter side that sizes
    its cells) leads a group of every region not yet taken that overlaps it and is at least
    ``1 / MERGE_SCALE`` its size; repeat. A group is rendered once: its rectangle is the hull
    of its members, its write mask their union (so the pixels written are exactly the
    members' pixels, :meth:`_RoiAnonymizer.coverage_mask`), and its cells are sized by its
    leader (never smaller than any member's own, at most ``MERGE_SCALE`` times larger). The
    output stays a function of that one coarse grid of the hull. Groups are returned smallest
    first, so where groups overlap the coarser one is written last.
    """
    n = len(regions)
    if n < 2:
        return regions
    y0 = np.fromiter((r.y0 for r in regions), np.int64, n)
    y1 = np.fromiter((r.y1 for r in regions), np.int64, n)
    x0 = np.fromiter((r.x0 for r in regions), np.int64, n)
    x1 = np.fromiter((r.x1 for r in regions), np.int64, n)
    short = np.fromiter((r.short_px for r in regions), np.float64, n)
    free = np.ones(n, bool)
    out: list[_Region] = []
    for lead in np.argsort(-short, kind="stable").tolist():
        if not free[lead]:
            continue
        members = np.flatnonzero(free & (y0 < y1[lead]) & (y1 > y0[lead]) & (x0 < x1[lead]) & (x1 > x0[lead])
                                 & (short * MERGE_SCALE >= short[lead]))
        members = members if members.size else np.array([lead])
        free[members] = False
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
        out.append(_Region(gy0, gy1, gx0, gx1, None if mask.all() else mask, float(short[lead])))
    out.reverse()
    return out


def _ellipse_masks(r0: npt.NDArray[np.int64], r1: npt.NDArray[np.int64], c0: npt.NDArray[np.int64],
                   c1: npt.NDArray[np.int64], x1: npt.NDArray[np.float64], y1: npt.NDArray[np.float64],
                   x2: npt.NDArray[np.float64], y2: npt.NDArray[np.float64]) -> list[BoolMask | None]:
    """:func:`_ellipse_mask` for many windows at once (the same float64 operations, so the
    same pixels), ``None`` where a mask would be empty. The per-axis terms of every window are
    computed in one pass over all their rows and columns; only the outer sum is per window."""
    cx, cy, a, b = (x1 + x2) / 2.0, (y1 + y2) / 2.0, (x2 - x1) / 2.0, (y2 - y1) / 2.0
    nx2, xo = _axis_terms(c0, c1, cx, a)
    ny2, yo = _axis_terms(r0, r1, cy, b)
    # the outer sum's smallest term is the sum of the smallest (rounding is monotonic)
    touched = (np.minimum.reduceat(ny2, yo[:-1]) + np.minimum.reduceat(nx2, xo[:-1])) <= 1.0
    # ny2 + nx2 <= 1 as one compare per pixel, nx2 <= each row's own bound: the same pixels
    # without a float sum drawn per pixel (~3.7 M pixels of windows a crowded 720p frame)
    top = _sum_bound(ny2)
    return [np.asarray(nx2[None, xo[k]:xo[k + 1]] <= top[yo[k]:yo[k + 1], None]) if t else None
            for k, t in enumerate(touched.tolist())]


def _sum_bound(u: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per ``u``: the largest float64 ``t`` whose float64 sum ``u + t`` is <= 1.0, so that ``v <= t``
    is exactly ``u + v <= 1.0`` for every float64 ``v`` (the rounded sum never falls as ``v``
    grows). A sum rounds to <= 1 when it is at most 1 + 2**-53 (a tie rounds to the even 1.0), so
    ``t`` starts at ``(1 - u) + 2**-53``, within a float or two of the bound, and steps to its
    neighbours while the rounded sum says so."""
    t = (1.0 - u) + 2.0 ** -53
    with np.errstate(invalid="ignore", over="ignore"):
        sel = np.flatnonzero((u + t) > 1.0)
        while len(sel):  # down while the sum is > 1
            t[sel] = np.nextafter(t[sel], -np.inf)
            sel = sel[(u[sel] + t[sel]) > 1.0]
        sel = np.flatnonzero((u + np.nextafter(t, np.inf)) <= 1.0)
        while len(sel):  # up while the next float still sums to <= 1
            t[sel] = np.nextafter(t[sel], np.inf)
            sel = sel[(u[sel] + np.nextafter(t[sel], np.inf)) <= 1.0]
    return t


def _axis_terms(lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64], centre: npt.NDArray[np.float64],
                semi: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Squared distance to 0 of each pixel interval ``[p, p + 1)`` in ellipse units, for the
    pixels ``lo[k]:hi[k]`` (all non-empty) of every window ``k``, concatenated; and the offsets."""
    lens = hi - lo
    off = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    seg = np.repeat(np.arange(len(lens)), lens)
    pos = (np.arange(int(off[-1]), dtype=np.int64) - off[seg] + lo[seg]).astype(np.float64)
    c, s = centre[seg], semi[seg]
    near = np.minimum(np.maximum((pos - c) / s, 0.0), (pos + 1.0 - c) / s)
    return near ** 2, off


_EMPTY: BoolMask = np.zeros((0, 0), bool)
"""Marks an ellipse that touches no pixel (dropped, as :func:`_ellipse_mask` finding none)."""


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
