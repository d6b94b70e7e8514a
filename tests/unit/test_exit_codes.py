"""Commands that run detectors exit 0 when they succeed: nothing the detectors' runtimes left
running (OpenVINO static-shape compiles on background threads) may crash the interpreter's exit.

The crash these guard against: an OpenVINO session compiles a static-shape model on a
background thread on the STATIC_AFTER-th call at one input shape. As a daemon thread, a compile
still running when the command finished returned into a finalizing interpreter; CPython ended
the thread with ``pthread_exit`` and its forced unwind through ``_pyopenvino`` called
``std::terminate``: ``veilstream eval`` printed its report, then exited 134 (SIGABRT)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from operators import ovsession
from tests.shared import EVAL, MODELS

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VEILSTREAM_MODEL_DIR", str(MODELS))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def test_exit_waits_for_a_static_compile_in_flight(tmp_path):
    """Deterministic: a hook registered before any session runs last at exit; by then no
    compile thread may be alive and the compile the last call started has finished."""
    script = tmp_path / "exit_probe.py"
    script.write_text(textwrap.dedent("""
        import atexit, sys, threading
        import numpy as np

        def last_hook():  # registered first: atexit runs it after every other hook
            alive = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
            print("alive-at-exit", alive, "static", len(sess._static), flush=True)

        atexit.register(last_hook)
        from operators.ovsession import STATIC_AFTER
        from operators.providers import make_session
        from operators.registry import resolve_model

        sess = make_session(resolve_model("ppocr_det_v5", allow_download=False), "openvino", threads=1)
        name = sess.get_inputs()[0].name
        x = np.zeros((1, 3, 640, 960), np.float32)
        for _ in range(STATIC_AFTER):  # the last call starts the static compile, in the background
            sess.run(None, {name: x})
        print("ran", flush=True)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(),
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "ran" in proc.stdout
    assert "alive-at-exit [] static 1" in proc.stdout, proc.stdout


def test_eval_with_a_fresh_cache_exits_0(tmp_path):
    """``veilstream eval`` on a fresh detection cache, on STATIC_AFTER copies of one plate image:
    each OpenVINO text session meets the image's shape for the STATIC_AFTER-th time on the last
    image, so its static compile starts just before the command ends (rc 134 in about half the
    runs before the fix)."""
    src = EVAL / "plates_eu"
    sets = tmp_path / "eval"
    (sets / "plates_eu").mkdir(parents=True)
    label = (src / "test_061.txt").read_text().split("\t")
    for i in range(ovsession.STATIC_AFTER):
        shutil.copy(src / "test_061.jpg", sets / "plates_eu" / f"img{i}.jpg")
        (sets / "plates_eu" / f"img{i}.txt").write_text("\t".join([f"img{i}.jpg", *label[1:]]))
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "eval", "plates_eu", "--eval-dir", str(sets),
                           "--cache-dir", str(cache)], capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert f'"dataset": "plates_eu", "images": {ovsession.STATIC_AFTER}' in proc.stdout, proc.stdout
    assert list(cache.glob("plates_eu/*.npz"))  # the cache was filled: the detectors did run
