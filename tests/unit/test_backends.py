"""Inference backends: the automatic choice (GPU, else OpenVINO per model on CPU, else onnxruntime),
explicit requests that fail loudly, and OpenVINO agreeing with onnxruntime on real images."""

from __future__ import annotations

import numpy as np
import pytest

from operators import providers
from operators.ovsession import OPENVINO, OpenVinoSession
from operators.providers import backend_tag, choose_providers, make_session
from operators.registry import resolve_model
from operators.video import read_image
from schemas.errors import ProviderError
from tests.shared import EVAL

CPU = "CPUExecutionProvider"


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: ["AzureExecutionProvider", CPU])


@pytest.fixture
def wins(monkeypatch):
    monkeypatch.setattr(providers, "OPENVINO_WINS", frozenset({"centerface", "yunet_n_bf16"}))


@pytest.mark.parametrize("req", [None, [], "auto", ["auto"]])
def test_auto_on_cpu_picks_openvino_per_model_where_it_wins(cpu_only, wins, req):
    assert choose_providers(req, "centerface") == [OPENVINO]
    assert choose_providers(req, "yunet_n_bf16") == [OPENVINO]
    # measured not to win, an fp32 graph whose bf16 run wins, or not a registry model: onnxruntime
    assert choose_providers(req, "yolox_nano") == [CPU]
    assert choose_providers(req, "yunet_n") == [CPU]
    assert choose_providers(req, None) == [CPU]


def test_auto_runs_the_measured_winners_on_openvino(cpu_only):
    """The shipped table: the PP-OCR text detectors on OpenVINO, the face and person ones on onnxruntime."""
    from operators.detectors import TextDetector, YuNetDetector

    assert TextDetector(threads=1).providers == [OPENVINO]
    assert TextDetector("ppocr_det", precision="fp32", threads=1).providers == [OPENVINO]
    assert TextDetector("ppocr_det", precision="int8", threads=1).providers == [CPU]  # int8: not evaluated
    assert YuNetDetector(threads=1).providers == [CPU]
    assert [choose_providers(None, m) for m in ("centerface", "yolox_nano")] == [[CPU], [CPU]]


def test_auto_without_openvino_installed_is_onnxruntime(cpu_only, wins, monkeypatch):
    monkeypatch.setattr(providers, "openvino_available", lambda: False)
    assert choose_providers(None, "centerface") == [CPU]


def test_auto_prefers_gpu_providers_over_openvino(wins, monkeypatch):
    monkeypatch.setattr(providers.ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU])
    assert choose_providers(None, "centerface") == ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]


@pytest.mark.parametrize("req", ["openvino", ["openvino"], ["OpenVINO"], "ov"])
def test_explicit_openvino(cpu_only, req):
    assert choose_providers(req, "yolox_nano") == [OPENVINO]  # every model, measured winner or not
    assert choose_providers(req) == [OPENVINO]


def test_explicit_openvino_missing_lists_the_available(cpu_only, monkeypatch):
    monkeypatch.setattr(providers, "openvino_available", lambda: False)
    with pytest.raises(ProviderError) as e:
        choose_providers(["openvino"])
    msg = str(e.value)
    assert "'openvino'" in msg and f"available: AzureExecutionProvider, {CPU}" in msg and "openvino package" in msg


def test_missing_gpu_lists_openvino_among_the_available(cpu_only):
    with pytest.raises(ProviderError, match=f"available: AzureExecutionProvider, {CPU}, openvino"):
        choose_providers(["cuda"])


def test_openvino_is_not_combined_with_onnxruntime_providers(cpu_only):
    with pytest.raises(ProviderError, match="cannot be combined"):
        choose_providers(["openvino", "cpu"])


def test_eval_cache_key_names_the_backend(cpu_only, wins):
    from operators import evalcache
    from operators.redactor import RedactionConfig

    sig = {p: {k: c.signature for k, c in evalcache.components(RedactionConfig(providers=p)).items()}
           for p in (("cpu",), ("openvino",), None)}
    assert sig[("cpu",)].keys() == sig[("openvino",)].keys()
    assert all(sig[("cpu",)][k] != sig[("openvino",)][k] for k in sig[("cpu",)])
    # auto: OpenVINO's boxes for centerface (a winner here), onnxruntime's (shared cache) for the rest
    assert sig[None]["centerface"] == sig[("openvino",)]["centerface"]
    assert sig[None]["yolox"] == sig[("cpu",)]["yolox"]
    assert backend_tag(("cpu",), "centerface") is None
    assert backend_tag(("openvino",), "yolox_nano").startswith("openvino-2")


