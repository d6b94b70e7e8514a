"""`veilstream` as users run it: real subprocesses, real sample footage, clear one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from operators.video import sample_video
from tests.shared import EVAL, MODELS

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.setdefault("VEILSTREAM_MODEL_DIR", str(MODELS))
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env=e, cwd=ROOT, timeout=timeout)


def one_clear_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("veilstream")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_redact_video_keeps_rate_and_timestamps_and_masks_the_face(tmp_path):
    src = sample_video("carphone_pristine.mp4")
    out = tmp_path / "out.mp4"
    proc = run("redact", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "120 frames" in proc.stdout and "face=" in proc.stdout
    with av.open(str(src)) as a, av.open(str(out)) as b:
        sa, sb = a.streams.video[0], b.streams.video[0]
        assert sb.codec_context.name == "h264"
        assert sb.average_rate == sa.average_rate
        assert not b.streams.audio
        fa = [f for f in a.decode(video=0)]
        fb = [f for f in b.decode(video=0)]
    assert len(fa) == len(fb) == 120
    assert [round(float(f.time), 3) for f in fa] == [round(float(f.time), 3) for f in fb]
    # The face sits in the middle of every frame: it must be masked. What survives a mosaic is
    # detail uncorrelated with the input's (block edges); the face's own edges are gone. (The
    # variance of the Laplacian alone also counts the block edges: coarser blocks, which keep
    # less of the face, score higher.) An unmasked region of the same frames correlates
    # 0.88-0.97 after the H.264 round trip; the masked face 0.02-0.2.
    def edges(frame: av.VideoFrame, rows: slice, cols: slice) -> np.ndarray:
        g = cv2.cvtColor(frame.to_ndarray(format="bgr24")[rows, cols], cv2.COLOR_BGR2GRAY)
        return cv2.Laplacian(g, cv2.CV_64F).ravel()

    for i in (0, 59, 119):
        face = np.corrcoef(edges(fa[i], slice(40, 100), slice(60, 120)), edges(fb[i], slice(40, 100), slice(60, 120)))
        background = np.corrcoef(edges(fa[i], slice(0, 40), slice(0, 60)), edges(fb[i], slice(0, 40), slice(0, 60)))
        assert face[0, 1] < 0.35 < background[0, 1], (i, face[0, 1], background[0, 1])


def test_redact_image_directory_keeps_names(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("2008_002470.jpg", "2008_007676.jpg"):
        (src / name).write_bytes((EVAL / "faces_dlib" / name).read_bytes())
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    proc = run("redact", str(src), "-o", str(out), "--style", "fill")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["2008_002470.jpg", "2008_007676.jpg"]
    a = cv2.imread(str(src / "2008_002470.jpg"))
    b = cv2.imread(str(out / "2008_002470.jpg"))
    assert a.shape == b.shape and (np.abs(a.astype(int) - b.astype(int)).sum(-1) > 60).mean() > 0.01


@pytest.mark.parametrize("args,code,needles", [
    (["redact", "/nonexistent/cam.mp4", "-o", "x.mp4"], 1, ["/nonexistent/cam.mp4"]),
    (["redact", "{video}", "-o", "{tmp}/o.mp4", "--style", "pixelate"], 2, ["style", "mosaic"]),
    (["redact", "{video}", "-o", "{tmp}/o.mp4", "--classes", "face,car"], 2, ["classes", "car"]),
    (["redact", "{video}", "-o", "{tmp}/o.mp4", "--detect-every", "0"], 2, ["--detect-every"]),
    (["redact", "{video}", "-o", "{tmp}/o.mp4", "--providers", "tensorrt"], 2, ["TensorrtExecutionProvider",
                                                                                 "CPUExecutionProvider"]),
    (["redact", "{video}"], 2, ["-o"]),
    (["redact", "{video}", "-o", "{tmp}/o.mp4", "--zones", "{tmp}/missing.yaml"], 2, ["missing.yaml"]),
    (["redact", "{garbage}", "-o", "{tmp}/o.mp4"], 1, ["garbage.mp4"]),
    (["frobnicate"], 2, ["frobnicate"]),
])
def test_bad_input_is_one_clear_line(tmp_path, args, code, needles):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    subst = {"video": str(sample_video("carphone_pristine.mp4")), "tmp": str(tmp_path), "garbage": str(garbage)}
    proc = run(*[a.format(**subst) for a in args])
    one_clear_line(proc, code, *needles)


def test_missing_model_says_how_to_get_it(tmp_path):
    proc = run("redact", str(sample_video("carphone_pristine.mp4")), "-o", str(tmp_path / "o.mp4"),
               env={"VEILSTREAM_MODEL_DIR": str(tmp_path), "VEILSTREAM_CACHE_DIR": str(tmp_path / "cache"),
                    "VEILSTREAM_OFFLINE": "1"})
    one_clear_line(proc, 1, "yunet_n", "VEILSTREAM_MODEL_DIR", "sha256")  # first model not in a wheel


def test_bad_zones_file_names_the_key(tmp_path):
    z = tmp_path / "zones.yaml"
    z.write_text("zones:\n  - name: w\n    polygon: [[0, 0], [1, 1]]\n")
    proc = run("redact", str(sample_video("carphone_pristine.mp4")), "-o", str(tmp_path / "o.mp4"),
               "--zones", str(z))
    one_clear_line(proc, 2, "zones[0].polygon")


def test_main_twice_in_one_process_builds_a_fresh_parser(capsys):
    from pipeline.cli import build_parser, main

    assert main(["config", "check", "--config", "/nonexistent/veil.yaml"]) == 2
    assert main(["config", "check", "--config", "/nonexistent/veil.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("config file '/nonexistent/veil.yaml' not found") == 2 and "conflicting" not in err
    assert build_parser() is not build_parser()


def test_a_command_is_one_registration_function():
    import argparse

    from pipeline.cli import COMMANDS, build_parser

    def add_hello(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        sub.add_parser("hello").set_defaults(func=lambda args: 0)

    args = build_parser((*COMMANDS, add_hello)).parse_args(["hello"])
    assert args.func(args) == 0
