"""Helpers shared by the ONNX detectors: model loading, resizing, NMS, clipping.

``onnx`` is imported only where a graph is rewritten (:func:`dynamic_model_bytes`), never at
module import: with it comes ``ml_dtypes``, whose C extension alone took ~0.55 s to import on
the 2-vCPU machine, on the detector build's critical path at every start of ``veilstream
redact`` and of every Ray actor. The rewritten graphs are cached on disk (:func:`dynamic_model`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from ..registry import MODELS, resolve_model
from ..types import Boxes, Frames, InputError

F32 = npt.NDArray[np.float32]
ModelRef = str | os.PathLike[str]


def locate(model: ModelRef, model_dir: ModelRef | None) -> Path:
    """A registry name resolves through :func:`resolve_model`; anything else is a path."""
    if isinstance(model, str) and model in MODELS:
        return resolve_model(model, model_dir=model_dir)
    path = Path(model)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist (and is not a registry name: "
                         f"{', '.join(sorted(MODELS))})")
    return path


DYNAMIC_RECIPE = 1
"""Version of what :func:`dynamic_model_bytes` does to a graph (dims replaced, initializers
dropped from the graph inputs): part of the cache key of :func:`dynamic_model`; bump it when
that changes."""


def dynamic_model(path: Path, inputs: dict[str, list[int | str]], outputs: dict[str, list[int | str]], *,
                  digest: str, name: str | None = None,
                  cache_dir: str | os.PathLike[str] | None = None) -> Path | bytes:
    """:func:`dynamic_model_bytes` of ``path`` (whose file sha256 is ``digest``), derived once
    into ``<cache>/dynamic/<name>-<key>.onnx`` (``key``: ``digest``, the dims and
    :data:`DYNAMIC_RECIPE`; the cache of :mod:`operators.quantize`, ``$VEILSTREAM_CACHE_DIR``);
    the file, or the bytes when the cache cannot be written (one warning, then derived at every
    start). A cache hit neither imports ``onnx`` nor parses the graph."""
    from ..quantize import _cached

    def build(tmp: Path) -> Path:
        out = tmp / "dynamic.onnx"
        out.write_bytes(dynamic_model_bytes(path, inputs, outputs))
        return out

    salt = {"inputs": inputs, "outputs": outputs, "dynamic": DYNAMIC_RECIPE}
    return _cached(None, name or path.stem, "dynamic", salt, build, cache_dir, digest=digest)


def dynamic_model_bytes(path: Path, inputs: dict[str, list[int | str]],
                        outputs: dict[str, list[int | str]]) -> bytes:
    """Load ``path`` with its declared input/output dims replaced (ints fixed, str dynamic)."""
    import onnx
    from onnx.tools import update_model_dims

    model = onnx.load(str(path))

    def dims(values: Sequence[Any]) -> dict[str, list[int | str]]:
        # Old exports list initializers as graph inputs; update_inputs_outputs_dims wants them all.
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    model = update_model_dims.update_inputs_outputs_dims(
        model, {**dims(model.graph.input), **inputs}, {**dims(model.graph.output), **outputs})
    # Initializers listed as graph inputs could be overridden at run time, so onnxruntime
    # neither folds nor fuses them (Conv+BN, Conv+Relu): CenterFace ran 2.3x slower per frame.
    weights = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    return bytes(model.SerializeToString())


def check_frames(frames: Frames) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        shape = getattr(frames, "shape", None)
        dtype = getattr(frames, "dtype", None)
        raise InputError(f"frames must be (N, H, W, 3) uint8 BGR, got shape {shape} dtype {dtype}")


def fit_size(h: int, w: int, max_side: int | None, multiple: int = 32,
             min_side: int | None = None) -> tuple[int, int, int, int]:
    """Resized ``(rh, rw)`` keeping aspect with ``max(rh, rw) <= max_side`` (no bound when
    ``max_side`` is None) and, when ``min_side`` is given, upscaled so that
    ``max(rh, rw) >= min_side``; and the padded ``(ph, pw)`` rounded up to ``multiple``."""
    s = 1.0 if max_side is None else min(1.0, max_side / max(h, w))
    if min_side is not None and max(h, w) * s < min_side:
        s = min_side / max(h, w)
    rh, rw = max(1, round(h * s)), max(1, round(w * s))
    ph, pw = -(-rh // multiple) * multiple, -(-rw // multiple) * multiple
    return rh, rw, ph, pw


def nchw_float32(frames: npt.NDArray[np.uint8], mean: F32 | None = None, scale: F32 | None = None) -> F32:
    """A new C-contiguous ``(N, C, H, W)`` float32 blob of ``(N, H, W, C)`` uint8 ``frames`` (any
    strides, e.g. a channel-reversed view), ``(x - mean) * scale`` when ``mean`` and ``scale``
    (float32, broadcastable to ``(1, C, 1, 1)``) are given.

    Exactly the values of ``(frames.transpose(0, 3, 1, 2).astype(np.float32) - mean) * scale``
    (the same float32 operations, element by element), but written in the layout the session
    reads: that expression keeps the frames' NHWC memory order behind NCHW strides, so its
    arithmetic ran over strided memory and onnxruntime / OpenVINO copied the result again to
    make it contiguous. On a 320x192 frame: the text pass's normalised blob 0.85 -> 0.10 ms,
    CenterFace's channel-reversed one 0.24 -> 0.07 ms with the session's copy
    (docs/performance.md, session 11, "per-frame overhead of snapshot cameras").
    """
    src = frames.transpose(0, 3, 1, 2)
    out: F32 = np.empty(src.shape, np.float32)
    if mean is None:
        np.copyto(out, src)
    else:
        np.subtract(src, mean, out=out, dtype=np.float32)
    if scale is not None:
        np.multiply(out, scale, out=out)
    return out


def resize_pad(frames: Frames, rh: int, rw: int, ph: int, pw: int, pad_value: int = 0) -> Frames:
    """New ``(N, ph, pw, 3)`` array: each frame resized to ``(rh, rw)`` at the top-left."""
    n, h, w = frames.shape[:3]
    out = np.full((n, ph, pw, 3), pad_value, np.uint8)
    for i in range(n):
        img = frames[i] if (rh, rw) == (h, w) else cv2.resize(frames[i], (rw, rh), interpolation=cv2.INTER_AREA
                                                                if rh < h else cv2.INTER_LINEAR)
        out[i, :rh, :rw] = img
    return out


def nms(xyxy: F32, score: F32, iou: float) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    if len(xyxy) == 0:
        return np.zeros((0,), np.intp)
    x1, y1, x2, y2 = xyxy[:, 0], xyxy[:, 1], xyxy[:, 2], xyxy[:, 3]
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-score, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        union = area[i] + area[rest] - inter
        ov = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
        order = rest[ov < iou]
    return np.asarray(keep, np.intp)


def finish(xyxy: F32, score: F32, label: int, frame_hw: tuple[int, int], iou: float | None) -> Boxes:
    """NMS (when ``iou`` is given), clip to the frame, drop empty boxes, build :class:`Boxes`."""
    if len(xyxy) == 0:
        return Boxes.empty()
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    score = np.asarray(score, np.float32).reshape(-1)
    if iou is not None:
        keep = nms(xyxy, score, iou)
        xyxy, score = xyxy[keep], score[keep]
    h, w = frame_hw
    xyxy = xyxy.copy()
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, w)
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, h)
    ok = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    if not ok.any():
        return Boxes.empty()
    return Boxes.of(xyxy[ok], score[ok], label)


def batches(n: int, size: int) -> Sequence[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, max(1, size))]
