"""load_tests/small_frames.py and small_faces.py: a sizing runs the passes its name says on a
frame of <= ``small_frame_side`` px, the OpenVINO compile mode is what ``--compiles`` says (two
runs score the same), and faces are bucketed by their width in the small frame."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load_tests"))
from small_faces import VARIANTS, bucket, leak_width  # noqa: E402
from small_frames import set_compiles, set_sizing  # noqa: E402

from operators import ovsession  # noqa: E402
from operators.redactor import RedactionConfig, Redactor  # noqa: E402


def test_a_sizing_upscales_a_small_frame_whatever_small_frame_side_says() -> None:
    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1).validate())
    person: Any = red.detectors["person"]
    text: Any = red.detectors["text"]
    # the default policy: a 320x180 frame at its own size (small_frame_side 320)
    assert person.input_size(180, 320) == (1.0, 192, 320)
    assert text._scale_for(180, 320) == 1.0
    set_sizing(person, text, person_upscale=2.0, text_upscale=2.5)  # the caps ("before")
    assert person.input_size(180, 320) == (2.0, 384, 640)
    assert text._scale_for(180, 320) == 2.5
    set_sizing(person, text, text_upscale=1.0)  # YOLOX left as it was
    assert person.input_size(180, 320)[0] == 2.0
    assert text._scale_for(180, 320) == 1.0
    set_sizing(person, text, person_upscale=1.0)  # the default sizing, spelled as upscales
    assert person.input_size(180, 320) == (1.0, 192, 320)


def test_compiles_mode_sets_how_openvino_sessions_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ovsession, "STATIC_SHAPES", ovsession.STATIC_SHAPES)
    monkeypatch.setattr(ovsession, "_synchronous_default", ovsession._synchronous_default)
    set_compiles("sync")
    assert ovsession.synchronous_compiles() and ovsession.STATIC_SHAPES > 0
    set_compiles("async")
    assert not ovsession.synchronous_compiles() and ovsession.STATIC_SHAPES > 0
    set_compiles("dynamic")
    assert ovsession.STATIC_SHAPES == 0
    with pytest.raises(SystemExit, match="--compiles"):
        set_compiles("threads")


@pytest.mark.parametrize(("width", "expected"), [(0.0, "<8"), (7.99, "<8"), (8.0, "8-16"), (15.9, "8-16"),
                                                 (16.0, ">=16"), (300.0, ">=16")])
def test_face_width_buckets(width: float, expected: str) -> None:
    assert bucket(width) == expected


def test_a_leak_is_measured_in_the_small_frame() -> None:
    assert leak_width({"box": [10.0, 5.0, 22.5, 20.0]}, 0.25) == 12.5  # boxes are mapped already
    assert leak_width({"size_px": 40.0, "points": [[1.0, 2.0]]}, 0.25) == 10.0  # COCO: head size scaled


def test_the_baseline_variant_is_the_fp32_union_and_the_default_is_measured() -> None:
    assert next(iter(VARIANTS.items())) == ("both fp32", ("cf", "yn"))
    assert VARIANTS["centerface bf16 + yunet (default)"] == ("cf_bf16", "yn")
