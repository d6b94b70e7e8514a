"""``veilstream eval`` compiles OpenVINO's static shapes in the calling thread, so which compiled
model (dynamic or static, whose outputs differ in the last bits) serves a detection call does not
depend on when a background compile finished: two runs of one tree score the same."""

from __future__ import annotations

import types
from typing import Any

import numpy as np

from operators import evalrun, ovsession
from operators.providers import make_session
from operators.registry import resolve_model


def test_sessions_built_after_set_synchronous_compiles_compile_in_the_calling_thread(monkeypatch: Any) -> None:
    monkeypatch.setattr(ovsession, "STATIC_SHAPES", 1)
    model = resolve_model("yunet_n", allow_download=False)
    assert not ovsession.synchronous_compiles()
    assert make_session(model, "openvino", threads=1).synchronous_compile is False  # the default: background
    ovsession.set_synchronous_compiles(True)
    try:
        sess = make_session(model, "openvino", threads=1)
    finally:
        ovsession.set_synchronous_compiles(False)
    assert sess.synchronous_compile is True
    assert make_session(model, "openvino", threads=1).synchronous_compile is False  # reset: later sessions
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).uniform(0, 255, (1, 3, 64, 96)).astype(np.float32)
    for _ in range(ovsession.STATIC_AFTER):
        sess.run(None, {name: x})
    # the STATIC_AFTER-th call compiled its static model before it returned: nothing left in flight
    assert len(sess._static) == 1 and not sess._pending


def test_run_eval_turns_synchronous_compiles_on_for_its_run_and_restores_them(monkeypatch: Any) -> None:
    seen: list[bool] = []

    def fake(args: Any) -> int:
        seen.append(ovsession.synchronous_compiles())
        return 0

    monkeypatch.setattr(evalrun, "_run_eval", fake)
    assert evalrun.run_eval(types.SimpleNamespace()) == 0
    assert seen == [True]
    assert ovsession.synchronous_compiles() is False

    def boom(args: Any) -> int:
        raise ValueError("bad set")

    monkeypatch.setattr(evalrun, "_run_eval", boom)
    try:
        evalrun.run_eval(types.SimpleNamespace())
    except ValueError:
        pass
    assert ovsession.synchronous_compiles() is False
