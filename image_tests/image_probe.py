"""Run INSIDE an image by ``image_tests/build.sh`` (the image's python, user, environment and
offline settings; on a machine without a GPU). Prints one JSON object of facts that
``test_image_build.py`` / ``test_gpu_image.py`` assert on; it asserts nothing itself, so every
fact reaches the test.

Only the standard library, numpy and the installed package: it is copied into a working
container of the image, never into the image.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

DRIVER = "libcuda.so.1"  # mounted by the NVIDIA container toolkit / device plugin, never in the image


def onnxruntime_distributions() -> list[str]:
    """Every installed onnxruntime build (rapidocr-onnxruntime is a user of it, not a build)."""
    names = {(d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions()}
    return sorted(n for n in names if n == "onnxruntime" or n.startswith(("onnxruntime-", "ort-nightly")))


def ldd(lib: Path) -> dict[str, Any]:
    """``ldd`` of ``lib`` in this process's environment: what each needed library resolves to."""
    proc = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, timeout=60)
    resolved: dict[str, str] = {}
    missing: list[str] = []
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (.*?)(?: \(0x[0-9a-f]+\))?$", line)
        if not m:
            continue
        if m.group(2).strip() == "not found":
            missing.append(m.group(1))
        else:
            resolved[m.group(1)] = m.group(2).strip()
    return {"rc": proc.returncode, "resolved": resolved, "not_found": missing, "stderr": proc.stderr[-500:]}


@contextlib.contextmanager
def output_captured() -> Iterator[list[str]]:
    """Capture fds 1 and 2: onnxruntime's C++ logger writes to 2, its Python fallback prints to 1."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = (os.dup(1), os.dup(2))
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved, strict=True):
                os.dup2(old, fd)
                os.close(old)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def imports() -> dict[str, str]:
    """What every stage imports natively (OpenCV and PyAV link system libraries)."""
    out = {}
    for name in ("cv2", "av", "onnxruntime", "confluent_kafka", "ray"):
        try:
            out[name] = str(getattr(__import__(name), "__version__", "ok"))
        except Exception as exc:  # the facts go to the test, which decides
            out[name] = f"ERROR {type(exc).__name__}: {exc}"
    return out


def detector_run(providers: str | None) -> dict[str, Any]:
    """Build the YuNet face detector with ``providers`` and run it on one frame."""
    import numpy as np

    from operators.detectors.yunet import YuNetDetector

    out: dict[str, Any] = {"requested": providers}
    with output_captured() as log:
        try:
            det = YuNetDetector(providers=providers)
            boxes = det.detect(np.zeros((1, 360, 640, 3), np.uint8))
            out.update(providers=list(det.providers), frames=len(boxes))
        except Exception as exc:  # the facts go to the test, which decides
            out.update(error_type=type(exc).__name__, error=str(exc),
                       traceback=traceback.format_exc(limit=3)[-1500:])
    out["log"] = [ln for ln in log if ln.strip() and not ln.startswith("*****")][-10:]
    return out


def main() -> int:
    import onnxruntime as ort

    capi = Path(ort.__file__).parent / "capi"
    site = Path(ort.__file__).parents[1]
    facts: dict[str, Any] = {
        "python": sys.version.split()[0],
        "uid": os.getuid(),
        "onnxruntime_distributions": onnxruntime_distributions(),
        "opencv_distributions": sorted(n for n in ((d.metadata["Name"] or "").lower() for d in metadata.distributions())
                                       if n.startswith("opencv-")),
        "onnxruntime_version": ort.__version__,
        "available_providers": list(ort.get_available_providers()),
        "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
        "provider_libraries": sorted(p.name for p in capi.glob("libonnxruntime_providers_*.so")),
        "nvidia_wheels": sorted(d.metadata["Name"] for d in metadata.distributions()
                                if (d.metadata["Name"] or "").lower().startswith(("nvidia-", "tensorrt"))),
    }
    cuda = capi / "libonnxruntime_providers_cuda.so"
    facts["cuda_provider"] = ldd(cuda) if cuda.exists() else None
    trt = capi / "libonnxruntime_providers_tensorrt.so"
    facts["tensorrt_provider"] = ldd(trt) if trt.exists() else None
    # every library the NVIDIA wheels ship (cuDNN loads its engine libraries itself at run time,
    # so ldd of the provider alone does not reach them)
    wheel_libs: dict[str, list[str]] = {}
    for lib in sorted((site / "nvidia").glob("**/lib*.so*")):
        found = ldd(lib)
        if found["not_found"]:
            wheel_libs[str(lib.relative_to(site))] = found["not_found"]
    facts["nvidia_libraries"] = len(list((site / "nvidia").glob("**/lib*.so*")))
    facts["nvidia_libraries_unresolved"] = wheel_libs
    facts["imports"] = imports()
    facts["detector_auto"] = detector_run(None)
    facts["detector_cuda"] = detector_run("cuda")
    facts["detector_cpu"] = detector_run("cpu")
    print(json.dumps(facts, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
