"""The probe / metrics server a stage starts through :meth:`StageKafka.serve_metrics` is kept and
stopped by :meth:`StageKafka.close`, which the sink and the raw sink call when their run ends
(before, the server was thrown away and kept its port and thread until the process exited)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

import pipeline.stage as stage_mod
from pipeline.stage import StageKafka
from schemas.config import parse_config
from tests.fakes import FakeConsumer, FakeMsg, FakeProducer, InMemoryObjectStore

SERVED = {"enabled": True, "host": "127.0.0.1", "port": 0}


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return int(r.status)


def refused(port: int) -> bool:
    try:
        healthz(port)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[ThreadingHTTPServer]:
    """Every server StageKafka starts (the real ones), in order."""
    got: list[ThreadingHTTPServer] = []
    real = stage_mod.serve_config

    def spy(metrics: Any, cfg: Any) -> ThreadingHTTPServer | None:
        server = real(metrics, cfg)
        if server is not None:
            got.append(server)
        return server

    monkeypatch.setattr(stage_mod, "serve_config", spy)
    return got


def test_the_stage_keeps_its_server_and_close_stops_it(served: list[ThreadingHTTPServer]) -> None:
    k = StageKafka(parse_config({"metrics": SERVED}), "sink")
    server = k.serve_metrics()
    assert server is not None and k.serve_metrics() is server and served == [server]  # one, kept
    port = int(server.server_address[1])
    assert healthz(port) == 200
    k.close()
    assert k.server is None and refused(port)
    k.close()  # twice: nothing left to stop
    off = StageKafka(parse_config({"metrics": {"enabled": False}}), "sink")
    assert off.serve_metrics() is None
    off.close()


def test_the_sink_stops_its_probe_server_when_its_run_ends(served: list[ThreadingHTTPServer]) -> None:
    from pipeline.sink.worker import SinkWorker

    cfg = parse_config({"metrics": SERVED})
    stopped = threading.Event()
    stopped.set()  # a SIGTERM before the first poll: the run drains and returns at once
    w = SinkWorker(cfg, InMemoryObjectStore(), lambda on_revoke: FakeConsumer([], on_revoke),
                   producer_factory=FakeProducer, stop_event=stopped)
    assert w.run() == 0
    assert len(served) == 1 and w.kafka.server is None and refused(int(served[0].server_address[1]))


def test_the_raw_sink_stops_its_probe_server_when_its_run_ends(tmp_path: Path,
                                                               served: list[ThreadingHTTPServer]) -> None:
    from pipeline.governance.rawsink import RawSinkWorker
    from pipeline.governance.vault import LocalKeyFileProvider, RawVault, make_key_file

    pdir = tmp_path / "p"
    pdir.mkdir()
    (pdir / "default.yaml").write_text(yaml.safe_dump({"policy_id": "default"}))
    make_key_file(tmp_path / "k")
    cfg = parse_config({"policies_dir": str(pdir), "metrics": SERVED, "raw_vault": {"key_file": str(tmp_path / "k")}})
    msgs: list[FakeMsg] = []
    stopped = threading.Event()
    stopped.set()
    w = RawSinkWorker(cfg, RawVault(InMemoryObjectStore(), LocalKeyFileProvider(tmp_path / "k")),
                      consumer=FakeConsumer(msgs, None), stop_event=stopped)
    assert w.run() == 0
    assert len(served) == 1 and w.k.server is None and refused(int(served[0].server_address[1]))
