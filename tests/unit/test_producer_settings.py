"""``kafka.producer_settings``: per-deployment librdkafka producer tuning. Validated by
``parse_config`` (keys the pipeline owns for its guarantees refused), applied to every producer
built by :func:`pipeline.kafka.chunk_producer` (ingest's, the stages'), librdkafka's own refusal
turned into one ConfigError line naming the key; the local stack's config sets one request in
flight (tansu), production and the chart keep librdkafka's default."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

import pipeline.kafka as kafka_mod
from pipeline.kafka import chunk_producer
from schemas.config import config_to_dict, parse_config
from schemas.errors import ConfigError

INFLIGHT = "max.in.flight.requests.per.connection"


def cfg_with(settings: Any) -> Any:
    return parse_config({"kafka": {"bootstrap_servers": "127.0.0.1:9", "producer_settings": settings},
                         "metrics": {"enabled": False}})


class Recorder:
    """Stands in for confluent-kafka's ``Producer``: keeps each config it was built with."""

    def __init__(self) -> None:
        self.confs: list[dict[str, Any]] = []

    def __call__(self, conf: dict[str, Any]) -> Any:
        self.confs.append(dict(conf))
        p = mock.MagicMock()
        p.flush.return_value = 0
        p.poll.return_value = 0
        return p


# ---------------------------------------------------------------- validation


def test_default_is_empty_so_production_keeps_librdkafkas_defaults(monkeypatch: pytest.MonkeyPatch):
    cfg = parse_config({})
    assert cfg.kafka.producer_settings == {}
    rec = Recorder()
    monkeypatch.setattr(kafka_mod, "Producer", rec)
    chunk_producer(cfg.kafka, "veil-x")
    assert INFLIGHT not in rec.confs[0]


