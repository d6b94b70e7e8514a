"""Every Kafka client comes from pipeline/kafka.py: the same security settings, and librdkafka's
own log lines through logging, never raw on stderr."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.kafka import LIBRDKAFKA_LOG, admin_client, chunk_producer, plain_consumer
from schemas.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"Consumer", "Producer", "AdminClient"}


def _constructed(path: Path) -> list[int]:
    """Lines of ``path`` that call confluent-kafka's client constructors directly."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in CLIENTS:
                out.append(node.lineno)
    return out


def test_clients_are_built_only_in_the_kafka_factory():
    offenders = {str(p.relative_to(ROOT)): lines for p in sorted((ROOT / "pipeline").rglob("*.py"))
                 if p.name != "kafka.py" and (lines := _constructed(p))}
    # ingest's assignment consumer and the camera registry build theirs from client_settings()
    # (security and log routing included): checked below by what they pass
    for rel in list(offenders):
        text = (ROOT / rel).read_text()
        if all("client_settings(" in text.splitlines()[n - 1] or "client_settings(" in text.splitlines()[n]
               for n in offenders[rel]):
            del offenders[rel]
    assert offenders == {}


def test_factory_clients_carry_security_and_the_log_router(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("K_USER", "u")
    monkeypatch.setenv("K_PASS", "p")
    cfg = parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:1", "security": {
        "protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "username_env": "K_USER", "password_env": "K_PASS"}}})
    seen: list[dict] = []
    import pipeline.kafka as kafka

    monkeypatch.setattr(kafka, "Consumer", lambda conf: seen.append(conf) or object())
    monkeypatch.setattr(kafka, "Producer", lambda conf: seen.append(conf) or object())
    plain_consumer(cfg.kafka, "g")
    chunk_producer(cfg.kafka, "veil-x")
    for conf in seen:
        assert conf["security.protocol"] == "SASL_PLAINTEXT" and conf["sasl.username"] == "u"
        assert conf["logger"] is LIBRDKAFKA_LOG
    assert admin_client("127.0.0.1:1") is not None


def test_librdkafka_levels_are_demoted_into_logging(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG, logger="pipeline.kafka.librdkafka"):
        LIBRDKAFKA_LOG.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "Connection refused")
        LIBRDKAFKA_LOG.log(logging.WARNING, "%s", "w")
    assert [(r.levelno, r.name) for r in caplog.records] == [
        (logging.WARNING, "pipeline.kafka.librdkafka"), (logging.INFO, "pipeline.kafka.librdkafka")]
    assert caplog.records[0].getMessage() == "FAIL [rdkafka#producer-1] Connection refused"


def test_an_unreachable_broker_writes_nothing_raw_to_stderr():
    """A producer and a consumer polled against a closed port: librdkafka's %3|...|FAIL| lines
    would go straight to fd 2; through the router they are log records."""
    code = textwrap.dedent("""
        import logging, socket, sys
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="LOG %(name)s %(message)s")
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        from pipeline.kafka import admin_client, plain_consumer
        from schemas.config import parse_config
        cfg = parse_config({"kafka": {"bootstrap_servers": f"127.0.0.1:{port}"}})
        c = plain_consumer(cfg.kafka, "g", **{"reconnect.backoff.ms": 50})
        c.subscribe(["t"])
        for _ in range(10):
            c.poll(0.2)
        c.close()
        a = admin_client(f"127.0.0.1:{port}")
        try:
            a.list_topics(timeout=1)
        except Exception:
            pass
        a.poll(0.5)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "|FAIL|" not in proc.stderr and "%3|" not in proc.stderr, proc.stderr
    assert "LOG pipeline.kafka.librdkafka" in proc.stdout  # routed, not lost
