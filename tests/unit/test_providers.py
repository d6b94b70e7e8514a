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


class _FakeSession:
    """Stands in for onnxruntime.InferenceSession: a GPU provider list fails as on a pod without a GPU."""

    calls: list[list[str]] = []

    def __init__(self, src, sess_options=None, providers=()):
        _FakeSession.calls.append(list(providers))
        if providers != ["CPUExecutionProvider"]:
            raise RuntimeError("/onnxruntime_src/.../cuda_call.cc:122 std::conditional_t<THRW, void> CudaCall(...) "
                               "CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version ; "
                               "GPU=-1 ; hostname=x ; file=cuda_execution_provider.cc ; line=336")
        self._providers = list(providers)

    def get_providers(self):
        return self._providers


def test_auto_runs_on_cpu_with_one_clear_warning_when_the_gpu_cannot_start(monkeypatch, caplog):
    monkeypatch.setattr(providers.ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(providers.ort, "InferenceSession", _FakeSession)
    _FakeSession.calls = []
    with caplog.at_level("WARNING", logger="operators.providers"):
        sess = make_session(b"model", None)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert _FakeSession.calls == [["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                                  ["CPUExecutionProvider"]]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "TensorrtExecutionProvider,CUDAExecutionProvider could not start (CUDA failure 35: CUDA driver version " \
           "is insufficient for CUDA runtime version): running on CPUExecutionProvider" in warning
    # an explicit request is never quietly moved to CPU
    with pytest.raises(RuntimeError, match="CUDA failure 35"):
        make_session(b"model", ["cuda"])
