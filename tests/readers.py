"""Drive a :class:`CameraReader` against a dead source until it reports one reconnect."""

from __future__ import annotations

import logging
import threading

import pytest

from pipeline.ingest.source import CameraReader
from schemas.config import CameraConfig


def failed_reconnect(cam: CameraConfig, caplog: pytest.LogCaptureFixture) -> tuple[list[str], CameraReader]:
    """Start a reader on ``cam`` (a source that refuses connections), wait for its first
    ``reconnect`` event, stop it; returns the events and the stopped reader (``last_error``)."""
    events: list[str] = []
    done = threading.Event()

    def on_event(_r: object, kind: str, value: object) -> None:
        if kind == "reconnect":
            events.append(str(value))
            done.set()

    reader = CameraReader(cam, lambda _r, _m: True, chunk_seconds=1.0, jpeg_quality=80, reconnect_initial_s=5.0,
                          reconnect_max_s=5.0, on_event=on_event, open_timeout_s=2.0, read_timeout_s=2.0)
    with caplog.at_level(logging.DEBUG):
        reader.start()
        assert done.wait(20), "the reader never reported a reconnect"
        reader.stop()
        reader.join(10)
    return events, reader
