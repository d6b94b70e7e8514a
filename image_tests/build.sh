#!/bin/sh
# Build an image without a container engine daemon: Debian's buildah (vfs storage, chroot
# isolation) on a python3.11 base made by debootstrap, then run it as its own user, offline.
#   image_tests/build.sh OUT_DIR [cpu|gpu]   (make image-check / image-check-gpu; root, Debian
#                                             packages buildah debootstrap)
# cpu: Dockerfile -> localhost/veilstream:check; writes OUT_DIR/version.json (the image's
#      `veilstream version --json`), probe.json (image_tests/image_probe.py run inside it),
#      config.txt, size.txt, build_seconds.txt and the logs.
# gpu: Dockerfile.gpu -> localhost/veilstream:check-gpu (the chart's `<tag>-gpu`); the same
#      files, plus cpu_version.json (`veilstream version --json` of the CPU image
#      localhost/veilstream:check, which must exist: build it first).
set -eu
mkdir -p "$1"; OUT=$(realpath "$1")
VARIANT=${2:-cpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${VEILSTREAM_IMAGE_CACHE:-/var/tmp/veilstream-image}
MODELS=${VEILSTREAM_MODEL_DIR:-$ROOT/../shared/models}
B="buildah --storage-driver vfs"
BASE=localhost/veilstream-base-py311:bookworm
case "$VARIANT" in
  cpu) DOCKERFILE=Dockerfile; TAG=localhost/veilstream:check ;;
  gpu) DOCKERFILE=Dockerfile.gpu; TAG=localhost/veilstream:check-gpu
       $B images --quiet localhost/veilstream:check >/dev/null 2>&1 || {
         echo "no CPU image localhost/veilstream:check to compare with: image_tests/build.sh DIR cpu" >&2; exit 1; } ;;
  *) echo "usage: $0 OUT_DIR [cpu|gpu]" >&2; exit 2 ;;
esac
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
CTX="$CACHE/context-$VARIANT"; rm -rf "$CTX"; mkdir -p "$CTX/models" "$CTX/scripts"
cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/schemas" "$ROOT/operators" "$ROOT/pipeline" "$ROOT/$DOCKERFILE" \
  "$ROOT/.dockerignore" "$CTX/"
cp "$ROOT/scripts/install.sh" "$CTX/scripts/"
cp "$MODELS/yunet_n_dynamic.onnx" "$MODELS/yolox_nano.onnx" "$CTX/models/"

# 3. the image itself, from the repository's Dockerfile (the host's CA bundle mounted for pip)
CA=/etc/ssl/certs/ca-certificates.crt
start=$(date +%s)
$B bud --isolation chroot --layers=false --build-arg PYTHON_IMAGE="$BASE" \
  --volume "$CA:$CA:ro" -f "$CTX/$DOCKERFILE" -t "$TAG" "$CTX" >"$OUT/build.log" 2>&1
echo $(($(date +%s) - start)) >"$OUT/build_seconds.txt"
$B images --format '{{.Size}}' "$TAG" >"$OUT/size.txt"
rm -rf "$CTX"

# 4. run it as the image says: user 10001, offline, models from the image
ctr=$($B from "$TAG")
$B run --isolation chroot "$ctr" -- veilstream version --json --require-models >"$OUT/version.json" 2>"$OUT/run.log"
$B inspect --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Env}}' "$ctr" >"$OUT/config.txt"
# the probe is copied into this working container only, never into the image
$B copy --chmod 0644 "$ctr" "$ROOT/image_tests/image_probe.py" /opt/image_probe.py >/dev/null
$B run --isolation chroot "$ctr" -- python /opt/image_probe.py >"$OUT/probe.json" 2>"$OUT/probe.log"
if [ "$VARIANT" = gpu ]; then
  cpu=$($B from localhost/veilstream:check)
  $B run --isolation chroot "$cpu" -- veilstream version --json >"$OUT/cpu_version.json" 2>>"$OUT/run.log"
  $B rm "$cpu" >/dev/null
fi
$B rm "$ctr" >/dev/null
echo "image $TAG built and run: $OUT"
