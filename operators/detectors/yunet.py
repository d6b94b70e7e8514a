"""YuNet face detector (``yunet_n_dynamic.onnx`` from libfacedetection.train)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..quantize import DEFAULT_PRECISION
from ..types import Boxes, Frames, Label
from ._base import OnnxDetector
from ._common import ModelRef, finish, fit_size, resize_pad

_STRIDES = (8, 16, 32)


DEFAULT_THRESHOLD = 0.45
"""Score threshold when the config sets none (see ``threshold`` below)."""


class YuNetDetector(OnnxDetector):
    """Faces with YuNet (anchor-free, strides 8/16/32); faster than CenterFace on CPU.

    Decoding follows OpenCV's ``FaceDetectorYN::postProcess``: for the cell at row r,
    column c of stride s, ``cx = (c + dx) * s``, ``cy = (r + dy) * s``,
    ``w = exp(dw) * s``, ``h = exp(dh) * s`` and ``score = sqrt(cls * obj)``.

    Args:
        model: registry name or path to ``yunet_n_dynamic.onnx``.
        threshold: score threshold (0.45: measured recall/false-box balance; OpenCV's
            default 0.9 is tuned for precision, which leaks faces).
        nms_iou: NMS IoU (0.3, as OpenCV).
        max_side: frames longer than this are downscaled; ``None`` = native.
        min_side: frames whose longer side is below this are upscaled to it (small faces in
            small frames); ``None``: never upscaled.
        Others as :class:`CenterFaceDetector`.
    """

    name: str = "yunet"
    labels: tuple[Label, ...] = (Label.FACE,)

    def __init__(self, model: ModelRef = "yunet_n", *, providers: Sequence[str] | str | None = None,
                 threshold: float = DEFAULT_THRESHOLD, nms_iou: float = 0.3, max_side: int | None = 1280, min_side: int | None = None,
                 model_dir: ModelRef | None = None, threads: int | None = None, batch_size: int | None = None,
                 precision: str = DEFAULT_PRECISION) -> None:
        self.threshold = float(threshold)
        self.nms_iou = float(nms_iou)
        self.max_side = max_side
        self.min_side = min_side
        self.batch_size = batch_size  # type: ignore[assignment]  # resolved in _start
        self._gpu_batch = 8
        path = self._open(model, model_dir, precision)
        self._outputs = [f"{k}_{s}" for s in _STRIDES for k in ("cls", "obj", "bbox")]
        self._start(path, providers, threads, (360, 640))

    def _detect_batch(self, frames: Frames) -> list[Boxes]:
        n, h, w = frames.shape[:3]
        rh, rw, ph, pw = fit_size(h, w, self.max_side, min_side=self.min_side)
        blob = resize_pad(frames, rh, rw, ph, pw).transpose(0, 3, 1, 2).astype(np.float32)  # BGR 0-255
        res = self.session.run(self._outputs, {self.input_name: blob})
        sx, sy = w / rw, h / rh
        per_stride = []
        for i, s in enumerate(_STRIDES):
            cls, obj, bbox = res[3 * i], res[3 * i + 1], res[3 * i + 2]
            rows, cols = ph // s, pw // s
            gy, gx = np.divmod(np.arange(rows * cols, dtype=np.float32), cols)
            score = np.sqrt(np.clip(cls[..., 0], 0, 1) * np.clip(obj[..., 0], 0, 1))  # (B, K)
            per_stride.append((s, gx, gy, score, bbox))
        out = []
        for b in range(n):
            boxes, scores = [], []
            for s, gx, gy, score, bbox in per_stride:
                keep = np.nonzero(score[b] > self.threshold)[0]
                if len(keep) == 0:
                    continue
                d = bbox[b, keep]
                cx, cy = (gx[keep] + d[:, 0]) * s, (gy[keep] + d[:, 1]) * s
                bw, bh = np.exp(d[:, 2]) * s, np.exp(d[:, 3]) * s
                boxes.append(np.stack([(cx - bw / 2) * sx, (cy - bh / 2) * sy,
                                       (cx + bw / 2) * sx, (cy + bh / 2) * sy], 1))
                scores.append(score[b, keep])
            if not boxes:
                out.append(Boxes.empty())
                continue
            out.append(finish(np.concatenate(boxes).astype(np.float32), np.concatenate(scores),
                              Label.FACE, (h, w), self.nms_iou))
        return out
