"""The sink against the real broker (tansu) and the local S3 server (moto), via ``minio``.

2 cameras x 4 redacted chunks (+ 1 corrupt message) -> SinkWorker until idle ->
deterministic keys with tags, metadata and manifests; offsets committed; a second run
over the same input writes no duplicates; the corrupt message is in the DLQ with its reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import Any

import av
import numpy as np
import pytest

pytestmark = pytest.mark.integration

T0 = 1795378500000  # 2026-11-22T20:15:00.000Z, a multiple of the 2 s window
FPS = 10.0
CAMERAS = ("cam-a", "cam-b")
CHUNKS_PER_CAMERA = 4  # 1 s each -> two 2 s windows per camera
FRAMES_PER_CHUNK = 10


@pytest.fixture
def setup(broker: Any, s3: Any, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Unique topics, groups and bucket on the shared session broker and S3 server."""
    from pipeline.devstack.broker import create_topics
    from schemas.config import parse_config

    bootstrap = broker.bootstrap
    run = unique_name[-8:]
    topics = {"raw": f"raw-{run}", "redacted": f"redacted-{run}", "dlq": f"dlq-{run}",
              "cameras": f"cameras-{run}", "audit": f"audit-{run}"}
    create_topics(bootstrap, {topics["redacted"]: 2, topics["dlq"]: 1},
                  config={"max.message.bytes": str(16 * 1024 * 1024)})
    # the config names the env vars; the store reads them when it connects
    monkeypatch.setenv("VEIL_TEST_S3_ACCESS", s3.access_key)
    monkeypatch.setenv("VEIL_TEST_S3_SECRET", s3.secret_key)
    endpoint = s3.endpoint

    def config(group: str) -> Any:
        return parse_config({
            "kafka": {"bootstrap_servers": bootstrap, "topics": topics, "session_timeout_ms": 6000},
            "object_store": {"endpoint": endpoint, "bucket": f"redacted-{run}", "secure": False,
                             "access_key_env": "VEIL_TEST_S3_ACCESS", "secret_key_env": "VEIL_TEST_S3_SECRET"},
            "sink": {"consumer_group": group, "segment_seconds": 2, "idle_flush_s": 0.5},
            "metrics": {"enabled": False},
        })

    return {"config": config, "topics": topics, "bootstrap": bootstrap, "run": run}


def _produce_input(bootstrap: str, topic: str) -> int:
    from operators.codec import encode_h264_chunk
    from pipeline.kafka import ChunkProducer
    from schemas.messages import ChunkRedacted, encode_chunk

    p = ChunkProducer(bootstrap, client_id="test-sink-input")
    rng = np.random.default_rng(0)
    n = 0
    for cam in CAMERAS:
        for seq in range(CHUNKS_PER_CAMERA):
            frames = rng.integers(0, 255, (FRAMES_PER_CHUNK, 48, 64, 3), dtype=np.uint8)
            start = T0 + seq * 1000
            c = ChunkRedacted(camera_id=cam, chunk_seq=seq,
                              pts_ms=tuple(start + i * 100 for i in range(FRAMES_PER_CHUNK)), fps=FPS,
                              width=64, height=48, codec="h264", captured_at_ms=int(time.time() * 1000),
                              payload=encode_h264_chunk(frames, FPS), masks_per_class={"face": seq, "plate": 1},
                              fail_closed_frames=(0,) if seq == 3 else (),
                              models=({"id": "centerface", "version": "1.0"},), policy_id="city",
                              policy_version=2)
            value, headers = encode_chunk(c)
            p.produce_sync(topic, value, cam, headers)
            n += 1
    # a corrupt message: its metadata header is not JSON
    p.produce_sync(topic, b"\x00garbage", "cam-a", [("veil-meta", b"{not json"), ("schema_version", b"1"),
                                                     ("veil-type", b"ChunkRedacted")])
    p.flush()
    return n + 1


def _run_sink(config: Any, store: Any) -> Any:
    from pipeline.sink.worker import SinkWorker

    w = SinkWorker(config, store)
    t = time.monotonic()
    assert w.run(exit_when_idle_s=4.0) == 0
    assert time.monotonic() - t < 90
    return w


def _expected_keys() -> set[str]:
    from pipeline.objectkeys import segment_key

    keys = set()
    for cam in CAMERAS:
        for w in range(CHUNKS_PER_CAMERA // 2):
            k = segment_key(cam, T0 + w * 2000, T0 + (w + 1) * 2000)
            keys |= {k, k[:-4] + ".json"}
    return keys


def _committed(bootstrap: str, group: str, topic: str) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(2)]
        committed = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
        high = sum(c.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in parts)
        return committed, high
    finally:
        c.close()


