"""Start-up of the detectors: the warm-up's size per provider, and ``build_detectors`` on threads."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

import operators.detectors as detectors_pkg
from operators.detectors import (
    CenterFaceDetector,
    TextDetector,
    YoloxPersonDetector,
    YuNetDetector,
    _base,
)
from operators.detectors._base import CPU_WARMUP_HW, OnnxDetector
from operators.redactor import RedactionConfig, build_detectors
from operators.types import Boxes


def _record_detect(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    real = OnnxDetector.detect

    def detect(self: OnnxDetector, frames: Any) -> list[Boxes]:
        shapes.append(tuple(frames.shape))
        return real(self, frames)

    monkeypatch.setattr(OnnxDetector, "detect", detect)
    return shapes


@pytest.mark.parametrize("cls", [CenterFaceDetector, YuNetDetector, YoloxPersonDetector, TextDetector])
def test_cpu_warm_up_is_one_tiny_pass_per_session(monkeypatch, cls):
    shapes = _record_detect(monkeypatch)
    det = cls(providers=["cpu"])
    # one pass per session (the text detector's bf16 full-frame session warms up too), all tiny
    assert shapes, "the warm-up must run the graph once at start"
    assert set(shapes) == {(1, *CPU_WARMUP_HW, 3)}
    assert len(shapes) == (2 if getattr(det, "_full_session", None) is not None else 1)
    # and the detector still works at a real size after it
    out = det.detect(np.zeros((1, 720, 1280, 3), np.uint8))
    assert len(out) == 1


def test_gpu_providers_keep_the_full_warm_up(monkeypatch):
    # on a GPU provider the first call builds kernels / engines: the full-size warm-up stays
    shapes = _record_detect(monkeypatch)
    monkeypatch.setattr(_base, "on_cpu", lambda providers: False)
    YoloxPersonDetector(providers=["cpu"])
    assert shapes == [(1, 360, 640, 3)]


def test_a_model_failing_at_its_first_call_fails_the_build(monkeypatch):
    def broken(self: Any, frames: Any) -> list[Boxes]:
        raise RuntimeError("graph broken")

    monkeypatch.setattr(YoloxPersonDetector, "_detect_batch", broken)
    with pytest.raises(RuntimeError, match="graph broken"):
        YoloxPersonDetector(providers=["cpu"])


class _Fake:
    def __init__(self, log: dict[str, Any], key: str, delay: float, error: BaseException | None) -> None:
        log[key] = {"thread": threading.current_thread().name, "started": time.monotonic()}
        time.sleep(delay)
        log[key]["done"] = time.monotonic()
        if error is not None:
            raise error


def _fakes(monkeypatch: pytest.MonkeyPatch, log: dict[str, Any],
           spec: dict[str, tuple[float, BaseException | None]]) -> None:
    cfg = RedactionConfig()
    for key, kind in (("face", cfg.face_model), ("person", "yolox_person"), ("text", "ppocr_text")):
        delay, error = spec[key]
        monkeypatch.setitem(detectors_pkg.DETECTORS, kind,
                            lambda _k=key, _d=delay, _e=error, **kw: _Fake(log, _k, _d, _e))


def test_build_detectors_builds_on_threads_at_once(monkeypatch):
    log: dict[str, Any] = {}
    _fakes(monkeypatch, log, {"face": (0.3, None), "person": (0.3, None), "text": (0.3, None)})
    t0 = time.monotonic()
    dets = build_detectors(RedactionConfig(classes=("face", "plate", "person")))
    assert list(dets) == ["face", "person", "text"]
    assert all(isinstance(d, _Fake) for d in dets.values())
    threads = {v["thread"] for v in log.values()}
    assert len(threads) == 3 and threading.current_thread().name not in threads
    # they overlapped: every build started before any finished
    assert max(v["started"] for v in log.values()) < min(v["done"] for v in log.values())
    assert time.monotonic() - t0 < 0.85


def test_build_error_propagates_unchanged_after_every_thread_is_joined(monkeypatch):
    log: dict[str, Any] = {}
    boom = FileNotFoundError("model 'yolox_nano' not found")
    _fakes(monkeypatch, log, {"face": (0.3, None), "person": (0.0, boom), "text": (0.3, None)})
    with pytest.raises(FileNotFoundError) as err:
        build_detectors(RedactionConfig(classes=("face", "plate", "person")))
    assert err.value is boom
    # the slower builds had finished (joined) when the error came out
    assert all("done" in log[k] for k in ("face", "text"))
    assert not [t for t in threading.enumerate() if t.name.startswith("veil-build")]


def test_several_errors_raise_the_first_in_build_order(monkeypatch):
    log: dict[str, Any] = {}
    face_err, text_err = ValueError("face failed"), ValueError("text failed")
    # text fails first in time, face later: face (first in order) wins, as one after another did
    _fakes(monkeypatch, log, {"face": (0.2, face_err), "person": (0.0, None), "text": (0.0, text_err)})
    with pytest.raises(ValueError) as err:
        build_detectors(RedactionConfig(classes=("face", "plate", "person")))
    assert err.value is face_err
