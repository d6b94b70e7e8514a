# VeilStream: `make demo` runs the main job on the local stack, `make test` runs the suite.
# Both set everything up on a fresh machine (virtual environment, Python and Debian packages).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The labelled sets and ONNX weights live beside the checkout (../shared); a checkout elsewhere
# sets SHARED=DIR, or VEILSTREAM_MODEL_DIR / VEILSTREAM_EVAL_DIR themselves.
SHARED ?= $(abspath ../shared)
export VEILSTREAM_SHARED_DIR ?= $(SHARED)
export VEILSTREAM_MODEL_DIR ?= $(SHARED)/models
export VEILSTREAM_EVAL_DIR ?= $(SHARED)/eval
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: all install lock test-latest load-cluster system-deps image-deps image-check image-check-gpu test test-unit test-integration test-faults fuzz overload demo console-screenshots bench load load-knee eval eval-video eval-subject lint typecheck clean

all: test

# Debian tools the tests need: ffmpeg, GStreamer's RTSP server (run with the system
# python3 and gi) that serves a real RTSP camera on loopback in the ingest tests, and
# chromium + chromium-driver that the console's browser tests drive through Selenium.
DEBIAN_PKGS := ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 || ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" >/dev/null 2>&1; then \
	  echo "installing from Debian: $(DEBIAN_PKGS)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(DEBIAN_PKGS) >/dev/null; \
	fi

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The same script installs the images (Dockerfile, Dockerfile.gpu): tests and images match.
# Everything comes from the hash-pinned lock files in requirements/ (see `make lock`).
LOCKS := requirements/build.lock requirements/test.lock requirements/runtime.lock
$(STAMP): pyproject.toml scripts/install.sh $(LOCKS) | $(PY)
	scripts/install.sh $(PY) --editable --extras test
	touch $(STAMP)

install: $(STAMP)

# Re-resolve the lock files from pyproject.toml (newest versions its bounds allow), then review
# and commit the diff: `make lock`, or `make lock UPGRADE="--upgrade-package moto"` for one
# package, `make lock ORT_GPU=1.27.0` for another onnxruntime-gpu (CUDA 13).
UPGRADE ?=
ORT_GPU ?= 1.26.0
lock: install
	ORT_GPU=$(ORT_GPU) UV=$(VENV)/bin/uv scripts/lock.sh $(UPGRADE)

# Upstream drift without touching main's environment: the newest releases pyproject.toml's
# bounds allow, in a separate environment (.venv-latest), then the whole suite. Red here and
# green in `make test` means an upstream release changed something: fix it deliberately,
# then `make lock`.
LATEST := .venv-latest
test-latest: system-deps
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q -e '.[test]'
	mkdir -p out && $(LATEST)/bin/python -m pip freeze --exclude-editable > out/latest-freeze.txt
	$(LATEST)/bin/python -m pytest -q tests

test: install system-deps lint
	$(PY) -m pytest -q tests

test-unit: install
	$(PY) -m pytest -q tests/unit

test-integration: install system-deps
	$(PY) -m pytest -q tests/integration

# Every fault-injection scenario on the real local stack (make test runs the core subset in
# tests/faults/test_faults.py); prints the table: chunks in/out/DLQ/dropped, faces leaked.
test-faults: install system-deps
	$(PY) -m tests.faults.harness --scenarios all --json out/faults.json

# Twice the cameras the machine can process: lag, RSS of every process vs a bound, live drops.
overload: install
	$(PY) load_tests/overload.py --cameras 4 --seconds 60

# Coverage-guided fuzzing (atheris) of every parser of hostile input, FUZZ_SECONDS per target;
# a crash is written to out/fuzz/ (copy it to tests/fuzz/regressions/<target>-<name>).
FUZZ_SECONDS ?= 120
FUZZ_TARGETS := message meta_mutation jpeg_payload h264_payload config policy camera_record
fuzz: install
	@mkdir -p out/fuzz
	@for t in $(FUZZ_TARGETS); do echo "fuzz $$t ($(FUZZ_SECONDS)s)"; \
	  $(PY) -m tests.fuzz.targets $$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=out/fuzz/$$t- \
	    2>&1 | grep -E "^(Done|==|SUMMARY)" || true; \
	  if ls out/fuzz/$$t-crash-* >/dev/null 2>&1; then echo "crash found: out/fuzz/$$t-crash-*"; exit 1; fi; done

demo: install
	@rm -rf out/demo
	$(PY) -m pipeline.demo

# Screenshots of the console (camera list, player, subject request) for the README, taken
# by its browser test against the local stack.
console-screenshots: install system-deps
	VEILSTREAM_SCREENSHOTS=1 $(PY) -m pytest -q tests/integration/test_console_browser.py

