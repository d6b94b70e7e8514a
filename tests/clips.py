"""Real footage for codec and writer tests: the carphone sample clip's first frames."""

from __future__ import annotations

import numpy as np

from operators.video import VideoReader, sample_video


def sample_frames(n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """The carphone sample clip's first ``n`` frames (176x144 BGR) with their timestamps."""
    with VideoReader(str(sample_video())) as r:
        frames, pts = [], []
        for c in r.chunks(n):
            frames.append(c.frames.copy())
            pts.append(c.pts.copy())
            if sum(len(f) for f in frames) >= n:
                break
    return np.concatenate(frames)[:n], np.concatenate(pts)[:n]
