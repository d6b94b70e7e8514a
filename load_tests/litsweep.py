"""What the lit-plate sweeps share (``lit_pass_sweep.py``, ``lit_proposal_sweep.py``,
``dark_native_sweep.py``): an eval set with its cached detections, and the lit-plate search
run on one image against the cached full-frame pass, timed in process CPU."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from operators import evalcache
from operators.detectors import TextDetector, litplate
from operators.detectors.text import pack_shelves
from operators.evaldata import default_eval_dir
from operators.evaluation import load_items
from operators.types import Boxes, Label


def cached_eval_set(root: Any, name: str, comps: Any) -> tuple[list[Any], evalcache.DetectionCache, dict[str, Any]]:
    """The items of eval set ``name``, its detection cache under ``root/out/eval_cache`` and the
    cached detections of ``comps`` (computed and stored where missing, as ``veilstream eval`` does)."""
    items = load_items(name, default_eval_dir())
    cache = evalcache.DetectionCache(root / "out" / "eval_cache", name, items)
    return items, cache, cache.get(comps)


class LitSearch:
    """``litplate.search`` on an image, the boxes of the cached full-frame pass that cover a patch
    skipped; the text detector (at the cache's floor threshold) is built on first use."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.det: TextDetector | None = None

    def __call__(self, img: np.ndarray, full: Boxes, **kw: Any) -> tuple[Boxes, float]:
        """(plate boxes found, CPU-s spent); ``kw`` goes to ``litplate.search`` (``budget``,
        ``dark_median``)."""
        if self.det is None:
            self.det = TextDetector(self.cfg.text_model, threshold=evalcache.FLOORS["text_full"],
                                    model_dir=self.cfg.model_dir)
        covered = full.xyxy[full.score >= litplate.COVER_SCORE]
        t0 = time.process_time()
        found = litplate.search(img, covered, self.det._run, pack_shelves, self.det._boxes, **kw)
        spent = time.process_time() - t0
        xyxy = np.asarray([b for b, _ in found], np.float32).reshape(-1, 4)
        return Boxes(xyxy, np.asarray([s for _, s in found], np.float32),
                     np.full(len(xyxy), int(Label.PLATE), np.int16)), spent