# Full labelled sets (detections cached under out/eval_cache, so a rerun only re-scores),
# then the threshold sweep (out/sweep/sweep.json + .png) from the same cache.
eval: install
	$(VENV)/bin/veilstream eval all --json-out out/eval/all.json
	$(VENV)/bin/veilstream eval all --sweep --sweep-out out/sweep

# Per-frame leak in video: each image as a moving-camera H.264 clip, detect-every 1/2/4/8.
eval-video: install
	$(VENV)/bin/veilstream eval all --as-video --video-every 1,2,4,8 --limit 6 --json-out out/eval/video.json

bench: install
	$(PY) load_tests/bench_redact.py

# `make load CAMERAS=2 SECONDS=60 FPS=15 [SOURCE=file]`: N cameras of real pedestrian footage
# (OpenCV's vtest.avi from Debian's opencv-doc, re-encoded to 1280x720) through the whole
# pipeline; `make load-knee` searches the largest sustained camera count. `SOURCE=crowd` (or
# LOAD_ARGS="--source crowd"): a crowded 1280x720 hall built from the shared eval images
# (load_tests/crowd_source.py), e.g. `make load CAMERAS=3 FPS=15 SOURCE=crowd`.
CAMERAS ?= 4
SECONDS ?= 60
LOAD_ARGS ?=
FPS ?= 15
VTEST := out/load/usr/share/doc/opencv-doc/examples/data/vtest.avi
SOURCE ?= $(VTEST)
$(VTEST):
	mkdir -p out/load/deb
	cd out/load/deb && apt-get download opencv-doc
	dpkg-deb --fsys-tarfile out/load/deb/opencv-doc_*.deb | tar -x -C out/load --wildcards '*/examples/data/vtest.avi'
	rm -rf out/load/deb

load: install system-deps $(VTEST)
	$(PY) load_tests/pipeline_load.py --cameras $(CAMERAS) --seconds $(SECONDS) --fps $(FPS) --source $(SOURCE) \
		--json-out out/load/load-$(CAMERAS)cam.json $(LOAD_ARGS)

load-knee: install system-deps $(VTEST)
	$(PY) load_tests/pipeline_load.py --knee --seconds $(SECONDS) --fps $(FPS) --source $(SOURCE) \
		--json-out out/load/knee.json $(LOAD_ARGS)

# `make load-cluster NODES=3 CAMERAS=2 SECONDS=45`: the same run on a Ray cluster of NODES nodes
# on this machine; the last line's JSON says how many bytes crossed between nodes per frame
# (Ray's object-transfer counters) next to the compressed video's bytes per frame.
NODES ?= 3
PLACEMENT ?= node_local
load-cluster: install system-deps $(VTEST)
	$(PY) load_tests/cluster_load.py --nodes $(NODES) --cameras $(CAMERAS) --seconds $(SECONDS) --fps $(FPS) \
		--source $(SOURCE) --placement $(PLACEMENT) --json-out out/load/cluster-$(NODES)nodes-$(PLACEMENT).json $(LOAD_ARGS)

# Subject export on real pedestrian footage: subject face visible / other faces leaked (numbers, no pass/fail)
eval-subject: install $(VTEST)
	$(PY) load_tests/eval_subject.py --video $(VTEST) --json-out out/eval_subject.json

# The CPU image built from Dockerfile with buildah (no daemon) on a debootstrap base, then
# `veilstream version` run inside it. Minutes of downloads on a cold machine: not in `make test`.
image-deps:
	@command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends buildah debootstrap >/dev/null; }

image-check: install image-deps
	$(PY) -m pytest -q -p no:cacheprovider -m "not gpu_image" image_tests

# The GPU image (Dockerfile.gpu: the same base, onnxruntime-gpu and NVIDIA's CUDA 12 / cuDNN 9
# wheels from PyPI) built the same way and probed inside without a GPU: one onnxruntime build,
# CUDA provider offered and its libraries resolved, models, the CPU image's Ray and Python, CPU
# fallback. About 4 GB of wheels; builds the CPU image first when buildah lacks it. Reports to
# out/image-check-gpu/report.json.
image-check-gpu: install image-deps
	nice -n 10 $(PY) -m pytest -q -p no:cacheprovider -m gpu_image image_tests

lint: install
	$(VENV)/bin/ruff check pipeline operators schemas tests load_tests image_tests
	$(VENV)/bin/hadolint Dockerfile Dockerfile.gpu
	$(VENV)/bin/mypy --strict operators schemas pipeline

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info .pytest_cache
