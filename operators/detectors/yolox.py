"""YOLOX-nano person detector (COCO class 0)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..quantize import DEFAULT_PRECISION
from ..types import Boxes, Frames, Label
from ._base import OnnxDetector
from ._common import ModelRef, dynamic_model, finish

_STRIDES = (8, 16, 32)
PERSON_CLASS = 0
VEHICLE_CLASSES = (2, 3, 5, 7)
"""COCO car, motorcycle, bus, truck (0-based class indices of the 80-class head)."""


DEFAULT_THRESHOLD = 0.1
"""Score threshold when the config sets none (see ``threshold`` below)."""


class YoloxPersonDetector(OnnxDetector):
    """Persons with YOLOX-nano; input letterboxed (pad 114, right and bottom).

    Args:
        model: registry name or path to ``yolox_nano.onnx``.
        threshold: ``obj * cls`` score threshold (0.1: persons feed the head-region
            fallback, so recall matters more than precision; COCO person recall at
            IoU 0.5 is 0.71 at 0.1 vs 0.55 at 0.3).
        nms_iou: NMS IoU (0.45, YOLOX's demo value).
        max_side: network input side, a multiple of 32 (416 = the export's size;
            640: recall 0.79 vs 0.71 at ~2x the cost). The graph's fixed dims are
            made dynamic at load.
        max_upscale: ``None``: every frame is letterboxed to a ``max_side`` square (a 176x144
            frame upscaled 3.6x to 640x640). A number: the frame is scaled by
            ``min(max_side / longer side, max_upscale)`` and padded to the stride (32) on
            each side: a 640x272 frame runs at 640x288, 1280x720 at 640x384, 176x144 (with
            1.0) at 192x160; the network is fully convolutional, only the grid changes.
        native_max_side: frames whose longer side is at most this run at their own size (padded
            to the stride), whatever ``max_upscale`` says: a small camera's detection costs
            what its pixels cost (``RedactionConfig.small_frame_side``). ``None``: never.
        vehicles: also emit :attr:`Label.VEHICLE` boxes (COCO car, motorcycle, bus,
            truck; best class score) for the vehicle-guided plate search; the person
            and vehicle boxes come from one inference.
        vehicle_threshold: score threshold for vehicles (their crops are searched for plates).
            0.2: on the 720p load source half the vehicle boxes between 0.1 and 0.2 are
            spurious and cost x0.77 of the crop pass; plates_traffic leaks 21 vs 20 of 398
            (one `ro_*` night car), plates_eu 0/108 both. Vehicles from 0.5 also get the
            plate fallback (:mod:`operators.plate_region`) when no plate is found on them.
        Others as :class:`CenterFaceDetector` (no ``batch_size``: always 1).
    """

    name: str = "yolox_person"
    labels: tuple[Label, ...] = (Label.PERSON,)

    def __init__(self, model: ModelRef = "yolox_nano", *, providers: Sequence[str] | str | None = None,
                 threshold: float = DEFAULT_THRESHOLD, nms_iou: float = 0.45, max_side: int = 416,
                 model_dir: ModelRef | None = None, threads: int | None = None,
                 vehicles: bool = False, vehicle_threshold: float = 0.2, precision: str = DEFAULT_PRECISION,
                 max_upscale: float | None = None, native_max_side: int | None = None) -> None:
        if max_side % 32:
            raise ValueError(f"max_side must be a multiple of 32, got {max_side}")
        self.threshold = float(threshold)
        self.nms_iou = float(nms_iou)
        self.max_side = int(max_side)
        self.max_upscale = None if max_upscale is None else float(max_upscale)
        if self.max_upscale is not None and self.max_upscale <= 0:
            raise ValueError(f"max_upscale must be > 0, got {max_upscale}")
        self.native_max_side = None if native_max_side is None else int(native_max_side)
        self.vehicles = bool(vehicles)
        self.vehicle_threshold = float(vehicle_threshold)
        if self.vehicles:
            self.labels = (Label.PERSON, Label.VEHICLE)
        # The export hard-codes batch 1 in its output Reshape, so frames go one per call
        # (on CPU that costs nothing; a batch-N re-export would help on GPU).
        self.batch_size = 1
        path = self._open(model, model_dir, precision)
        data = dynamic_model(path, {"images": ["B", 3, "H", "W"]}, {"output": ["B", "N", 85]},
                             digest=self.fp32_sha256, name=self.model_name)
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._start(data, providers, threads, (360, 640))

    def input_size(self, h: int, w: int) -> tuple[float, int, int]:
        """``(scale, input_h, input_w)`` for an ``h`` x ``w`` frame (see ``max_upscale`` and
        ``native_max_side``)."""
        up = self.max_upscale
        if self.native_max_side is not None and max(h, w) <= self.native_max_side:
            up = 1.0
        if up is None:
            return min(self.max_side / h, self.max_side / w), self.max_side, self.max_side
        r = min(self.max_side / max(h, w), up)
        rh, rw = max(1, round(h * r)), max(1, round(w * r))
        return r, -(-rh // 32) * 32, -(-rw // 32) * 32

    def _grid_for(self, ih: int, iw: int) -> tuple[np.ndarray, np.ndarray]:
        """Cell offsets and strides of the flattened ``(N, 85)`` output for an ``ih`` x ``iw`` input."""
        got = self._grids.get((ih, iw))
        if got is None:
            grids, strides = [], []
            for s in _STRIDES:
                gh, gw = ih // s, iw // s
                gy, gx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
                grids.append(np.stack([gx.ravel(), gy.ravel()], 1))
                strides.append(np.full((gh * gw, 1), s))
            got = (np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32))
            self._grids[(ih, iw)] = got
        return got

    def _detect_batch(self, frames: Frames) -> list[Boxes]:
        n, h, w = frames.shape[:3]
        r, ih, iw = self.input_size(h, w)
        rh, rw = max(1, round(h * r)), max(1, round(w * r))
        blob = np.full((n, ih, iw, 3), 114, np.uint8)
        for i in range(n):
            blob[i, :rh, :rw] = frames[i] if (rh, rw) == (h, w) else cv2.resize(
                frames[i], (rw, rh), interpolation=cv2.INTER_LINEAR)
        pred = self.session.run(None, {self.input_name: blob.transpose(0, 3, 1, 2).astype(np.float32)})[0]
        grid = self._grid_for(ih, iw)
        out = []
        for b in range(n):
            p = pred[b]
            parts = [self._decode(p, p[:, 4] * p[:, 5 + PERSON_CLASS], self.threshold, Label.PERSON, r, (h, w), grid)]
            if self.vehicles:
                vscore = p[:, 4] * p[:, [5 + c for c in VEHICLE_CLASSES]].max(1)
                parts.append(self._decode(p, vscore, self.vehicle_threshold, Label.VEHICLE, r, (h, w), grid))
            out.append(Boxes.concat(parts))
        return out

    def _decode(self, p: np.ndarray, score: np.ndarray, threshold: float, label: Label, r: float,
                hw: tuple[int, int], grid: tuple[np.ndarray, np.ndarray]) -> Boxes:
        keep = np.nonzero(score > threshold)[0]
        if len(keep) == 0:
            return Boxes.empty()
        q = p[keep]
        cells, strides = grid
        xy = (q[:, :2] + cells[keep]) * strides[keep]
        wh = np.exp(q[:, 2:4]) * strides[keep]
        xyxy = np.concatenate([xy - wh / 2, xy + wh / 2], 1) / r
        return finish(xyxy.astype(np.float32), score[keep], label, hw, self.nms_iou)