def test_threads_reach_openvino():
    path = resolve_model("yunet_n", allow_download=False)
    sess = make_session(path, "openvino", threads=1)
    assert isinstance(sess, OpenVinoSession) and sess.get_providers() == [OPENVINO]
    assert sess._compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(sess._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    with pytest.raises(ProviderError):
        make_session(path, "openvino", threads=0)


def test_detector_threads_and_precision_reach_openvino():
    from operators.detectors import YuNetDetector

    det = YuNetDetector(providers="openvino", threads=1)
    assert det.providers == [OPENVINO] and det.precision == "fp32" and det.batch_size == 1
    assert det.session._compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_schema_accepts_openvino_and_bf16():
    from schemas.config import parse_config

    cfg = parse_config({"ray": {"detector": {"providers": ["openvino"], "threads": 2}},
                        "process": {"precision": "bf16"}})
    assert cfg.ray.detector.providers == ("openvino",) and cfg.process.precision == "bf16"


# ------------------------------------------------------------------ agreement on real images

IMAGES = {"face": "faces_dlib/2008_002470.jpg", "coco": "coco_val2017/images/000000000139.jpg",
          "plate": "plates_eu/eu1.jpg"}


def _images(*keys):
    out = []
    for k in keys:
        p = EVAL / IMAGES[k]
        if not p.is_file():
            pytest.fail(f"eval image {p} missing: shared/eval must be beside the repository")
        out.append(read_image(p))
    return out


def _iou(a, b):
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


class _Recorder:
    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def run(self, names, feed):
        self.calls.append((names, {k: v.copy() for k, v in feed.items()}))
        return self.inner.run(names, feed)


def _cases():
    from operators.detectors import (
        CenterFaceDetector,
        TextDetector,
        YoloxPersonDetector,
        YuNetDetector,
    )

    return [("centerface", CenterFaceDetector, {}, ("face", "coco")),
            ("yunet", YuNetDetector, {}, ("face", "coco")),
            ("yolox", YoloxPersonDetector, {"vehicles": True}, ("coco", "plate")),
            ("ppocr_v5", TextDetector, {"max_side": 640}, ("plate", "coco"))]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_openvino_agrees_with_onnxruntime_on_real_images(case):
    _, factory, kw, keys = case
    ort_det = factory(providers="cpu", threads=1, **kw)
    ov_det = factory(providers="openvino", threads=1, **kw)
    assert ort_det.providers == [CPU] and ov_det.providers == [OPENVINO]
    assert ort_det.model_sha256 == ov_det.model_sha256  # the same graph
    found = 0
    for img in _images(*keys):
        rec = _Recorder(ort_det.session)
        ort_det.session = rec
        a = ort_det.detect(img[None])[0]
        ort_det.session = rec.inner
        b = ov_det.detect(img[None])[0]
        # the networks' outputs, on the very inputs the detector fed, in onnxruntime's order
        for names, feed in rec.calls:
            for x, y in zip(rec.inner.run(names, feed), ov_det.session.run(names, feed)):
                assert x.shape == y.shape
                np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-3)
        # and the boxes: same count, same labels, each matched at IoU >= 0.99
        assert len(a) == len(b)
        found += len(a)
        if len(a):
            assert sorted(a.label.tolist()) == sorted(b.label.tolist())
            iou = _iou(a.xyxy, b.xyxy)
            assert (iou.max(1) >= 0.99).all() and (iou.max(0) >= 0.99).all(), iou.max(1)
            np.testing.assert_allclose(np.sort(b.score), np.sort(a.score), atol=1e-3)
    assert found > 0  # the images do hold something to find


