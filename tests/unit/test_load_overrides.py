"""`make load LOAD_ARGS="--set KEY.PATH=VALUE"`: settings written into the run's config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "load_tests"))
from pipeline_load import apply_overrides  # noqa: E402


def test_dotted_keys_get_yaml_values_and_keep_the_rest():
    raw = {"ray": {"address": "x", "detector": {"replicas": 1}}}
    apply_overrides(raw, ["ray.detector.replicas=2", "ray.detector.threads=1", "process.face_model=centerface",
                          "process.detect_every=8"])
    assert raw == {"ray": {"address": "x", "detector": {"replicas": 2, "threads": 1}},
                   "process": {"face_model": "centerface", "detect_every": 8}}


def test_a_setting_without_a_value_says_what_is_expected():
    with pytest.raises(SystemExit, match="expected KEY.PATH=VALUE"):
        apply_overrides({}, ["ray.detector.replicas"])
