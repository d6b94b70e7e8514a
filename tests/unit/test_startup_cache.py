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


# --- OpenVINO compiled-model cache ---------------------------------------------------------------


def _conv_model(path: Path, seed: int) -> Path:
    """A small dynamic-shape Conv+Relu graph; ``seed`` picks its weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "H", "W"])], [w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


X = np.random.default_rng(7).normal(size=(1, 3, 48, 64)).astype(np.float32)


def _out(session: object, x: np.ndarray = X) -> np.ndarray:
    return session.run(None, {"x": x})[0]  # type: ignore[attr-defined, no-any-return]


def test_compiled_models_come_from_the_cache_with_identical_outputs(tmp_path):
    from operators.ovsession import STATIC_AFTER, BlobCache, OpenVinoSession

    model = _conv_model(tmp_path / "m.onnx", 0)
    plain = OpenVinoSession(model, 1, cache=False)
    plain.synchronous_compile = True
    ref = [_out(plain) for _ in range(STATIC_AFTER + 1)]  # the last one on the static-shape model
    assert len(plain._static) == 1
    for run in range(2):
        cache = BlobCache(tmp_path / "ov")
        s = OpenVinoSession(model, 1, cache=cache)
        s.synchronous_compile = True
        got = [_out(s) for _ in range(STATIC_AFTER + 1)]
        assert len(s._static) == 1
        for a, b in zip(ref, got, strict=True):
            np.testing.assert_array_equal(a, b)
        assert s.get_inputs() == plain.get_inputs() and s.get_outputs() == plain.get_outputs()
        # first run: the dynamic and the static compile are stored; second: both imported
        assert (cache.hits, cache.misses) == ((0, 2) if run == 0 else (2, 0))
        assert run == 0 or s._graph_obj is None  # every compile hit: the graph was never read
    assert sorted(p.suffix for p in (tmp_path / "ov").iterdir()) == [".blob", ".blob"]


def test_a_changed_model_or_precision_never_loads_a_stale_blob(tmp_path):
    from operators.ovsession import BlobCache, OpenVinoSession, bf16_supported

    a, b = _conv_model(tmp_path / "a.onnx", 0), _conv_model(tmp_path / "b.onnx", 1)
    cache = BlobCache(tmp_path / "ov")
    out_a = _out(OpenVinoSession(a, 1, cache=cache))
    # the same file name with other weights (a model replaced in place), then another precision
    b.replace(a)
    out_b = _out(OpenVinoSession(a, 1, cache=cache))
    np.testing.assert_array_equal(out_b, _out(OpenVinoSession(a, 1, cache=False)))
    assert not np.array_equal(out_a, out_b)
    out_bf16 = _out(OpenVinoSession(a, 1, "bf16", cache=cache))
    np.testing.assert_array_equal(out_bf16, _out(OpenVinoSession(a, 1, "bf16", cache=False)))
    assert cache.hits == 0 and cache.misses == 3
    if bf16_supported():  # elsewhere the plugin runs bf16 as f32
        assert not np.array_equal(out_bf16, out_b)
    # threads are part of the compile config, so of the key
    OpenVinoSession(a, 2, cache=cache)
    assert cache.misses == 4


def test_an_unwritable_cache_dir_warns_once_and_compiles(tmp_path, caplog):
    from operators import ovsession

    model = _conv_model(tmp_path / "m.onnx", 0)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    ref = _out(ovsession.OpenVinoSession(model, 1, cache=False))
    with caplog.at_level(logging.WARNING, logger="operators.ovsession"):
        for _ in range(2):
            s = ovsession.OpenVinoSession(model, 1, cache=ovsession.BlobCache(blocker / "ov"))
            np.testing.assert_array_equal(_out(s), ref)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not cached" in warnings[0]


def test_a_corrupt_blob_is_compiled_anew(tmp_path, caplog):
    from operators.ovsession import BlobCache, OpenVinoSession

    model = _conv_model(tmp_path / "m.onnx", 0)
    ref = _out(OpenVinoSession(model, 1, cache=BlobCache(tmp_path / "ov")))
    (blob,) = (tmp_path / "ov").iterdir()
    blob.write_bytes(blob.read_bytes()[:1000])  # a truncated blob (a disk filled up)
    cache = BlobCache(tmp_path / "ov")
    with caplog.at_level(logging.WARNING, logger="operators.ovsession"):
        np.testing.assert_array_equal(_out(OpenVinoSession(model, 1, cache=cache)), ref)
    assert cache.misses == 1 and "unreadable" in caplog.text
    assert len(blob.read_bytes()) > 1000  # stored again, whole


def test_a_writer_killed_mid_write_leaves_no_lasting_litter(tmp_path):
    from operators.ovsession import BlobCache, OpenVinoSession

    (tmp_path / "ov").mkdir()
    old, fresh = tmp_path / "ov" / ".abc.x1.tmp", tmp_path / "ov" / ".abc.x2.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(old, (os.path.getmtime(old) - 7200,) * 2)
    OpenVinoSession(_conv_model(tmp_path / "m.onnx", 0), 1, cache=BlobCache(tmp_path / "ov"))
    assert not old.exists() and fresh.exists()  # a fresh one may be another process's write


def test_processes_starting_together_share_the_cache_safely(tmp_path):
    model = _conv_model(tmp_path / "m.onnx", 0)
    code = f"""
import json, sys, numpy as np
from operators.ovsession import STATIC_AFTER, BlobCache, OpenVinoSession
s = OpenVinoSession({str(model)!r}, 1, cache=BlobCache({str(tmp_path / 'ov')!r}))
s.synchronous_compile = True
x = np.random.default_rng(7).normal(size=(1, 3, 48, 64)).astype(np.float32)
outs = [s.run(None, {{"x": x}})[0] for _ in range(STATIC_AFTER + 1)]
print(json.dumps([float(np.abs(o).sum()) for o in outs] + [len(s._static)]))
"""
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r == results[0] for r in results) and results[0][-1] == 1
    names = sorted(p.name for p in (tmp_path / "ov").iterdir())
    assert len(names) == 2 and all(n.endswith(".blob") and not n.startswith(".") for n in names)


def test_text_detector_from_cached_compiles_finds_the_same_boxes(tmp_path, monkeypatch):
    from operators.detectors.text import TextDetector
    from operators.video import read_image
    from tests.shared import EVAL

    monkeypatch.setenv("VEILSTREAM_CACHE_DIR", str(tmp_path))
    img = read_image(sorted((EVAL / "plates_eu").rglob("*.jpg"))[0])[None]
    cold = TextDetector(model_dir=MODELS)
    blobs = sorted((tmp_path / "openvino").iterdir())
    assert blobs and cold.providers == ["openvino"]
    warm = TextDetector(model_dir=MODELS)
    assert sorted((tmp_path / "openvino").iterdir()) == blobs  # nothing compiled anew
    assert warm._graph == cold._graph
    a, b = cold.detect(img)[0], warm.detect(img)[0]
    assert len(a.xyxy) > 0
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.score, b.score)
