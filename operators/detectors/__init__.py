"""ONNX detectors and their registration by config ``kind``.

Every detector implements :class:`operators.types.Detector`: ``detect`` takes
``(N, H, W, 3)`` uint8 BGR frames, never mutates them, and returns one
:class:`~operators.types.Boxes` per frame in original-frame pixels, clipped to the frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..types import ConfigError, Detector
from . import centerface, faces, text, yolox, yunet
from .centerface import CenterFaceDetector
from .faces import FaceUnionDetector
from .text import TextDetector
from .yolox import YoloxPersonDetector
from .yunet import YuNetDetector

DETECTORS: dict[str, Callable[..., Detector]] = {
    "centerface": CenterFaceDetector,
    "yunet": YuNetDetector,
    "centerface+yunet": FaceUnionDetector,
    "yolox_person": YoloxPersonDetector,
    "ppocr_text": TextDetector,
}
"""Detector factories keyed by the config's ``kind``."""

DEFAULT_THRESHOLDS: dict[str, float] = {
    "centerface": centerface.DEFAULT_THRESHOLD,
    "yunet": yunet.DEFAULT_THRESHOLD,
    "centerface+yunet": faces.DEFAULT_THRESHOLD,  # its ``threshold`` is CenterFace's inside the union
    "yolox_person": yolox.DEFAULT_THRESHOLD,
    "ppocr_text": text.DEFAULT_THRESHOLD,
}
"""Each detector's own score threshold (what ``None`` in a ``RedactionConfig`` means)."""


def build_detector(kind: str, **kwargs: Any) -> Detector:
    """Instantiate ``DETECTORS[kind]``; an unknown kind is a :class:`ConfigError` (at startup)."""
    try:
        factory = DETECTORS[kind]
    except KeyError:
        raise ConfigError(f"unknown detector kind {kind!r}; expected one of {', '.join(DETECTORS)}") from None
    return factory(**kwargs)


__all__ = ["DEFAULT_THRESHOLDS", "DETECTORS", "CenterFaceDetector", "FaceUnionDetector", "TextDetector", "YoloxPersonDetector", "YuNetDetector",
           "build_detector"]
