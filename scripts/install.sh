#!/bin/sh
# One installation for `make install`, the CPU image and the GPU image: the tests and the
# images install the same thing with the same command.
#
#   scripts/install.sh PYTHON [--editable] [--extras LIST] [--gpu [--onnxruntime-gpu VERSION]]
#                             [--opencv-headless] [--models DIR] [--dry-run]
#
#   PYTHON       the interpreter of the target virtual environment (.venv/bin/python, /opt/venv/bin/python)
#   --editable   install the source tree in development mode (make install)
#   --extras     comma-separated extras of pyproject.toml (make install: test)
#   --gpu        replace onnxruntime (CPU) with onnxruntime-gpu: both provide the `onnxruntime`
#                module, so they must never be installed together (rapidocr-onnxruntime depends
#                on the CPU one, hence the swap after install); then the NVIDIA runtime wheels
#                that version declares (its extras `cuda` and `cudnn`: CUDA runtime, NVRTC,
#                cuFFT, cuRAND, cuDNN 9 and, through cuDNN, cuBLAS), so no system CUDA is needed
#   --onnxruntime-gpu VERSION   the onnxruntime-gpu version (default: the installed
#                onnxruntime's). PyPI's onnxruntime-gpu <= 1.26 is built for CUDA 12, >= 1.27
#                for CUDA 13; Dockerfile.gpu sets it
#   --opencv-headless   replace opencv-python with opencv-python-headless of the same version
#                (same `cv2` module, hence a swap like onnxruntime's): the GUI build links libGL,
#                GLib and X11, 220 MB of Debian packages an image would need only for it
#   --models DIR put every model no wheel ships into DIR, verified by sha256 (the images
#                bake them in and run with VEILSTREAM_OFFLINE=1)
#   --dry-run    print the commands instead of running them
set -eu

usage() { echo "usage: $0 PYTHON [--editable] [--extras LIST] [--gpu [--onnxruntime-gpu VERSION]] [--opencv-headless] [--models DIR] [--dry-run]" >&2; exit 2; }
[ $# -ge 1 ] || usage
PY=$1; shift
EDITABLE=""; EXTRAS=""; GPU=0; ORT_GPU=""; HEADLESS=0; MODELS=""; DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --editable) EDITABLE="-e" ;;
    --extras) [ $# -ge 2 ] || usage; EXTRAS=$2; shift ;;
    --gpu) GPU=1 ;;
    --onnxruntime-gpu) [ $# -ge 2 ] || usage; ORT_GPU=$2; shift ;;
    --opencv-headless) HEADLESS=1 ;;
    --models) [ $# -ge 2 ] || usage; MODELS=$2; shift ;;
    --dry-run) DRY=1 ;;
    *) usage ;;
  esac
  shift
done
[ -z "$ORT_GPU" ] || [ "$GPU" = 1 ] || { echo "$0: --onnxruntime-gpu needs --gpu" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)

run() {
  if [ "$DRY" = 1 ]; then echo "$*"; else "$@"; fi
}

TARGET="$ROOT"
[ -n "$EXTRAS" ] && TARGET="$ROOT[$EXTRAS]"
# shellcheck disable=SC2086 # EDITABLE is empty or one flag
run "$PY" -m pip install -q $EDITABLE "$TARGET"

if [ "$GPU" = 1 ]; then
  ORT=$ORT_GPU
  if [ -z "$ORT" ]; then
    if [ "$DRY" = 1 ]; then ORT=VERSION; else
      ORT=$("$PY" -c "from importlib.metadata import version; print(version('onnxruntime'))")
    fi
  fi
  run "$PY" -m pip uninstall -q -y onnxruntime
  run "$PY" -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu==$ORT" || {
    echo "$0: cannot install onnxruntime-gpu==$ORT (not every onnxruntime release has a GPU build on" \
      "the index): pass --onnxruntime-gpu VERSION" >&2; exit 1; }
  # Its own extras, so the NVIDIA wheels fit that build's CUDA major; already-met requirements
  # (numpy, protobuf, ...) stay as the main install resolved them.
  run "$PY" -m pip install -q "onnxruntime-gpu[cuda,cudnn]==$ORT"
fi

if [ "$HEADLESS" = 1 ]; then
  if [ "$DRY" = 1 ]; then CV=VERSION; else
    CV=$("$PY" -c "from importlib.metadata import version; print(version('opencv-python'))")
  fi
  run "$PY" -m pip uninstall -q -y opencv-python
  run "$PY" -m pip install -q --force-reinstall --no-deps "opencv-python-headless==$CV"
fi

# Exactly one onnxruntime build, and the providers that build must offer.
run "$PY" -m pipeline.install_check "$([ "$GPU" = 1 ] && echo gpu || echo cpu)"

if [ -n "$MODELS" ]; then
  run "$PY" -m pipeline.cli models fetch --into "$MODELS"
fi
