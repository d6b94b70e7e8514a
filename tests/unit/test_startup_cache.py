"""Start-up cost of the detectors: no ``onnx`` import on the start path, the dynamic-dims graphs
cached on disk (content-addressed), and OpenVINO's compiled models cached beside them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from operators.detectors._common import dynamic_model, dynamic_model_bytes
from operators.registry import resolve_model, sha256_of
from tests.shared import MODELS

ROOT = Path(__file__).resolve().parents[2]
CF_IN = {"input.1": ["B", 3, "H", "W"]}
CF_OUT = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]}


def _child(code: str, cache: Path) -> dict[str, object]:
    env = dict(os.environ, VEILSTREAM_CACHE_DIR=str(cache), VEILSTREAM_MODEL_DIR=str(MODELS))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


BUILD = """
import json, sys
import operators.detectors
imported = 'onnx' in sys.modules or 'ml_dtypes' in sys.modules
from operators.detectors.centerface import CenterFaceDetector
from operators.detectors.yolox import YoloxPersonDetector
CenterFaceDetector(); YoloxPersonDetector()
print(json.dumps({"at_import": imported, "after_build": 'onnx' in sys.modules or 'ml_dtypes' in sys.modules}))
"""


def test_detectors_import_without_onnx_and_a_warm_start_never_imports_it(tmp_path):
    cold = _child(BUILD, tmp_path)
    assert cold == {"at_import": False, "after_build": True}  # the first start derives the graphs
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "dynamic").iterdir()) == ["centerface", "yolox_nano"]
    warm = _child(BUILD, tmp_path)
    assert warm == {"at_import": False, "after_build": False}


def test_dynamic_model_is_cached_by_content_and_dims(tmp_path):
    path = resolve_model("centerface", model_dir=MODELS)
    digest = sha256_of(path)
    got = dynamic_model(path, CF_IN, CF_OUT, digest=digest, name="centerface", cache_dir=tmp_path)
    assert isinstance(got, Path) and got.parent == tmp_path / "dynamic"
    assert got.read_bytes() == dynamic_model_bytes(path, CF_IN, CF_OUT)
    assert dynamic_model(path, CF_IN, CF_OUT, digest=digest, name="centerface", cache_dir=tmp_path) == got
    # other dims, or another model's digest: another file, never the cached one
    fixed = dynamic_model(path, {"input.1": ["N", 3, "H", "W"]}, CF_OUT, digest=digest, name="centerface",
                          cache_dir=tmp_path)
    other = dynamic_model(path, CF_IN, CF_OUT, digest="0" * 64, name="centerface", cache_dir=tmp_path)
    assert len({got, fixed, other}) == 3
    assert fixed.read_bytes() != got.read_bytes()  # type: ignore[union-attr]


def test_dynamic_model_without_a_writable_cache_is_derived_in_memory(tmp_path, caplog):
    path = resolve_model("yolox_nano", model_dir=MODELS)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="operators.quantize"):
        got = dynamic_model(path, {"images": ["B", 3, "H", "W"]}, {"output": ["B", "N", 85]},
                            digest=sha256_of(path), cache_dir=blocker)
    assert isinstance(got, bytes)
    assert got == dynamic_model_bytes(path, {"images": ["B", 3, "H", "W"]}, {"output": ["B", "N", 85]})
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "not cached" in caplog.records[0].getMessage()


@pytest.mark.parametrize("model", ["centerface", "yolox"])
def test_detections_from_the_cached_graph_equal_the_in_memory_graph(model, tmp_path, monkeypatch):
    from operators.detectors.centerface import CenterFaceDetector
    from operators.detectors.yolox import YoloxPersonDetector
    from operators.video import read_image
    from tests.shared import EVAL

    img = read_image(sorted((EVAL / "coco_val2017").rglob("*.jpg"))[0])[None]
    make = {"centerface": CenterFaceDetector, "yolox": YoloxPersonDetector}[model]
    monkeypatch.setenv("VEILSTREAM_CACHE_DIR", str(tmp_path))
    cached = make(model_dir=MODELS, providers="cpu")
    assert isinstance(cached._graph, Path)
    from operators.detectors import centerface, yolox

    for module in (centerface, yolox):  # the graph derived in memory, as before the cache
        monkeypatch.setattr(module, "dynamic_model", lambda path, i, o, **kw: dynamic_model_bytes(path, i, o))
    fresh = make(model_dir=MODELS, providers="cpu")
    assert isinstance(fresh._graph, bytes)
    assert cached.model_sha256 == fresh.model_sha256
    a, b = cached.detect(img)[0], fresh.detect(img)[0]
    assert len(a.xyxy) > 0
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.score, b.score)