def test_good_settings_are_kept_with_their_types_and_round_trip():
    good = {INFLIGHT: 1, "linger.ms": 20, "compression.type": "lz4", "socket.nagle.disable": True}
    cfg = cfg_with(good)
    assert cfg.kafka.producer_settings == good
    assert parse_config(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("key", [
    "enable.idempotence", "acks", "request.required.acks", "bootstrap.servers", "metadata.broker.list",
    "message.max.bytes", "client.id", "retries", "message.send.max.retries", "transactional.id",
    "partitioner", "security.protocol", "ssl.ca.location", "sasl.password", "sasl.oauthbearer.client.secret",
    "enable.ssl.certificate.verification", "https.ca.location", "plugin.library.paths", "logger", "error_cb",
])
def test_a_key_the_pipeline_owns_is_refused_naming_it(key: str):
    with pytest.raises(ConfigError) as e:
        cfg_with({"linger.ms": 5, key: "x"})
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid config: 1 problem:"
    assert len(lines) == 2 and lines[1].strip().startswith(f"kafka.producer_settings.{key}: owned by the pipeline") \
        or lines[1].strip().startswith(f"kafka.producer_settings.{key}: a callback"), lines


def test_every_owned_key_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        cfg_with({"acks": 1, "enable.idempotence": False})
    text = str(e.value)
    assert "2 problems" in text and "producer_settings.acks:" in text and "producer_settings.enable.idempotence:" in text


@pytest.mark.parametrize("value", [1.5, None, [1], {"a": 1}])
def test_a_value_of_the_wrong_type_is_refused_with_its_path(value: Any):
    with pytest.raises(ConfigError, match=r"kafka\.producer_settings\.linger\.ms: expected string or integer or "
                                          r"boolean"):
        cfg_with({"linger.ms": value})


@pytest.mark.parametrize("settings, match", [
    ([INFLIGHT], r"kafka\.producer_settings: expected mapping"),
    ({"Linger Ms": 1}, r"kafka\.producer_settings: .*'Linger Ms'"),
])
def test_not_a_mapping_of_librdkafka_names_is_refused(settings: Any, match: str):
    with pytest.raises(ConfigError, match=match):
        cfg_with(settings)


# ---------------------------------------------------------------- the producers


def test_chunk_producer_applies_them_on_top_of_the_pipelines_own(monkeypatch: pytest.MonkeyPatch):
    rec = Recorder()
    monkeypatch.setattr(kafka_mod, "Producer", rec)
    chunk_producer(cfg_with({INFLIGHT: 1, "linger.ms": 25}).kafka, "veil-x")
    (conf,) = rec.confs
    assert conf[INFLIGHT] == 1 and conf["linger.ms"] == 25  # the deployment's tuning wins over linger.ms 5
    assert conf["enable.idempotence"] is True and conf["client.id"] == "veil-x"  # the guarantees stay


def test_the_stages_producer_carries_them(monkeypatch: pytest.MonkeyPatch):
    from pipeline.stage import StageKafka

    rec = Recorder()
    monkeypatch.setattr(kafka_mod, "Producer", rec)
    monkeypatch.setattr(kafka_mod, "Consumer", lambda conf: mock.MagicMock())
    stage = StageKafka(cfg_with({INFLIGHT: 1}), "process")
    stage.connect("veil-process", ["veil.chunks.raw"], on_revoke=lambda parts: None)
    assert [c["client.id"] for c in rec.confs] == ["veil-process"]
    assert rec.confs[0][INFLIGHT] == 1
    stage.producer.factory()  # the replacement after a fatal error is built the same way
    assert [c[INFLIGHT] for c in rec.confs] == [1, 1]


def test_ingests_producer_carries_them(monkeypatch: pytest.MonkeyPatch):
    """IngestWorker.run() builds its producer (and the factory that replaces it) from the config."""
    import pipeline.runtime as runtime_mod
    import pipeline.stage as stage_mod
    from pipeline.ingest.worker import IngestWorker

    rec = Recorder()
    monkeypatch.setattr(kafka_mod, "Producer", rec)
    monkeypatch.setattr(stage_mod, "registry_consumer_for", lambda *a, **k: mock.MagicMock())

    class Runtime:  # the registry loop itself is not what this test is about: stops at once, as on SIGTERM
        def __init__(self, stage: Any, handler: Any, settings: Any, **k: Any) -> None:
            self.handler = handler

        def run(self) -> int:
            list(self.handler.drain())
            self.handler.close()
            return 0

    monkeypatch.setattr(runtime_mod, "StageRuntime", Runtime)
    w = IngestWorker(cfg_with({INFLIGHT: 1, "linger.ms": 50}), threading.Event(), worker_id="w1",
                     publish_static=False)
    assert w.run() == 0
    (conf,) = rec.confs
    assert conf["client.id"] == "veil-ingest-w1" and conf[INFLIGHT] == 1 and conf["linger.ms"] == 50
    assert w.producer_factory is not None
    w.producer_factory()
    assert rec.confs[1][INFLIGHT] == 1


@pytest.mark.parametrize("settings, key, reason", [
    ({"no.such.setting": 1}, "no.such.setting", 'No such configuration property: "no.such.setting"'),
    ({"linger.ms": "soon"}, "linger.ms", "Invalid value"),
    ({INFLIGHT: 10}, INFLIGHT, "must be set <= 5 when `enable.idempotence` is true"),
])
def test_a_setting_librdkafka_refuses_is_one_config_error_naming_the_key(settings: dict[str, Any], key: str,
                                                                          reason: str):
    with pytest.raises(ConfigError) as e:
        chunk_producer(cfg_with(settings).kafka, "veil-x")
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"kafka.producer_settings.{key}: librdkafka refused it: ")
    assert reason in text


def test_several_refused_settings_name_the_others_too():
    with pytest.raises(ConfigError, match=r"^kafka\.producer_settings\.a\.b: .*\(also refused: linger\.ms\)$"):
        chunk_producer(cfg_with({"a.b": 1, "linger.ms": "x", "batch.size": 1000}).kafka, "veil-x")


def test_a_refusal_that_is_not_about_producer_settings_is_not_blamed_on_them(monkeypatch: pytest.MonkeyPatch):
    """librdkafka refusing a setting that is not a producer_settings key (here one of the cluster
    settings, forced invalid) keeps its own error: the config key at fault is not producer_settings."""
    from confluent_kafka import KafkaException

    cfg = cfg_with({"linger.ms": 10})
    monkeypatch.setattr(kafka_mod, "client_settings",
                        lambda k, **kw: {"bootstrap.servers": k.bootstrap_servers, "not.a.cluster.setting": 1})
    with pytest.raises(KafkaException, match="not.a.cluster.setting"):
        chunk_producer(cfg.kafka, "veil-x")


# ---------------------------------------------------------------- the local stack


def test_the_local_stacks_config_has_one_request_in_flight(tmp_path: Path):
    from pipeline.devstack.stack import worker_config

    raw = worker_config("127.0.0.1:9092", "http://127.0.0.1:9000", None, tmp_path)
    assert raw["kafka"]["producer_settings"] == {INFLIGHT: 1}
    assert parse_config(raw).kafka.producer_settings == {INFLIGHT: 1}
