"""Execution-provider choice: auto picks GPU providers when present, explicit missing ones fail."""

import onnxruntime as ort
import pytest

from operators import providers
from operators.providers import choose_providers, make_session
from operators.registry import resolve_model
from schemas.errors import ProviderError


@pytest.mark.parametrize("req", [None, [], "auto", ["auto"]])
def test_auto_ends_with_cpu(req):
    got = choose_providers(req)
    assert got[-1] == "CPUExecutionProvider"
    assert all(p in ort.get_available_providers() for p in got)


def test_auto_prefers_gpu_when_present(monkeypatch):
    monkeypatch.setattr(providers.ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert choose_providers(None) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("req", [["cpu"], ["CPU"], ["CPUExecutionProvider"], "cpu"])
def test_explicit_cpu(req):
    assert choose_providers(req) == ["CPUExecutionProvider"]


def test_missing_provider_lists_available(monkeypatch):
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError) as e:
        choose_providers(["cuda", "cpu"])
    assert "CUDAExecutionProvider" in str(e.value)
    assert "available: CPUExecutionProvider" in str(e.value)


def test_unknown_provider_name_fails():
    with pytest.raises(ProviderError, match="available"):
        choose_providers(["warp-drive"])


def test_make_session_threads():
    sess = make_session(resolve_model("ppocr_det", allow_download=False), ["cpu"], threads=1)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ProviderError):
        make_session(resolve_model("ppocr_det", allow_download=False), ["cpu"], threads=0)


def test_sessions_never_spin_wait():
    """Pool threads sleep between ops instead of busy-waiting on CPU other stages need."""
    sess = make_session(resolve_model("ppocr_det", allow_download=False), ["cpu"])
    opts = sess.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
