#!/bin/sh
# Build the CPU image without a container engine daemon: Debian's buildah (vfs storage, chroot
# isolation) on a python3.11 base made by debootstrap, then run `veilstream version` inside it.
#   image_tests/build.sh OUT_DIR      (make image-check; root, Debian packages buildah debootstrap)
# Writes OUT_DIR/version.json (the image's `veilstream version --json`) and OUT_DIR/build.log.
set -eu
OUT=$(realpath "$1"); mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${VEILSTREAM_IMAGE_CACHE:-/var/tmp/veilstream-image}
MODELS=${VEILSTREAM_MODEL_DIR:-$ROOT/../shared/models}
B="buildah --storage-driver vfs"
BASE=localhost/veilstream-base-py311:bookworm
mkdir -p "$CACHE"

# 1. base: Debian bookworm minbase with python3.11 and venv (cached)
if ! $B images --quiet "$BASE" >/dev/null 2>&1; then
  if [ ! -x "$CACHE/rootfs/usr/bin/python3.11" ] || ! chroot "$CACHE/rootfs" python3.11 -c "import ensurepip" 2>/dev/null; then
    rm -rf "$CACHE/rootfs"
    debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-pip-whl,python3-setuptools-whl,python3.11-distutils,python3-lib2to3,ca-certificates \
      bookworm "$CACHE/rootfs" http://deb.debian.org/debian >"$OUT/debootstrap.log" 2>&1
  fi
  ctr=$($B from scratch)
  $B copy "$ctr" "$CACHE/rootfs" / >/dev/null
  $B config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  $B commit --quiet "$ctr" "$BASE" >/dev/null
  $B rm "$ctr" >/dev/null
fi

# 2. build context: what .dockerignore lets through, plus the two models no wheel ships
CTX="$CACHE/context"; rm -rf "$CTX"; mkdir -p "$CTX/models" "$CTX/scripts"
cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/schemas" "$ROOT/operators" "$ROOT/pipeline" "$ROOT/Dockerfile" \
  "$ROOT/.dockerignore" "$CTX/"
cp "$ROOT/scripts/install.sh" "$CTX/scripts/"
cp "$MODELS/yunet_n_dynamic.onnx" "$MODELS/yolox_nano.onnx" "$CTX/models/"

# 3. the image itself, from the repository's Dockerfile (the host's CA bundle mounted for pip)
CA=/etc/ssl/certs/ca-certificates.crt
$B bud --isolation chroot --layers=false --build-arg PYTHON_IMAGE="$BASE" \
  --volume "$CA:$CA:ro" -f "$CTX/Dockerfile" -t localhost/veilstream:check "$CTX" >"$OUT/build.log" 2>&1

# 4. run it as the image says: user 10001, offline, models from the image
ctr=$($B from localhost/veilstream:check)
$B run --isolation chroot "$ctr" -- veilstream version --json --require-models >"$OUT/version.json" 2>"$OUT/run.log"
$B inspect --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Env}}' "$ctr" >"$OUT/config.txt"
$B rm "$ctr" >/dev/null
echo "image built and run: $OUT/version.json"
