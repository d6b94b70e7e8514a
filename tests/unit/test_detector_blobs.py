"""The detectors' input blobs: the same values as before, in the layout the session reads
(C-contiguous NCHW float32), so neither the arithmetic nor the session copies strided memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from operators.detectors._common import nchw_float32
from operators.detectors.centerface import CenterFaceDetector
from operators.detectors.text import TextDetector

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1) * np.float32(255.0)
IMAGENET_SCALE = np.float32(1.0) / (np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1) * 255.0)
HALF_MEAN = np.full((1, 3, 1, 1), 0.5 * 255.0, np.float32)
HALF_SCALE = np.full((1, 3, 1, 1), 1.0 / (0.5 * 255.0), np.float32)


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(1, 192, 320), (3, 32, 96), (2, 7, 5)])
@pytest.mark.parametrize("norm", ["none", "imagenet", "half"])
@pytest.mark.parametrize("reverse", [False, True])
def test_nchw_float32_is_the_reference_expression_contiguous(shape: tuple[int, int, int], norm: str,
                                                             reverse: bool) -> None:
    frames = _frames(*shape)
    frames[0, 0, 0] = (0, 255, 128)  # the extremes
    before = frames.copy()
    src = frames[..., ::-1] if reverse else frames
    ref = src.transpose(0, 3, 1, 2).astype(np.float32)
    if norm == "none":
        got = nchw_float32(src)
    else:
        mean, scale = (IMAGENET_MEAN, IMAGENET_SCALE) if norm == "imagenet" else (HALF_MEAN, HALF_SCALE)
        ref = (ref - mean) * scale
        got = nchw_float32(src, mean, scale)
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got, ref)  # bit for bit: the same float32 operations
    assert np.array_equal(frames, before)  # input not touched


class _Capture:
    """A session that records what it is fed and answers zeros of the given shapes."""

    def __init__(self, outputs: Any) -> None:
        self.fed: list[np.ndarray] = []
        self.outputs = outputs

    def run(self, _names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (blob,) = feed.values()
        self.fed.append(blob)
        return self.outputs(blob)


@pytest.mark.parametrize("imagenet", [True, False])
def test_text_pass_feeds_a_contiguous_blob_of_the_same_values(imagenet: bool) -> None:
    det = TextDetector.__new__(TextDetector)
    det._mean, det._scale = (IMAGENET_MEAN, IMAGENET_SCALE) if imagenet else (HALF_MEAN, HALF_SCALE)
    det.input_name = "x"
    sess = _Capture(lambda b: [np.zeros((b.shape[0], 1, b.shape[2], b.shape[3]), np.float32)])
    det.session = sess
    blob_bgr = _frames(2, 64, 96, seed=3)
    prob = det._run(blob_bgr)
    assert prob.shape == (2, 64, 96)
    (fed,) = sess.fed
    assert fed.flags["C_CONTIGUOUS"] and fed.dtype == np.float32
    assert np.array_equal(fed, (blob_bgr.transpose(0, 3, 1, 2).astype(np.float32) - det._mean) * det._scale)


def test_centerface_feeds_a_contiguous_rgb_blob_of_the_same_values() -> None:
    det = CenterFaceDetector.__new__(CenterFaceDetector)
    det.max_side, det.min_side, det.threshold, det.nms_iou, det.input_name = 640, None, 0.5, 0.3, "input.1"

    def outputs(b: np.ndarray) -> list[np.ndarray]:
        n, _, h, w = b.shape
        return [np.zeros((n, c, h // 4, w // 4), np.float32) for c in (1, 2, 2, 10)]

    sess = _Capture(outputs)
    det.session = sess
    frames = _frames(2, 180, 320, seed=5)
    boxes = det._detect_batch(frames)
    assert len(boxes) == 2 and all(len(b) == 0 for b in boxes)
    (fed,) = sess.fed
    assert fed.flags["C_CONTIGUOUS"] and fed.dtype == np.float32
    # frames of 320x180 are padded to the stride (192 rows) with zeros: RGB, NCHW
    padded = np.zeros((2, fed.shape[2], fed.shape[3], 3), np.uint8)
    padded[:, :180, :320] = frames
    assert np.array_equal(fed, padded[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32))
