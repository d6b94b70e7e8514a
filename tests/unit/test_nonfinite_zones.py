"""NaN and infinite numbers (YAML ``.nan`` / ``.inf``, JSON ``NaN`` / ``Infinity``) are
refused where a document is parsed: JSON Schema's ``type: number`` and ``minimum`` let
them through, and a zone polygon with a NaN vertex used to pass ``veilstream policy
check`` and fail only later, inside the pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from operators.codec import encode_jpeg_frames
from schemas import problems
from schemas.config import parse_camera, parse_config
from schemas.errors import ConfigError, SchemaError
from schemas.messages import HEADER_META, ChunkCaptured, decode_chunk_captured, encode_chunk
from schemas.policy import parse_policy

ROOT = Path(__file__).resolve().parents[2]

POLICY = """\
policy_id: lobby
version: 1
classes: [face]
zones:
  - name: door
    polygon: [[0, 0], [0.5, 0], [0.5, 0.5]]
    normalized: true
  - name: till
    polygon: [[0.1, 0.1], [{x}, 0.2], [0.3, 0.9]]
    normalized: true
"""


@pytest.mark.parametrize("x", [".nan", ".inf", "-.inf", ".NaN"])
def test_policy_check_refuses_a_non_finite_vertex_naming_the_zone_and_path(tmp_path: Path, x: str) -> None:
    (tmp_path / "lobby.yaml").write_text(POLICY.format(x=x))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "policy", "check", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "policy ok" not in proc.stdout
    bad = [ln for ln in proc.stderr.splitlines() if "zones[1].polygon[1][0]" in ln]
    assert len(bad) == 1 and "zone 'till'" in bad[0] and "finite" in bad[0], proc.stderr


def test_a_finite_policy_still_passes(tmp_path: Path) -> None:
    (tmp_path / "lobby.yaml").write_text(POLICY.format(x="0.2"))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "policy", "check", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and "policy ok: lobby" in proc.stdout, proc.stderr


def test_the_parse_layer_the_pipeline_uses_refuses_them() -> None:
    zone = {"name": "till", "polygon": [[0, 0], [float("nan"), 0], [1, 1]], "normalized": True}
    with pytest.raises(ConfigError, match=r"zones\[0\]\.polygon\[1\]\[0\]: expected a finite number, got nan "
                                          r"\(zone 'till'\)"):
        parse_policy({"policy_id": "p", "version": 1, "classes": ["face"], "zones": [zone]})
    with pytest.raises(ConfigError, match=r"zones\[0\]\.polygon\[1\]\[0\]"):
        parse_camera({"camera_id": "cam-1", "url": "rtsp://cam/x", "zones": [zone]})
    with pytest.raises(ConfigError, match=r"process\.padding.*finite"):
        parse_config({"process": {"padding": float("inf")}})
    assert problems("policy", {"policy_id": "p", "version": 1, "classes": ["face"]}) == []


def test_a_chunk_message_with_a_nan_zone_or_rate_is_refused_at_decode() -> None:
    msg = ChunkCaptured(camera_id="cam-1", chunk_seq=0, pts_ms=(0, 40), fps=25.0, width=32, height=32,
                        codec="jpeg", captured_at_ms=1_700_000_000_000,
                        payload=encode_jpeg_frames(np.zeros((2, 32, 32, 3), np.uint8)))
    value, headers = encode_chunk(msg)

    def tampered(**changes: object) -> list[tuple[str, bytes]]:
        meta = json.loads(dict(headers)[HEADER_META])
        meta.update(changes)
        return [(k, json.dumps(meta).encode() if k == HEADER_META else v) for k, v in headers]  # NaN literals

    nan_zone = [{"name": "door", "polygon": [[0, 0], [1, float("nan")], [1, 1]]}]
    with pytest.raises(SchemaError, match=r"zones\[0\]\.polygon\[1\]\[1\].*zone 'door'"):
        decode_chunk_captured(value, tampered(zones=nan_zone))
    with pytest.raises(SchemaError, match=r"fps: expected a finite number"):
        decode_chunk_captured(value, tampered(fps=float("nan")))
    with pytest.raises(SchemaError, match="finite"):
        encode_chunk(replace(msg, zones=tuple(nan_zone)))
    assert decode_chunk_captured(value, headers).fps == 25.0