def test_recurring_shapes_get_a_static_compile_and_one_offs_do_not(monkeypatch):
    from operators import ovsession

    monkeypatch.setattr(ovsession, "STATIC_SHAPES", 1)
    sess = make_session(resolve_model("yunet_n", allow_download=False), "openvino", threads=1)
    sess.synchronous_compile = True
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 64, 96)).astype(np.float32)
    outs = []
    for _ in range(ovsession.STATIC_AFTER):
        assert not sess._static  # served by the dynamic model until the shape recurs
        outs.append(sess.run(None, {name: x}))
    assert list(sess._static) == [((name, (1, 3, 64, 96)),)] and sess.static_compile_s > 0
    outs.append(sess.run(None, {name: x}))  # the static model
    for a, b in zip(outs[0], outs[-1]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    y = np.zeros((1, 3, 32, 32), np.float32)
    for _ in range(ovsession.STATIC_AFTER + 1):  # no slot left: never compiled, still served
        assert [o.shape[0] for o in sess.run(None, {name: y})] == [1] * len(outs[0])
    assert len(sess._static) == 1


# ------------------------------------------------------------------ the setting reaches the pipeline


def test_ray_detector_actor_runs_the_configured_backend_and_threads():
    from pipeline.process.actors import DetectorActor
    from pipeline.process.plan import build_plan
    from schemas.config import parse_config

    cfg = parse_config({"ray": {"detector": {"providers": ["openvino"], "threads": 1}},
                        "process": {"classes": ["face", "plate"]}})
    actor = DetectorActor(build_plan(cfg))  # the class Ray wraps: what each detector actor builds
    sessions = [part.session for d in actor.redactor.detectors.values()
                for part in (getattr(d, "components", None) or {"": d}).values()]
    assert len(sessions) >= 3  # centerface, yunet, yolox, text
    assert all(isinstance(s, OpenVinoSession) and s.threads == 1 for s in sessions)
    assert all(s._compiled.get_property("INFERENCE_NUM_THREADS") == 1 for s in sessions)


def test_redact_cli_takes_the_backend(tmp_path, capsys, monkeypatch):
    from pipeline.cli import main

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes((EVAL / IMAGES["face"]).read_bytes())
    assert main(["redact", str(src), "-o", str(tmp_path / "out"), "--providers", "openvino", "--classes", "face",
                 "--face-model", "yunet"]) == 0
    assert (tmp_path / "out" / "a.jpg").is_file()
    monkeypatch.setattr(providers, "openvino_available", lambda: False)
    assert main(["redact", str(src), "-o", str(tmp_path / "out2"), "--providers", "openvino", "--classes", "face",
                 "--face-model", "yunet"]) == 2
    assert "not available" in capsys.readouterr().err


def test_bf16_runs_where_asked_and_measured_to_hold(cpu_only, monkeypatch):
    from operators.providers import runs_bf16

    monkeypatch.setattr(providers, "bf16_supported", lambda: True)
    # auto: the face detectors (eval unchanged in bf16); not the text or person ones (plates leaked more)
    assert runs_bf16(None, "centerface", "bf16") and runs_bf16(None, "yunet_n", "bf16")
    assert not runs_bf16(None, "ppocr_det_v5", "bf16") and not runs_bf16(None, "yolox_nano", "bf16")
    assert runs_bf16("openvino", "yolox_nano", "bf16")  # asked for OpenVINO: every model
    assert not runs_bf16(None, "centerface", "fp32") and not runs_bf16("cpu", "centerface", "bf16")
    monkeypatch.setattr(providers, "bf16_supported", lambda: False)  # no AMX / AVX-512 BF16: fp32
    assert not runs_bf16("openvino", "centerface", "bf16")


def test_detectors_under_precision_bf16(cpu_only):
    from operators.detectors import TextDetector, YuNetDetector
    from operators.ovsession import bf16_supported

    face, text = YuNetDetector(precision="bf16", threads=1), TextDetector(precision="bf16", threads=1)
    assert text.providers == [OPENVINO] and text.precision == "fp32"  # its fp32 win, not bf16
    if bf16_supported():
        assert face.providers == [OPENVINO] and face.precision == "bf16" and face.model_name == "yunet_n_bf16"
        assert str(face.session._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
    else:
        assert face.providers == [CPU] and face.precision == "fp32"


def test_text_full_pass_in_bf16_keeps_the_crop_pass_fp32(cpu_only):
    """``full_precision: bf16``: a second, bf16 session serves the full-frame pass only (the crop
    and lit-plate passes stay on the fp32 one); on a CPU without native bf16, fp32 throughout."""
    from operators.detectors import TextDetector
    from operators.ovsession import bf16_supported
    from operators.types import Boxes, Label

    fp32 = TextDetector(threads=1, crops=True)
    both = TextDetector(threads=1, crops=True, full_precision="bf16")
    assert fp32.full_precision == "fp32" and fp32._full_session is None
    assert both.precision == "fp32" and both.providers == [OPENVINO]
    assert str(both.session._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"
    if not bf16_supported():
        assert both.full_precision == "fp32" and both._full_session is None
        return
    assert both.full_precision == "bf16"
    assert str(both._full_session._compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
    img = _images("plate")[0][None]
    a, b = fp32.detect(img)[0], both.detect(img)[0]
    assert len(a) and len(a) == len(b)  # the plate's characters, found by both
    # the crop pass is fp32's exactly
    car = Boxes.of([[0, 0, img.shape[2], img.shape[1]]], [0.9], Label.VEHICLE)
    ca, cb = fp32.detect_crops(img, [car])[0], both.detect_crops(img, [car])[0]
    assert np.array_equal(ca.xyxy, cb.xyxy) and np.array_equal(ca.score, cb.score)
