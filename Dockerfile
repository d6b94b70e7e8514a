# syntax=docker/dockerfile:1
# VeilStream CPU image: ingest, process, sink and the Ray nodes all run this one image (Ray
# needs the same Ray and Python versions on the driver and the cluster).
#   docker build -t ghcr.io/veilstream/veilstream:0.1.0 .
# GPU nodes: Dockerfile.gpu. Both install with scripts/install.sh, as `make install` does.
#
# PYTHON_IMAGE: any Debian-based image with python3.11 and its venv module on PATH; the
# build and runtime stages must use the same one (the venv links to its interpreter).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python3.11 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY scripts/install.sh scripts/install.sh
COPY requirements requirements
COPY schemas schemas
COPY operators operators
COPY pipeline pipeline
# Models no wheel ships (YuNet, YOLOX-nano): from ./models when the build context has them
# (air-gapped builders), else downloaded by URL; sha256-verified either way.
COPY pyproject.toml models* /src/models/
RUN VEILSTREAM_MODEL_DIR=/src/models scripts/install.sh /opt/venv/bin/python --opencv-headless --models /opt/veilstream/models

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="veilstream" \
      org.opencontainers.image.description="De-identification of CCTV streams (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
# PyAV's wheel (libavdevice) links libxcb, which a slim Debian lacks: without it `import av`
# fails (`veilstream version` alone does not show it). OpenCV is the headless build (no libGL).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libxcb1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 veil \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin veil
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/veilstream/models /opt/veilstream/models
ENV PATH=/opt/venv/bin:$PATH \
    VEILSTREAM_OFFLINE=1 \
    VEILSTREAM_MODEL_DIR=/opt/veilstream/models \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["veilstream"]
CMD ["version"]
