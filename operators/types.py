"""Core value types shared by every operator.

Arrays follow one convention everywhere:

* ``Frames``: ``(N, H, W, 3)`` ``uint8`` BGR, N >= 0.
* ``Boxes.xyxy``: ``(K, 4)`` ``float32`` pixel corners ``x1, y1, x2, y2`` in the
  coordinate system of the frame they were detected on.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

# The error classes live in schemas (stdlib only); operators' callers import them from here too.
from schemas.errors import ConfigError as ConfigError
from schemas.errors import InputError as InputError
from schemas.errors import ModelNotFoundError as ModelNotFoundError
from schemas.errors import ProviderError as ProviderError
from schemas.errors import VeilStreamError as VeilStreamError

Frames = npt.NDArray[np.uint8]
"""``(N, H, W, 3)`` uint8 BGR frames."""

Frame = npt.NDArray[np.uint8]
"""``(H, W, 3)`` uint8 BGR frame."""


class Label(enum.IntEnum):
    """What a box covers. Values are stable: they go on the wire and into metrics."""

    FACE = 0
    PLATE = 1
    PERSON = 2
    TEXT = 3
    ZONE = 4
    HEAD = 5  # head region inferred from a person box with no face inside (fail closed)
    FRAME = 6  # whole-frame mask (fail closed on detector error)
    VEHICLE = 7  # car/bus/truck/motorcycle: guides the plate search, never masked itself
    PLATE_REGION = 8  # lower part of a vehicle with no plate found on it (fail closed)
    LOOSE_TEXT = 9  # plate-class text with no vehicle near it: a plate on a missed vehicle, or scene text



CLASS_NAMES: tuple[str, ...] = ("face", "plate", "person", "text")
"""Classes a user can ask to mask (``--classes``)."""


@dataclass(frozen=True, slots=True)
class Boxes:
    """Detections on one frame.

    Attributes:
        xyxy: ``(K, 4)`` float32 pixel corners.
        score: ``(K,)`` float32 confidence in [0, 1]; 1.0 for zones and carried boxes' max.
        label: ``(K,)`` int16 :class:`Label` values.
    """

    xyxy: npt.NDArray[np.float32]
    score: npt.NDArray[np.float32]
    label: npt.NDArray[np.int16]

    def __post_init__(self) -> None:
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"Boxes.xyxy must be (K, 4), got {self.xyxy.shape}")
        k = self.xyxy.shape[0]
        if self.score.shape != (k,) or self.label.shape != (k,):
            raise ValueError(
                f"Boxes.score/label must be ({k},), got {self.score.shape}/{self.label.shape}"
            )

    @staticmethod
    def empty() -> Boxes:
        return Boxes(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int16)
        )

    @staticmethod
    def of(
        xyxy: npt.ArrayLike, score: npt.ArrayLike | None = None, label: int | npt.ArrayLike = 0
    ) -> Boxes:
        """Build boxes from array-likes; ``label`` may be one value for all boxes."""
        arr = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        k = arr.shape[0]
        sc = np.ones((k,), np.float32) if score is None else np.asarray(score, np.float32).reshape(k)
        lb = np.asarray(label, dtype=np.int16)
        lb = np.full((k,), int(lb), np.int16) if lb.ndim == 0 else lb.reshape(k).astype(np.int16)
        return Boxes(arr, sc, lb)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def select(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Boxes:
        return Boxes(self.xyxy[keep], self.score[keep], self.label[keep])

    @staticmethod
    def concat(parts: Sequence[Boxes]) -> Boxes:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Boxes.empty()
        return Boxes(
            np.concatenate([p.xyxy for p in parts]).astype(np.float32),
            np.concatenate([p.score for p in parts]).astype(np.float32),
            np.concatenate([p.label for p in parts]).astype(np.int16),
        )

    def scaled(self, sx: float, sy: float) -> Boxes:
        xyxy = self.xyxy * np.array([sx, sy, sx, sy], np.float32)
        return Boxes(xyxy.astype(np.float32), self.score, self.label)


@runtime_checkable
class Detector(Protocol):
    """Finds boxes on a batch of frames.

    ``detect`` takes ``(N, H, W, 3)`` uint8 BGR, never mutates it, and returns one
    :class:`Boxes` per frame (``Boxes.empty()`` when nothing is found).
    """

    name: str
    labels: tuple[Label, ...]

    def detect(self, frames: Frames) -> list[Boxes]: ...


@runtime_checkable
class Anonymizer(Protocol):
    """Masks boxes on a batch of frames; returns new frames, never mutates input."""

    def anonymize(self, frames: Frames, boxes: Sequence[Boxes]) -> Frames: ...
