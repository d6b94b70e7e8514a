"""PP-OCRv4 text detector (DB-net from the ``rapidocr-onnxruntime`` wheel): plates and text."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..types import Boxes, Frames, Label
from ._base import OnnxDetector
from ._common import ModelRef, finish, fit_size, resize_pad


class TextDetector(OnnxDetector):
    """Text regions (licence plate characters, signs, screens) as padded axis-aligned boxes.

    Pre- and post-processing follow RapidOCR's ``ch_ppocr_det``: BGR, ``(x/255-0.5)/0.5``,
    binarise the probability map at ``bin_threshold``, dilate 2x2, one box per contour
    (min-area rectangle), keep when its mean probability >= ``threshold``, then "unclip"
    (grow by ``area * unclip_ratio / perimeter`` on every side). The rotated box becomes
    its axis-aligned hull, padded by ``pad`` times its text height on every side so that
    character edges that the probability map misses are still covered.

    Args:
        model: registry name or path to ``ch_PP-OCRv4_det_infer.onnx``.
        label: :attr:`Label.PLATE` (default) or :attr:`Label.TEXT`: one model, two uses.
        threshold: box score threshold (RapidOCR's ``box_thresh`` 0.5).
        bin_threshold: probability binarisation threshold (0.3).
        unclip_ratio: DB unclip ratio (1.6).
        pad: extra padding as a fraction of the text height, every side (0.25: plates_eu
            coverage >= 0.8 rises from 91% unpadded to 98%).
        max_side: longer side of the network input (frames are downscaled to it, never
            upscaled). 960: same plate coverage as 1280 on plates_eu at less than half the
            cost on 720p frames.
        nms_iou: ``None``: DB contours do not overlap, no NMS.
        Others as :class:`CenterFaceDetector`.
    """

    name: str = "ppocr_text"

    def __init__(self, model: ModelRef = "ppocr_det", *, label: Label | int = Label.PLATE,
                 providers: Sequence[str] | str | None = None, threshold: float = 0.5,
                 bin_threshold: float = 0.3, unclip_ratio: float = 1.6, pad: float = 0.25,
                 max_side: int | None = 960, nms_iou: float | None = None,
                 model_dir: ModelRef | None = None, threads: int | None = None, batch_size: int | None = None) -> None:
        self.label = Label(int(label))
        self.labels = (self.label,)
        self.threshold = float(threshold)
        self.bin_threshold = float(bin_threshold)
        self.unclip_ratio = float(unclip_ratio)
        self.pad = float(pad)
        self.max_side = max_side
        self.nms_iou = nms_iou
        self.batch_size = batch_size  # type: ignore[assignment]  # resolved in _start
        self._gpu_batch = 4
        self._mean = np.float32(0.5 * 255.0)
        self._scale = np.float32(1.0 / (0.5 * 255.0))
        path = self._open(model, model_dir)
        self._start(path, providers, threads, (360, 640))

    def _detect_batch(self, frames: Frames) -> list[Boxes]:
        n, h, w = frames.shape[:3]
        rh, rw, ph, pw = fit_size(h, w, self.max_side)
        padded = resize_pad(frames, rh, rw, ph, pw)
        blob = (padded.transpose(0, 3, 1, 2).astype(np.float32) - self._mean) * self._scale
        prob = self.session.run(None, {self.input_name: blob})[0][:, 0]
        sx, sy = w / rw, h / rh
        kernel = np.ones((2, 2), np.uint8)
        out = []
        for b in range(n):
            pm = prob[b, :rh, :rw]
            bitmap = cv2.dilate((pm > self.bin_threshold).astype(np.uint8), kernel)
            contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
            boxes, scores = [], []
            for c in contours[:1000]:
                (cx, cy), (rw_, rh_), ang = cv2.minAreaRect(c)
                if min(rw_, rh_) < 3:
                    continue
                pts = cv2.boxPoints(((cx, cy), (rw_, rh_), ang))
                score = self._box_score(pm, pts)
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
                boxes.append([x1 * sx - p, y1 * sy - p, x2 * sx + p, y2 * sy + p])
                scores.append(score)
            out.append(finish(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                              self.label, (h, w), self.nms_iou))
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
