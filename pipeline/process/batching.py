"""Which waiting chunks go to a chunk actor together (issue 19 "Throughput", item 3).

A snapshot camera (320x180 at 0.5 fps) sends one frame per chunk, and every chunk used to be
its own ``ChunkActor.redact`` call and its own detector call: the Ray plumbing of a call cost
about as much CPU as detecting the frame (docs/performance.md, "Small cameras"). The driver now
hands the chunks that are waiting at once to :meth:`~.actors.ChunkActor.redact_many` in
batches; this module decides the batches, as a pure function of the chunks' sizes.

* Only small chunks share a call: a chunk of ``max_pixels`` decoded pixels or more (a 720p chunk
  of 2 s at 15 fps is 27.6 M) goes alone, as before, so large chunks keep spreading over the
  chunk actors and their detectors.
* A batch holds at most ``max_chunks`` chunks and ``max_pixels`` decoded pixels (what a call
  decodes and holds at once).
* When the stage is idle, batches are no larger than needed to give every chunk actor work: 12
  waiting chunks for 2 idle actors make 2 batches of 6, not one of 8 and one of 4. Chunks
  already in flight count as busy actors (``inflight``): in a backlog (the stage's 32 chunks in
  flight) the actors all have work queued, and the few chunks a poll brings as slots free up
  go as one batch. (Spreading them then too gave 1.9 chunks a call in a backlog, not 8:
  ``load_tests/chunk_batch_cost.py``.)

Nothing waits to fill a batch: the driver batches what one poll handed it, so at a low rate
chunks still go one per call, and batches grow only when chunks queue up (under load, where
the per-call CPU matters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

BATCH_MAX_CHUNKS = 8
"""Most chunks per ``redact_many`` call."""
BATCH_MAX_PIXELS = 2_000_000
"""Most decoded pixels (frames x width x height) per ``redact_many`` call: 34 frames of 320x180,
2 of 1280x720; a chunk this large or larger goes alone."""


@dataclass(frozen=True)
class BatchLimits:
    """How many chunks, and how many decoded pixels, one chunk-actor call may take."""

    max_chunks: int = BATCH_MAX_CHUNKS
    max_pixels: int = BATCH_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.max_chunks < 1 or self.max_pixels < 1:
            raise ValueError(f"batch limits must be >= 1, got max_chunks={self.max_chunks} "
                             f"max_pixels={self.max_pixels}")


def plan_batches(pixels: Sequence[int], limits: BatchLimits, workers: int = 1, inflight: int = 0
                 ) -> list[list[int]]:
    """Indices into ``pixels`` (each waiting chunk's decoded pixels) grouped into chunk-actor
    calls, in order of their first chunk; every index appears exactly once.

    A chunk of ``limits.max_pixels`` or more is a call of its own; the others are packed in
    arrival order, at most ``limits.max_chunks`` and ``limits.max_pixels`` per call, and at most
    ``ceil(small chunks / idle)`` per call, where ``idle`` is ``workers`` chunk actors less the
    ``inflight`` chunks already sent (at least 1), so that idle actors all get some."""
    big = [[i] for i, px in enumerate(pixels) if px >= limits.max_pixels]
    small = [i for i, px in enumerate(pixels) if px < limits.max_pixels]
    idle = max(1, workers - max(0, inflight))
    per = min(limits.max_chunks, max(1, math.ceil(len(small) / idle)))
    batches: list[list[int]] = []
    cur: list[int] = []
    px = 0
    for i in small:
        if cur and (len(cur) >= per or px + pixels[i] > limits.max_pixels):
            batches.append(cur)
            cur, px = [], 0
        cur.append(i)
        px += pixels[i]
    if cur:
        batches.append(cur)
    return sorted(big + batches, key=lambda b: b[0])


def task_pixels(frames: int, width: int, height: int) -> int:
    """Decoded pixels of a chunk (an unknown size counts as one pixel a frame)."""
    return max(0, frames) * max(1, width * height)
