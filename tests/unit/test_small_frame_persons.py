"""load_tests/small_faces.py's YOLOX variants (``--persons``): each is the Redactor's own person
and vehicle detector with only the backend and precision changed, so that the leaks it moves are
the precision's (session 12, issue 19: YOLOX-nano in bf16 on frames of <= 320 px)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load_tests"))
from small_faces import PERSONS, build_persons  # noqa: E402

from operators import ovsession  # noqa: E402
from operators.redactor import RedactionConfig, Redactor  # noqa: E402
from operators.types import Label  # noqa: E402

SETTINGS = ("threshold", "nms_iou", "max_side", "max_upscale", "native_max_side", "vehicles", "vehicle_threshold")


def test_yolox_variants_differ_from_the_redactors_only_in_backend_and_precision() -> None:
    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1).validate())
    own: Any = red.detectors["person"]
    got = build_persons(red, list(PERSONS))
    assert list(got) == list(PERSONS)
    assert got["yolox"] is own  # the default is the Redactor's own detector, not a copy
    assert own.precision == "fp32" and own.providers != ["openvino"]  # auto: onnxruntime, fp32
    for name in ("yolox_bf16", "yolox_ov_fp32"):
        det = got[name]
        assert det is not own
        assert {k: getattr(det, k) for k in SETTINGS} == {k: getattr(own, k) for k in SETTINGS}
        assert det.labels == (Label.PERSON, Label.VEHICLE)
        assert det.input_size(180, 320) == own.input_size(180, 320) == (1.0, 192, 320)  # native size
    if ovsession.available():
        assert got["yolox_ov_fp32"].providers == ["openvino"] and got["yolox_ov_fp32"].precision == "fp32"
        want = "bf16" if ovsession.bf16_supported() else "fp32"
        assert got["yolox_bf16"].providers == ["openvino"] and got["yolox_bf16"].precision == want


def test_a_yolox_variant_detects_a_small_frame() -> None:
    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1).validate())
    frames = np.zeros((1, 180, 320, 3), np.uint8)
    for det in build_persons(red, list(PERSONS)).values():
        (boxes,) = det.detect(frames)
        assert boxes.xyxy.shape[1:] == (4,)  # nothing on a black frame is a correctly shaped empty
