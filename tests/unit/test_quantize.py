"""INT8 detector models: exact graph folding, agreement with fp32, the setting, cache keys."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from operators import evalcache
from operators.detectors import CenterFaceDetector, TextDetector
from operators.quantize import calibrations, fold_affine
from operators.redactor import RedactionConfig
from operators.registry import MODELS, resolve_model
from operators.types import ConfigError, ModelNotFoundError
from pipeline.process.plan import build_plan
from schemas.config import parse_config


def _affine_graph() -> onnx.ModelProto:
    """x -> Conv 3x3 (pad 1) -> *a +c -> Relu -> *a2 +c2 -> Conv 1x1 (no pad) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in {
        "w1": rng.normal(size=(4, 3, 3, 3)), "b1": rng.normal(size=4), "w2": rng.normal(size=(2, 4, 1, 1)),
        "a": np.array(1.7), "c": np.array(-0.3), "a2": np.array(0.6), "c2": np.array(0.25)}.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["t1"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["t1", "a"], ["t2"]), helper.make_node("Add", ["t2", "c"], ["t3"]),
             helper.make_node("Relu", ["t3"], ["t4"]),
             helper.make_node("Mul", ["a2", "t4"], ["t5"]), helper.make_node("Add", ["t5", "c2"], ["t6"]),
             helper.make_node("Conv", ["t6", "w2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(s.run(None, {"x": x})[0])


def test_fold_affine_is_exact():
    m = _affine_graph()
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    ref = _run(m, x)
    assert fold_affine(m) == 2
    assert [n.op_type for n in m.graph.node] == ["Conv", "Relu", "Conv"]
    np.testing.assert_allclose(_run(m, x), ref, rtol=1e-5, atol=1e-5)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _agree(fp32: np.ndarray, int8: np.ndarray) -> None:
    assert len(fp32) >= 1, "the fp32 detector found nothing: the frame does not test agreement"
    for box in fp32:
        assert max((_iou(box, q) for q in int8), default=0.0) >= 0.7, (fp32, int8)


def test_int8_text_detector_agrees_with_fp32(tmp_path, monkeypatch):
    monkeypatch.setenv("VEILSTREAM_CACHE_DIR", str(tmp_path))
    # Plate-like text on a noisy synthetic frame.
    rng = np.random.default_rng(3)
    frame = np.clip(rng.normal(150, 12, (360, 640, 3)), 0, 255).astype(np.uint8)
    cv2.rectangle(frame, (180, 150), (470, 220), (245, 245, 245), -1)
    cv2.putText(frame, "KA 4721 B", (195, 203), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (20, 20, 20), 4)
    fp, q = (TextDetector("ppocr_det", precision=p, threads=1) for p in ("fp32", "int8"))  # v4: calibrated
    assert (fp.precision, q.precision) == ("fp32", "int8") and q.model_sha256 != fp.model_sha256
    _agree(fp.detect(frame[None])[0].xyxy, q.detect(frame[None])[0].xyxy)
    blob = np.zeros((1, 384, 640, 3), np.uint8)  # the net takes multiples of 32
    blob[0, :360] = frame
    assert float(np.abs(fp._run(blob) - q._run(blob)).mean()) < 0.01  # probability maps
    assert len(list((tmp_path / "int8").glob("ppocr_det-*.onnx"))) == 1  # derived once, cached
    # An unwritable cache: the int8 model is derived in memory (same weights), never an error.
    monkeypatch.setenv("VEILSTREAM_CACHE_DIR", "/proc/veil-no-cache")
    again = TextDetector("ppocr_det", precision="int8", threads=1)
    assert (again.precision, again.model_sha256) == ("int8", q.model_sha256)
    # No calibration ships for CenterFace or PP-OCRv5 (they leaked more in int8): fp32 under int8.
    assert CenterFaceDetector(precision="int8", threads=1).precision == "fp32"
    v5 = TextDetector("ppocr_det_v5", precision="int8", threads=1)
    assert v5.precision == "fp32" and v5.model_sha256 != v5.fp32_sha256  # its folded fp32 graph


def test_precision_setting_validates():
    with pytest.raises(ConfigError, match=r"precision: expected one of fp32, int8, bf16, got 'fp16'"):
        RedactionConfig(precision="fp16").validate()
    with pytest.raises(ConfigError, match="precision"):
        CenterFaceDetector(precision="int4")
    with pytest.raises(ConfigError, match="process.precision"):
        parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "process": {"precision": "fp16"}})
    raw = {"kafka": {"bootstrap_servers": "127.0.0.1:9"}, "process": {"precision": "fp32"}}
    assert build_plan(parse_config(raw)).detector.precision == "fp32"
    assert RedactionConfig().precision == "int8"


def test_int8_gets_its_own_eval_cache_key_and_registry_entry():
    sig = {p: {k: c.signature for k, c in evalcache.components(RedactionConfig(precision=p, text_model="ppocr_det"))
               .items()} for p in ("fp32", "int8")}
    assert set(sig["fp32"]) == {"centerface", "yunet", "yolox", "text_full", "text_crops"}
    for key in ("text_full", "text_crops"):
        assert sig["int8"][key] != sig["fp32"][key]
    for key in ("centerface", "yunet", "yolox"):  # no int8 model: they share the fp32 cache
        assert sig["int8"][key] == sig["fp32"][key]
    # every shipped calibration belongs to a registry model and was not computed on eval data
    by_sha = {spec.sha256: n for n, spec in MODELS.items() if spec.sha256}
    assert {c.model for c in calibrations().values()} == {"ppocr_det"}
    for sha, cal in calibrations().items():
        assert by_sha.get(sha) == cal.model and cal.ranges and "never eval data" in cal.source
    v5 = {p: {k: c.signature for k, c in evalcache.components(RedactionConfig(precision=p)).items()}
          for p in ("fp32", "int8")}
    assert v5["int8"] == v5["fp32"]  # the default PP-OCRv5 has no int8 model
    spec = MODELS["ppocr_det_int8"]
    assert spec.derived_from == "ppocr_det" and spec.licence and MODELS["ppocr_det"].licence in spec.licence
    with pytest.raises(ModelNotFoundError, match="derived from 'ppocr_det'"):
        resolve_model("ppocr_det_int8")
