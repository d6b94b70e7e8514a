"""Markers of the image checks: `make image-check` runs the CPU image's, `make image-check-gpu` the
GPU image's (``-m gpu_image``); neither is part of `make test`."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu_image: builds the GPU image (Dockerfile.gpu); make image-check-gpu")
