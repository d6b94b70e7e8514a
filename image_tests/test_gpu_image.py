"""`make image-check-gpu`: build the GPU image from Dockerfile.gpu with buildah on the CPU image's
debootstrap base, then check inside it, as its own user and offline, what a GPU worker needs.

No GPU here: what is checked is everything that does not need one. The driver (libcuda.so.1) is
the one library allowed to be missing: the NVIDIA container toolkit mounts it on a GPU node.
Inference on a GPU, TensorRT engines and GPU throughput are NOT checked (docs/operations.md).

The CPU image it compares with (Ray, Python, package versions: the chart requires an exact Ray
match between the head and the GPU workers) is `localhost/veilstream:check`, built first by
`image_tests/build.sh DIR cpu` when buildah does not hold it yet (`make image-check` builds it).
Writes out/image-check-gpu/report.json: build seconds, image size, the probe's facts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILDAH = ["buildah", "--storage-driver", "vfs"]
DRIVER = "libcuda.so.1"

pytestmark = pytest.mark.gpu_image


def build(out: Path, variant: str) -> None:
    proc = subprocess.run(["sh", str(ROOT / "image_tests" / "build.sh"), str(out), variant], capture_output=True,
                          text=True, timeout=5400)
    logs = {p.name: p.read_text()[-3000:] for p in out.glob("*.log")}
    assert proc.returncode == 0, (variant, proc.stdout, proc.stderr, logs)


def test_gpu_image_builds_with_cuda_libraries_resolved_and_falls_back_to_cpu() -> None:
    missing = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: `make image-deps` (apt-get install buildah debootstrap)",
                    pytrace=False)
    cpu_there = subprocess.run([*BUILDAH, "images", "--quiet", "localhost/veilstream:check"],
                               capture_output=True).returncode == 0
    # under out/, not pytest's tmp_path: other pytest runs on the machine prune old tmp dirs
    work = ROOT / "out" / "image-check-gpu"
    shutil.rmtree(work, ignore_errors=True)
    if not cpu_there:
        build(work / "cpu", "cpu")
    out = work / "gpu"
    build(out, "gpu")
    info = json.loads((out / "version.json").read_text())
    cpu = json.loads((out / "cpu_version.json").read_text())
    probe = json.loads((out / "probe.json").read_text())
    report = {"build_seconds": int((out / "build_seconds.txt").read_text()),
              "size": (out / "size.txt").read_text().strip(), "cpu_image_built_here": not cpu_there,
              "version": info, "probe": probe}
    (work / "report.json").write_text(json.dumps(report, indent=2))

    # one onnxruntime build, the GPU one, offering CUDA
    assert probe["onnxruntime_distributions"] == ["onnxruntime-gpu"], probe["onnxruntime_distributions"]
    assert "onnxruntime-gpu" in info["libraries"] and "onnxruntime" not in info["libraries"], info["libraries"]
    assert "CUDAExecutionProvider" in probe["available_providers"], probe["available_providers"]
    assert info["onnxruntime"]["auto_order"][:2] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]

    # the CUDA provider's libraries resolve from the image (the NVIDIA wheels), the driver aside
    cuda = probe["cuda_provider"]
    assert cuda["rc"] == 0 and set(cuda["not_found"]) <= {DRIVER}, cuda
    for lib in ("libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcudnn.so.9", "libcufft.so.11",
                "libcurand.so.10"):
        assert cuda["resolved"].get(lib, "").startswith("/opt/venv/lib/python3.11/site-packages/nvidia/"), \
            (lib, cuda["resolved"])
    # ... and so does every library of those wheels (cuDNN opens its engines at run time)
    assert probe["nvidia_libraries"] > 10
    unresolved = {lib: need for lib, need in probe["nvidia_libraries_unresolved"].items() if set(need) - {DRIVER}}
    assert not unresolved, unresolved

    # same Python, Ray and package as the CPU image; models baked in; non-root, offline
    assert (info["python"], info["libraries"]["ray"], info["veilstream"]) == \
        (cpu["python"], cpu["libraries"]["ray"], cpu["veilstream"])
    assert probe["python"] == info["python"] and probe["uid"] == 10001
    for name, model in info["models"].items():
        assert model["path"], f"{name} missing in the image: {model}"
    assert info["models"]["yunet_n"]["path"].startswith("/opt/veilstream/models/")
    assert info["models"]["yunet_n"]["sha256"] == cpu["models"]["yunet_n"]["sha256"]
    user, env = (out / "config.txt").read_text().split(" ", 1)
    assert user == "10001:10001" and "VEILSTREAM_OFFLINE=1" in env and "NVIDIA_DRIVER_CAPABILITIES=compute" in env

    # no GPU here: automatic choice runs on CPU and says why; an explicit CUDA request fails clearly
    assert not [v for v in probe["imports"].values() if v.startswith("ERROR")], probe["imports"]
    assert probe["opencv_distributions"] == ["opencv-python-headless"], probe["opencv_distributions"]
    auto = probe["detector_auto"]
    assert auto.get("providers") == ["CPUExecutionProvider"] and auto.get("frames") == 1, auto
    assert any("CUDAExecutionProvider could not start (" in line and "running on CPUExecutionProvider" in line
               for line in auto["log"]), auto
    explicit = probe["detector_cuda"]
    assert explicit.get("error_type") == "ProviderError" and "CUDAExecutionProvider" in explicit["error"], explicit
    assert probe["detector_cpu"].get("providers") == ["CPUExecutionProvider"], probe["detector_cpu"]
