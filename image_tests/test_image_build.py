"""`make image-check`: build the CPU image from the repository's Dockerfile with buildah (no
container daemon) and run `veilstream version` and image_probe.py (native imports, a detector on
one frame) inside it, as its non-root user and offline. The GPU image: test_gpu_image.py.

Not in `make test`: a cold build downloads and installs every wheel (ray, onnxruntime, opencv,
av, ...) into a fresh Debian base, far beyond the suite's time budget on a 2-core machine. The
Dockerfile rules every build depends on are unit-tested in tests/unit/test_image.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_image_builds_and_reports_its_versions_offline() -> None:
    # under out/, not pytest's tmp_path: other pytest runs on the machine prune old tmp dirs
    tmp_path = ROOT / "out" / "image-check"
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir(parents=True)
    missing = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make image-deps` (apt-get install buildah debootstrap)",
                    pytrace=False)
    proc = subprocess.run(["sh", str(ROOT / "image_tests" / "build.sh"), str(tmp_path), "cpu"], capture_output=True,
                          text=True, timeout=3600)
    logs = {p.name: p.read_text()[-3000:] for p in tmp_path.glob("*.log")}
    assert proc.returncode == 0, (proc.stdout, proc.stderr, logs)
    info = json.loads((tmp_path / "version.json").read_text())
    assert info["veilstream"] == "0.1.0"
    assert info["onnxruntime"]["available_providers"][-1] == "CPUExecutionProvider"
    assert "onnxruntime-gpu" not in info["libraries"]  # the CPU image holds one onnxruntime build
    for name, model in info["models"].items():
        assert model["path"], f"{name} missing in the image: {model}"
    assert info["models"]["yunet_n"]["path"].startswith("/opt/veilstream/models/")
    user, env = (tmp_path / "config.txt").read_text().split(" ", 1)
    assert user == "10001:10001" and "VEILSTREAM_OFFLINE=1" in env
    # what `version` does not import: OpenCV and PyAV load system libraries; a detector runs
    probe = json.loads((tmp_path / "probe.json").read_text())
    assert not [v for v in probe["imports"].values() if v.startswith("ERROR")], probe["imports"]
    assert probe["opencv_distributions"] == ["opencv-python-headless"], probe["opencv_distributions"]
    assert probe["onnxruntime_distributions"] == ["onnxruntime"] and probe["uid"] == 10001
    for run in ("detector_auto", "detector_cpu"):
        assert probe[run].get("providers") == ["CPUExecutionProvider"] and probe[run].get("frames") == 1, probe[run]
    assert probe["detector_cuda"].get("error_type") == "ProviderError", probe["detector_cuda"]