def test_sink_end_to_end(setup: dict[str, Any]) -> None:
    from pipeline.kafka import ChunkConsumer
    from pipeline.objectstore import MinioSegmentStore
    from schemas.messages import decode_dlq

    topics, bootstrap = setup["topics"], setup["bootstrap"]
    total = _produce_input(bootstrap, topics["redacted"])
    group = f"sink-{setup['run']}"
    cfg = setup["config"](group)
    store = MinioSegmentStore.from_config(cfg.object_store)
    store.ensure_bucket()

    w = _run_sink(cfg, store)
    keys = set(store.list_objects("camera="))
    assert keys == _expected_keys()
    assert sorted(w.written_keys) == sorted(k for k in keys if k.endswith(".mp4"))

    # manifest, tags, metadata, and the mp4 itself
    key = "camera=cam-a/date=2026-11-22/hour=20/20261122T201500000Z_20261122T201502000Z.mp4"
    mp4 = store.get_object(key)
    man = json.loads(store.get_object(key[:-4] + ".json"))
    sha = hashlib.sha256(mp4).hexdigest()
    assert man["sha256"] == sha and man["camera_id"] == "cam-a" and man["chunk_seqs"] == [0, 1]
    assert man["frames"] == 2 * FRAMES_PER_CHUNK and man["masks_per_class"] == {"face": 1, "plate": 2}
    assert man["policy_id"] == "city" and man["models"] == [{"id": "centerface", "version": "1.0"}]
    assert {o["topic"] for o in man["source_offsets"]} == {topics["redacted"]}
    tags = store.get_tags(key)
    assert tags["camera"] == "cam-a" and tags["policy"] == "city:2" and tags["frames"] == "20"
    assert tags["masks_face"] == "1" and tags["models"] == "centerface@1.0"
    info = store.stat_object(key)
    assert info is not None and info.content_type == "video/mp4"
    assert info.metadata["sha256"] == sha and info.metadata["camera"] == "cam-a"
    with av.open(io.BytesIO(mp4)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2 * FRAMES_PER_CHUNK
    late = json.loads(store.get_object(
        "camera=cam-b/date=2026-11-22/hour=20/20261122T201502000Z_20261122T201504000Z.json"))
    assert late["fail_closed_frames"] == 1 and late["fail_closed_pts_ms"] == [T0 + 3000]

    # every offset committed: a new member of the group gets nothing
    committed, high = _committed(bootstrap, group, topics["redacted"])
    assert committed == high == total
    c = ChunkConsumer(bootstrap, group, [topics["redacted"]], session_timeout_ms=6000)
    try:
        got = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            got += c.poll(0.5)
        assert got == []
    finally:
        c.close()

    # the corrupt message is in the DLQ with its reason
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    # assigned, not subscribed: no ~3 s group join (half of session.timeout.ms on tansu)
    d = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dlq-{setup['run']}", "enable.auto.commit": False})
    try:
        d.assign([TopicPartition(topics["dlq"], 0, OFFSET_BEGINNING)])
        dlq = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not dlq:
            m = d.poll(0.5)
            if m is not None and not m.error():
                dlq.append(m)
    finally:
        d.close()
    assert len(dlq) == 1
    rec = decode_dlq(dlq[0].value(), dlq[0].headers())
    assert rec.reason == "invalid_message" and rec.source_topic == topics["redacted"]
    assert "not JSON" in rec.error and dlq[0].value() == b"\x00garbage"

    # a replay (new group: from the start) writes the same keys and no duplicates
    before = {k: store.stat_object(k).etag for k in keys}
    w2 = _run_sink(setup["config"](f"sink2-{setup['run']}"), store)
    assert set(store.list_objects("camera=")) == keys
    assert {k: store.stat_object(k).etag for k in keys} == before
    assert w2.metrics.value("veil_sink_segments_written_total", {"outcome": "skip"}) == 4


def test_object_lock_bucket_accepts_segment_puts(s3: Any, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checksum header lets PUTs into an object-lock bucket through (local S3 server quirk)."""
    from pipeline.objectstore import MinioSegmentStore

    monkeypatch.setenv("VEIL_TEST_S3_ACCESS", s3.access_key)
    monkeypatch.setenv("VEIL_TEST_S3_SECRET", s3.secret_key)
    store = MinioSegmentStore(s3.url, unique_name, access_key_env="VEIL_TEST_S3_ACCESS",
                              secret_key_env="VEIL_TEST_S3_SECRET", object_lock=True)
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    r = store.put_object("camera=x/a.mp4", b"\x00" * 1000, "video/mp4", {"camera": "x"}, {"camera": "x"})
    assert r.etag
    assert store.get_object("camera=x/a.mp4") == b"\x00" * 1000
    assert store.get_tags("camera=x/a.mp4") == {"camera": "x"}
    assert store.stat_object("camera=x/missing.mp4") is None


def test_sigterm_flushes_open_segments_commits_and_exits_0(setup: dict[str, Any], tmp_path: Any) -> None:
    import os
    import signal
    import subprocess
    import sys

    import yaml

    from pipeline.objectstore import MinioSegmentStore
    from schemas.config import config_to_dict

    topics, bootstrap = setup["topics"], setup["bootstrap"]
    total = _produce_input(bootstrap, topics["redacted"])
    group = f"sink-term-{setup['run']}"
    cfg = setup["config"](group)
    data = config_to_dict(cfg)
    data["sink"]["idle_flush_s"] = 600  # nothing completes by idling: only SIGTERM can flush
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    log = tmp_path / "sink.log"
    with open(log, "wb") as out:  # exactly as deployed: `veilstream sink --config FILE`
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "sink", "--config", str(path)],
                                stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ), cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"partitions assigned" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        time.sleep(4)  # let it fetch everything (the last window of each camera stays open)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    store = MinioSegmentStore.from_config(cfg.object_store)
    assert set(store.list_objects("camera=")) == _expected_keys(), log.read_text()
    committed, high = _committed(bootstrap, group, topics["redacted"])
    assert committed == high == total


def test_policies_put_every_segment_under_object_lock_retention(setup: dict[str, Any], tmp_path: Any) -> None:
    """policies_dir + object_lock: segments and manifests carry their policy's retention, the
    bucket expires them by the policy-id tag, and nobody can delete a locked version."""
    import datetime as dt

    from minio.error import S3Error

    from pipeline.objectstore import ObjectStoreError
    from pipeline.sinkapp import build_sink
    from schemas.config import config_to_dict, parse_config

    (tmp_path / "city.yaml").write_text("policy_id: city\nversion: 2\nretention: {redacted_days: 45}\n")
    topics, bootstrap = setup["topics"], setup["bootstrap"]
    _produce_input(bootstrap, topics["redacted"])
    data = config_to_dict(setup["config"](f"sink-lock-{setup['run']}"))
    data["policies_dir"] = str(tmp_path)
    data["object_store"]["object_lock"] = True
    cfg = parse_config(data)
    before = dt.datetime.now(dt.UTC)
    w = build_sink(cfg)
    assert w.run(exit_when_idle_s=4.0) == 0
    store = w.store
    keys = set(store.list_objects("camera="))
    assert keys == _expected_keys()
    for key in keys:
        ret = store.get_retention(key)
        assert ret is not None and ret.mode == "GOVERNANCE", key
        assert before + dt.timedelta(days=45) - dt.timedelta(seconds=5) <= ret.until \
            <= dt.datetime.now(dt.UTC) + dt.timedelta(days=45), (key, ret)
        assert store.get_tags(key)["policy-id"] == "city"
    rules = store.client.get_bucket_lifecycle(store.bucket).rules
    assert [(r.rule_id, r.rule_filter.tag.key, r.rule_filter.tag.value, r.expiration.days,
             r.noncurrent_version_expiration.noncurrent_days) for r in rules] == [
        ("veilstream-policy-city", "policy-id", "city", 45, 45)]
    key = sorted(k for k in keys if k.endswith(".mp4"))[0]
    version = store.stat_object(key).version_id
    with pytest.raises(S3Error):
        store.client.remove_object(store.bucket, key, version_id=version)
    assert store.get_object(key)  # still there

    # a bucket that exists without object lock cannot be locked later: say so at start
    data["object_store"]["bucket"] = f"nolock-{setup['run']}"
    data["object_store"]["object_lock"] = False
    build_sink(parse_config(data))
    data["object_store"]["object_lock"] = True
    with pytest.raises(ObjectStoreError, match="object_store.object_lock is true but bucket nolock-"):
        build_sink(parse_config(data))
