"""The full-frame text pass's precision per frame (session 9): bf16 at the frame's own scale by
default where OpenVINO runs it on a CPU with native bf16, fp32 for a dark frame's
native-resolution pass (round 3b's plates) unless ``text_dark_precision`` asks for bf16."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from operators.detectors import TextDetector
from operators.ovsession import bf16_supported
from operators.redactor import RedactionConfig, build_detectors


def _sessions_per_full_pass(det: TextDetector, frame: np.ndarray) -> list[tuple[int, Any]]:
    """``(blob width, session)`` of every network call of ``det.detect`` on one frame (the
    full-frame pass and, in a dark frame, the lit-plate windows)."""
    calls: list[tuple[int, Any]] = []
    run = det._run

    def spy(blob: np.ndarray, session: Any = None) -> np.ndarray:
        calls.append((int(blob.shape[2]), session))
        return run(blob, session)

    det._run = spy  # type: ignore[method-assign]
    try:
        det.detect(frame[None])
    finally:
        del det._run
    return calls


BRIGHT = np.full((720, 1280, 3), 150, np.uint8)
DARK = np.full((720, 1280, 3), 30, np.uint8)  # median grey 30 < litplate.NATIVE_MEDIAN 85


def test_defaults_bf16_at_the_frames_own_scale_fp32_for_the_dark_native_pass():
    cfg = RedactionConfig(classes=("plate",), threads=1).validate()
    assert cfg.text_full_precision == "bf16" and cfg.text_dark_precision is None
    det = build_detectors(cfg)["text"]
    assert isinstance(det, TextDetector) and det.lit_pass
    if not bf16_supported():  # no native bf16: one fp32 session serves every pass
        assert det.full_precision == "fp32" and det._full_session is None and det._dark_session is None
        return
    assert (det.full_precision, det.dark_precision) == ("bf16", "fp32")
    assert det._full_session is not None and det._dark_session is None
    # daylight: the 640 px pass on the bf16 session
    assert _sessions_per_full_pass(det, BRIGHT) == [(640, det._full_session)]
    # a dark frame: the 1280 px native pass on the crop pass's fp32 session
    calls = _sessions_per_full_pass(det, DARK)
    assert calls[0] == (1280, None)
    assert all(session is None for _, session in calls)


def test_dark_precision_bf16_runs_the_native_pass_in_bf16_too():
    det = build_detectors(RedactionConfig(classes=("plate",), threads=1, text_full_precision="bf16",
                                          text_dark_precision="bf16").validate())["text"]
    if not bf16_supported():
        assert det.dark_precision == "fp32" and det._dark_session is None
        return
    assert det.dark_precision == "bf16" and det._dark_session is det._full_session
    assert _sessions_per_full_pass(det, DARK)[0] == (1280, det._full_session)
    # without a bf16 full pass there is no bf16 session to share: fp32 throughout
    fp32 = TextDetector(threads=1, lit_pass=True, full_precision="fp32", dark_precision="bf16")
    assert fp32.dark_precision == "fp32" and fp32._dark_session is None


@pytest.mark.parametrize("field", ["text_full_precision", "text_dark_precision"])
def test_bad_precision_names_the_field(field):
    with pytest.raises(Exception, match=f"{field}: expected fp32 or bf16"):
        RedactionConfig(**{field: "int4"}).validate()


def test_process_config_keys_reach_the_redaction_config_and_bad_values_name_the_key():
    from pipeline.process.plan import build_plan
    from schemas.config import parse_config
    from schemas.errors import ConfigError

    def redaction(process: dict[str, Any]) -> RedactionConfig:
        cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "process": process})
        return build_plan(cfg).default.redaction

    r = redaction({})
    assert (r.text_full_precision, r.text_dark_precision) == ("bf16", "fp32")
    r = redaction({"text_full_precision": "fp32", "text_dark_precision": "bf16"})
    assert (r.text_full_precision, r.text_dark_precision) == ("fp32", "bf16")
    for key in ("text_full_precision", "text_dark_precision"):
        with pytest.raises(ConfigError, match=f"process.{key}"):
            redaction({key: "int8"})


@pytest.mark.parametrize(("flag", "expected"), [(None, "bf16"), ("fp32", "fp32"), ("bf16", "bf16")])
def test_cli_precision_fp32_turns_the_text_pass_bf16_off_too(flag: str | None, expected: str) -> None:
    import argparse

    from pipeline.cli import _redaction_config

    args = argparse.Namespace(face_model=None, face_max_side=None, precision=flag, classes=["face", "plate"],
                              style="mosaic", detect_every=None, providers=None, model_dir=None)
    cfg = _redaction_config(args, 4)
    assert isinstance(cfg, RedactionConfig)
    assert cfg.text_full_precision == expected


def test_model_ids_stamp_the_precision_each_model_really_runs_in() -> None:
    from operators.redactor import Redactor

    red = Redactor(RedactionConfig(classes=("face", "plate"), threads=1).validate())
    ids = {m["id"]: m for m in red.model_ids}
    text = red.detectors["text"]
    assert isinstance(text, TextDetector)
    entry = ids[text.name]
    assert entry["version"] and entry["precision"] == text.precision
    assert entry["full_precision"] == text.full_precision == ("bf16" if bf16_supported() else "fp32")
    assert entry["dark_precision"] == text.dark_precision == "fp32"
    assert all(m.get("precision") in ("fp32", "bf16", "int8") for m in ids.values())
    # they travel as they are on the redacted topic (its schema takes string fields beside id),
    # and the sink copies them into the segment's manifest
    from schemas.messages import ChunkRedacted, decode_chunk_redacted, encode_chunk

    msg = ChunkRedacted(camera_id="cam-1", chunk_seq=0, pts_ms=(0,), fps=15.0, width=1280, height=720, codec="h264",
                        captured_at_ms=1_700_000_000_000, payload=b"x", models=tuple(red.model_ids))
    value, headers = encode_chunk(msg)
    back = decode_chunk_redacted(value, headers)
    assert [dict(m) for m in back.models] == red.model_ids
