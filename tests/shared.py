"""Where the workplace's shared data lives: ONNX weights, labelled eval sets, CRDs.

``$VEILSTREAM_MODEL_DIR`` / ``$VEILSTREAM_EVAL_DIR`` / ``$VEILSTREAM_SHARED_DIR`` win (the Makefile
sets them from ``SHARED``, ``../shared`` by default); otherwise ``../shared`` beside the checkout.
A checkout elsewhere runs ``make test SHARED=DIR`` or sets the variables.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    env = os.environ.get("VEILSTREAM_SHARED_DIR")
    if env:
        return Path(env)
    return ROOT.parent / "shared"


SHARED = _shared()
MODELS = Path(os.environ.get("VEILSTREAM_MODEL_DIR") or SHARED / "models")
EVAL = Path(os.environ.get("VEILSTREAM_EVAL_DIR") or SHARED / "eval")
CRDS = SHARED / "crds"
