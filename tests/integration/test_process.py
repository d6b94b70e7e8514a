"""`veilstream process` against the real broker and a local Ray head.

Raw chunks of carphone_pristine.mp4 (a face in every frame) go in; redacted H.264 chunks
come out whose decoded frames have the face masked. Bad messages go to the DLQ with a
reason; a detector that raises or hangs fails closed (frames masked whole and flagged);
offsets are committed only up to what is durable downstream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from operators.codec import decode_chunk_payload, split_gops
from operators.video import sample_video
from pipeline.devstack.broker import create_topics
from schemas.config import parse_config
from schemas.messages import ChunkCaptured, decode_chunk_redacted, decode_dlq, encode_chunk
from tests.shared import MODELS as SHARED_MODELS

pytestmark = pytest.mark.integration

CAMERA = "cam-carphone"


def carphone_chunks(camera: str = CAMERA, seconds: float = 1.0) -> list[ChunkCaptured]:
    now = int(time.time() * 1000)
    out = []
    for seq, g in enumerate(split_gops(sample_video("carphone_pristine.mp4"), seconds)):
        out.append(ChunkCaptured(camera_id=camera, chunk_seq=seq, pts_ms=tuple(g.pts_ms), fps=g.fps,
                                 width=g.width, height=g.height, codec="h264",
                                 captured_at_ms=now + g.pts_ms[0], payload=g.payload))
    return out


def detail(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


@pytest.fixture
def setup(broker: Any, ray_local: Any, unique_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator:

    models = SHARED_MODELS
    monkeypatch.setenv("VEILSTREAM_MODEL_DIR", str(models))
    topics = {"raw": f"{unique_name}-raw", "redacted": f"{unique_name}-red", "dlq": f"{unique_name}-dlq",
              "cameras": f"{unique_name}-cams", "audit": f"{unique_name}-audit"}
    create_topics(broker.bootstrap, {topics["raw"]: 2, topics["redacted"]: 2, topics["dlq"]: 1})
    cfg = parse_config({
        "kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics, "session_timeout_ms": 6000},
        "ray": {"address": ray_local.address, "chunk_workers": 1, "worker_num_cpus": 0.5,
                "detector": {"num_cpus": 0.5, "replicas": 1}},
        # fill (not mosaic) so that "masked" is checkable pixel by pixel after H.264
        "process": {"consumer_group": f"{unique_name}-g", "style": "fill", "detector_timeout_s": 20.0, "drain_timeout_s": 30.0,
                    "status_interval_s": 2.0},
        "metrics": {"enabled": False},
    })
    yield cfg


def start_worker(cfg: Any) -> tuple[Any, threading.Event, threading.Thread]:
    from pipeline.process.worker import ProcessWorker

    stop = threading.Event()
    w = ProcessWorker(cfg, stop)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            w.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    w._errors = errors  # type: ignore[attr-defined]
    deadline = time.monotonic() + 180
    while not w.metrics.ready and time.monotonic() < deadline:
        assert not errors, errors
        time.sleep(0.2)
    assert w.metrics.ready, "process worker did not become ready"
    return w, stop, t


def produce(cfg: Any, items: list[tuple[bytes | None, list[tuple[str, bytes]] | None, str]]) -> None:
    p = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "message.max.bytes": 16 << 20})
    for value, headers, key in items:
        p.produce(cfg.kafka.topics.raw, value=value, key=key, headers=headers)
    assert p.flush(30) == 0


def consume_all(cfg: Any, topic: str, expected: int, timeout_s: float = 240) -> list[Any]:
    """Up to ``expected`` messages of every partition of ``topic`` from the beginning, or what
    ``timeout_s`` gives. Partitions are assigned, not subscribed: a group join on tansu takes about
    session.timeout.ms / 2 (3 s), which every read paid and which a "nothing more" read (a few
    seconds' timeout) spent mostly joining instead of reading."""
    c = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": f"reader-{time.time_ns()}",
                  "enable.auto.commit": False, "fetch.message.max.bytes": 16 << 20})
    md = c.list_topics(topic, timeout=10)
    assert topic in md.topics and md.topics[topic].partitions, f"topic {topic} not found"
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    c.close()
    return got


def committed(cfg: Any) -> int:
    c = Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "group.id": cfg.process.consumer_group})
    parts = [TopicPartition(cfg.kafka.topics.raw, p) for p in range(2)]
    offs = c.committed(parts, timeout=10)
    c.close()
    return sum(max(0, tp.offset) for tp in offs)


def stop_worker(stop: threading.Event, t: threading.Thread, w: Any) -> None:
    stop.set()
    t.join(90)
    assert not t.is_alive(), "process worker did not stop"
    assert not w._errors, w._errors


def test_carphone_face_masked_bad_messages_to_dlq_offsets_committed(setup: Any) -> None:
    cfg = setup
    chunks = carphone_chunks()
    items: list[tuple[bytes | None, list[tuple[str, bytes]] | None, str]] = []
    for ch in chunks:
        value, headers = encode_chunk(ch)
        items.append((value, list(headers), CAMERA))
    # a chunk whose headers are valid but whose H.264 payload is garbage
    bad = ChunkCaptured(camera_id="cam-broken", chunk_seq=0, pts_ms=(0, 33), fps=30.0, width=176, height=144,
                        codec="h264", captured_at_ms=int(time.time() * 1000), payload=b"\x00\x00\x01garbage" * 50)
    v, h = encode_chunk(bad)
    items.append((v, list(h), "cam-broken"))
    items.append((b"not a chunk", None, "cam-nohdr"))  # no schema headers at all
    produce(cfg, items)

    w, stop, t = start_worker(cfg)
    try:
        out = consume_all(cfg, cfg.kafka.topics.redacted, len(chunks))
        dlq = consume_all(cfg, cfg.kafka.topics.dlq, 2, timeout_s=60)
        deadline = time.monotonic() + 30
        while committed(cfg) < len(items) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(cfg) == len(items)
    finally:
        stop_worker(stop, t, w)

    assert len(out) == len(chunks)
    red = sorted((decode_chunk_redacted(m.value(), m.headers()) for m in out), key=lambda r: r.chunk_seq)
    assert [r.chunk_seq for r in red] == [c.chunk_seq for c in chunks]
    assert all(m.key() == CAMERA.encode() for m in out)
    originals = {c.chunk_seq: decode_chunk_payload("h264", c.payload) for c in chunks}
    from operators.detectors import CenterFaceDetector

    faces = CenterFaceDetector(threshold=0.4, model_dir=None)
    frames_out = 0
    for r in red:
        assert r.codec == "h264" and r.fail_closed_frames == ()
        assert r.pts_ms == chunks[r.chunk_seq].pts_ms
        assert r.masks_per_class["face"] >= len(r.pts_ms)  # a face in every frame
        assert {m["id"] for m in r.models} >= {"centerface", "yolox_person", "ppocr_text"}
        frames = decode_chunk_payload("h264", r.payload)
        orig = originals[r.chunk_seq]
        assert frames.shape == orig.shape
        frames_out += len(frames)
        # every face the detector finds in the original is a flat fill in the redacted frame,
        # and the detector finds no face in any redacted frame
        in_boxes = faces.detect(orig)
        assert sum(len(b) > 0 for b in in_boxes) >= 0.9 * len(orig)
        for i, b in enumerate(in_boxes):
            for x1, y1, x2, y2 in b.xyxy:
                cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 0.3, (y2 - y1) * 0.3
                inner = frames[i, int(cy - hh):int(cy + hh), int(cx - hw):int(cx + hw)]
                assert float(inner.std()) < 6.0, (r.chunk_seq, i, float(inner.std()))
        found_out = [i for i, b in enumerate(faces.detect(frames)) if len(b)]
        assert found_out == [], (r.chunk_seq, found_out)
    assert frames_out == 120
    reasons = sorted(decode_dlq(m.value(), m.headers()).reason for m in dlq)
    assert reasons == ["decode_failed", "invalid_message"]


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_detector_failure_fails_closed(setup: Any, mode: str) -> None:
    cfg = setup
    if mode == "hang":
        cfg = parse_config({**_as_dict(cfg), "process": {**_as_dict(cfg)["process"], "detector_timeout_s": 4.0}})
    chunks = carphone_chunks(seconds=1.0)[:1]
    w, stop, t = start_worker(cfg)
    try:
        import ray

        ray.get(w.detectors[0].fail_next.remote(mode))
        v, h = encode_chunk(chunks[0])
        produce(cfg, [(v, list(h), CAMERA)])
        out = consume_all(cfg, cfg.kafka.topics.redacted, 1, timeout_s=120)
    finally:
        stop_worker(stop, t, w)
    assert len(out) == 1
    r = decode_chunk_redacted(out[0].value(), out[0].headers())
    n = len(chunks[0].pts_ms)
    assert r.fail_closed_frames == tuple(range(n))
    frames = decode_chunk_payload("h264", r.payload)
    orig = decode_chunk_payload("h264", chunks[0].payload)
    assert len(frames) == n
    # masked whole: the frame is one flat colour, nothing of the original left
    assert all(float(f.std()) < 3.0 for f in frames)
    assert all(detail(o) > 10 for o in orig)


@pytest.mark.parametrize("split_min_frames", [2, 0])
def test_a_chunk_split_across_two_detectors_fails_closed_whole_when_one_half_fails(setup: Any,
                                                                                  split_min_frames: int) -> None:
    """Two detector actors (node-local groups, one chunk actor each), both idle: a chunk's scheduled
    frames go in halves to both (``ChunkActor._detect``); detector 0 raises on its half, the
    chunk's dispatch goes to the other group first (detector 1, healthy), so only the split puts
    frames on detector 0, and then every frame of the chunk is masked whole. With
    ``ray.detector.split_min_frames`` 0 the chunk goes whole to detector 1 and is redacted."""
    d = _as_dict(setup)
    cfg = parse_config({**d, "ray": {**d["ray"], "chunk_workers": 2, "worker_num_cpus": 0.25,
                                     "detector": {**d["ray"]["detector"], "replicas": 2, "num_cpus": 0.5,
                                                  "split_min_frames": split_min_frames}}})
    chunks = carphone_chunks(seconds=1.0)[:1]
    w, stop, t = start_worker(cfg)
    try:
        import ray

        ray.get(w.detectors[0].fail_next.remote("raise"))
        v, h = encode_chunk(chunks[0])
        produce(cfg, [(v, list(h), CAMERA)])
        out = consume_all(cfg, cfg.kafka.topics.redacted, 1, timeout_s=120)
        calls = ray.get([d.__ray_call__.remote(lambda self: self.calls) for d in w.detectors])
    finally:
        stop_worker(stop, t, w)
    assert len(out) == 1
    r = decode_chunk_redacted(out[0].value(), out[0].headers())
    n = len(chunks[0].pts_ms)
    if split_min_frames:
        assert calls == [1, 1], calls  # one half each
        assert r.fail_closed_frames == tuple(range(n))
        assert all(float(f.std()) < 3.0 for f in decode_chunk_payload("h264", r.payload))
    else:
        assert calls == [0, 1], calls  # whole, to the healthy detector
        assert r.fail_closed_frames == ()


def _as_dict(cfg: Any) -> dict[str, Any]:
    from schemas.config import config_to_dict

    return config_to_dict(cfg)  # type: ignore[no-any-return]


def test_a_drop_policy_drops_failed_frames_counts_them_and_commits(setup: Any, tmp_path: Any) -> None:
    """policies_dir: the policy's on_failure=drop leaves frames whose detection failed out (a
    chunk with none left is not produced), counts them, commits past them; later chunks carry
    the policy's id and version."""
    (tmp_path / "subway.yaml").write_text("policy_id: subway\nversion: 7\non_failure: drop\nstyle: fill\n")
    d = _as_dict(setup)
    d["policies_dir"] = str(tmp_path)
    d["process"]["policy_id"] = "subway"
    cfg = parse_config(d)
    import dataclasses

    first = carphone_chunks(seconds=1.0)[0]  # one GOP: the whole clip
    chunks = [first, dataclasses.replace(first, chunk_seq=1)]
    w, stop, t = start_worker(cfg)
    try:
        import ray

        ray.get(w.detectors[0].fail_next.remote("raise"))
        v, h = encode_chunk(chunks[0])
        produce(cfg, [(v, list(h), CAMERA)])
        deadline = time.monotonic() + 120
        while committed(cfg) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(cfg) == 1, "the dropped chunk's offset was not committed"
        v, h = encode_chunk(chunks[1])
        produce(cfg, [(v, list(h), CAMERA)])
        out = consume_all(cfg, cfg.kafka.topics.redacted, 1, timeout_s=120)
        time.sleep(1.0)  # nothing else may follow
        out += consume_all(cfg, cfg.kafka.topics.redacted, 2, timeout_s=3)[1:]
        dropped = w.metrics.value("veil_process_dropped_frames_total", {"reason": "detection_failed"})
    finally:
        stop_worker(stop, t, w)
    assert len(out) == 1
    r = decode_chunk_redacted(out[0].value(), out[0].headers())
    assert (r.chunk_seq, r.policy_id, r.policy_version, r.fail_closed_frames) == (1, "subway", 7, ())
    assert len(decode_chunk_payload("h264", r.payload)) == len(chunks[1].pts_ms)
    assert dropped == len(chunks[0].pts_ms)


def test_chunks_are_redacted_by_their_camera_policy_unknown_policy_to_dlq(setup: Any, tmp_path: Any) -> None:
    """One process worker, two policies: each chunk is masked and stamped by the policy its
    camera names (none = the default); a camera naming a policy nobody wrote goes to the DLQ."""
    import dataclasses

    (tmp_path / "default.yaml").write_text("policy_id: default\nversion: 2\nclasses: [face]\nstyle: fill\n")
    (tmp_path / "people.yaml").write_text("policy_id: people\nversion: 5\nclasses: [face, person]\nstyle: fill\n")
    d = _as_dict(setup)
    d["policies_dir"] = str(tmp_path)
    cfg = parse_config(d)
    base = carphone_chunks(seconds=1.0)[0]
    chunks = [base, dataclasses.replace(base, chunk_seq=1, policy_id="people"),
              dataclasses.replace(base, chunk_seq=2, policy_id="missing")]
    w, stop, t = start_worker(cfg)
    try:
        items = []
        for c in chunks:
            v, h = encode_chunk(c)
            items.append((v, list(h), CAMERA))
        produce(cfg, items)
        out = consume_all(cfg, cfg.kafka.topics.redacted, 2, timeout_s=180)
        dlq = consume_all(cfg, cfg.kafka.topics.dlq, 1, timeout_s=30)
    finally:
        stop_worker(stop, t, w)
    got = {r.chunk_seq: r for r in (decode_chunk_redacted(m.value(), m.headers()) for m in out)}
    assert sorted(got) == [0, 1]
    assert (got[0].policy_id, got[0].policy_version, sorted(got[0].masks_per_class)) == ("default", 2, ["face"])
    assert (got[1].policy_id, got[1].policy_version, sorted(got[1].masks_per_class)) == (
        "people", 5, ["face", "person"])
    assert got[1].masks_per_class["person"] > 0
    # the person policy masks far more of the frame than the face-only one
    f0 = decode_chunk_payload("h264", got[0].payload)
    f1 = decode_chunk_payload("h264", got[1].payload)
    flat0 = np.mean([float((cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.CV_64F) == 0).mean()) for f in f0])
    flat1 = np.mean([float((cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.CV_64F) == 0).mean()) for f in f1])
    assert flat1 > flat0 + 0.05, (flat0, flat1)
    assert len(dlq) == 1
    rec = decode_dlq(dlq[0].value(), dlq[0].headers())
    assert rec.reason == "unknown_policy" and "'missing'" in rec.error and "default, people" in rec.error


def test_an_actor_lost_while_chunks_are_in_flight_is_retried_never_dead_lettered(setup: Any) -> None:
    """Issue 12 item 6: the detector actor dies (a node going away) while a chunk waits on
    it. The chunk is an outage, not bad input: it is retried on the restarted actor and
    comes out redacted normally (nothing failed closed); nothing goes to the DLQ."""
    cfg = parse_config({**_as_dict(setup), "process": {**_as_dict(setup)["process"], "detector_timeout_s": 120.0}})
    chunks = carphone_chunks(seconds=1.0)[:1]
    w, stop, t = start_worker(cfg)
    try:
        import ray

        ray.get(w.detectors[0].fail_next.remote("hang"))  # the chunk will sit in the detector
        v, h = encode_chunk(chunks[0])
        produce(cfg, [(v, list(h), CAMERA)])
        deadline = time.monotonic() + 60
        while not w.inflight and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)
        ray.kill(w.detectors[0], no_restart=False)  # dies with the chunk in flight; Ray restarts it
        out = consume_all(cfg, cfg.kafka.topics.redacted, 1, timeout_s=180)
        dlq = consume_all(cfg, cfg.kafka.topics.dlq, 1, timeout_s=3)
        deadline = time.monotonic() + 30
        while committed(cfg) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        outages = w.metrics.value("veil_process_errors_total", {"kind": "ray_outage"})
    finally:
        stop_worker(stop, t, w)
    assert dlq == [] and len(out) == 1 and committed(cfg) == 1
    r = decode_chunk_redacted(out[0].value(), out[0].headers())
    assert r.fail_closed_frames == () and r.masks_per_class["face"] >= len(r.pts_ms)
    assert outages >= 1


def test_consumer_actors_in_the_cluster_redact_and_stop_cleanly(setup: Any) -> None:
    """Production shape (ray.consumers: 1): the consumer loop runs in an actor inside the
    cluster; the supervising job only starts and stops it."""

    from pipeline.process.consumers import supervise

    d = _as_dict(setup)
    d["ray"]["consumers"] = 1
    d["process"]["model_dir"] = str(SHARED_MODELS)
    cfg = parse_config(d)
    chunks = carphone_chunks(seconds=1.0)[:1]
    v, h = encode_chunk(chunks[0])
    produce(cfg, [(v, list(h), CAMERA)])
    stop = threading.Event()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(supervise(cfg, stop, poll_s=0.5)), daemon=True)
    t.start()
    try:
        out = consume_all(cfg, cfg.kafka.topics.redacted, 1, timeout_s=240)
        deadline = time.monotonic() + 30
        while committed(cfg) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        t.join(180)
    assert result == [0] and len(out) == 1 and committed(cfg) == 1
    r = decode_chunk_redacted(out[0].value(), out[0].headers())
    assert r.fail_closed_frames == () and r.masks_per_class["face"] >= len(r.pts_ms)


def test_two_workers_in_one_group_hand_over_without_a_gap(setup: Any) -> None:
    """Gapless rollout (the submitter rolls surge-first): worker B, the new job, joins the same
    consumer group while A, the old one, still runs; the group rebalances and B produces redacted
    chunks while A is still running; then A stops (pause, drain, flush, commit, leave). Every chunk
    comes out redacted (at least once), none is dead-lettered, every offset is committed."""
    import dataclasses

    cfg = setup
    base = carphone_chunks(seconds=1.0)[0]
    p = Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers, "message.max.bytes": 16 << 20})
    sent: list[tuple[str, int]] = []

    def batch(seq: int) -> None:  # one chunk on each of the raw topic's 2 partitions
        for part in (0, 1):
            camera = f"cam-p{part}"
            v, h = encode_chunk(dataclasses.replace(base, camera_id=camera, chunk_seq=seq))
            p.produce(cfg.kafka.topics.raw, value=v, key=camera, headers=list(h), partition=part)
            sent.append((camera, seq))
        assert p.flush(30) == 0

    a, stop_a, t_a = start_worker(cfg)
    b = None
    try:
        batch(0)  # A alone owns both partitions
        deadline = time.monotonic() + 180
        while a.produced < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert a.produced == 2
        b, stop_b, t_b = start_worker(cfg)  # the new job: same group, A keeps running
        batch(1)
        deadline = time.monotonic() + 240
        while b.produced < 1 and time.monotonic() < deadline:  # B got a partition by rebalance
            assert t_a.is_alive() and not stop_a.is_set()
            time.sleep(0.2)
        # the ordering the rollout relies on: B produced before A was even asked to stop
        assert b.produced >= 1 and t_a.is_alive() and not stop_a.is_set()
        b_before_a_stopped = b.produced
        batch(2)  # in flight somewhere while A stops: A drains its share, B takes over the rest
        stop_worker(stop_a, t_a, a)
        assert b_before_a_stopped >= 1
        out = consume_all(cfg, cfg.kafka.topics.redacted, len(sent), timeout_s=300)
        deadline = time.monotonic() + 60
        while committed(cfg) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(cfg) == len(sent)
        dlq = consume_all(cfg, cfg.kafka.topics.dlq, 1, timeout_s=3)
    finally:
        if not stop_a.is_set():
            stop_worker(stop_a, t_a, a)
        if b is not None:
            stop_worker(stop_b, t_b, b)
    got = [decode_chunk_redacted(m.value(), m.headers()) for m in out]
    assert {(r.camera_id, r.chunk_seq) for r in got} == set(sent)  # every chunk, at least once
    assert dlq == []
    assert all(r.fail_closed_frames == () and r.masks_per_class["face"] >= len(r.pts_ms) for r in got)
    assert a.produced + b.produced >= len(sent) and a.produced >= 2 and b.produced >= 1


def test_the_process_job_scales_its_consumers_on_lag_and_drains_the_one_it_stops(
        setup: Any, caplog: pytest.LogCaptureFixture) -> None:
    """ray.autoscale on the local Ray and broker: a backlog on the raw topic starts a second
    consumer actor (never more than the topic's 2 partitions); once the lag is gone one is stopped
    as SIGTERM would stop it (drain, flush, commit). Every chunk comes out, every offset is committed."""
    import dataclasses
    import logging

    from pipeline.process.consumers import supervise

    d = _as_dict(setup)
    d["ray"].update({"consumers": 1, "worker_num_cpus": 0.25,
                     "autoscale": {"min_consumers": 1, "max_consumers": 3, "lag_chunks_per_consumer": 1,
                                   "scale_up_after_s": 0, "scale_down_after_s": 0, "check_interval_s": 1.0}})
    d["ray"]["detector"]["num_cpus"] = 0.25
    d["process"]["model_dir"] = str(SHARED_MODELS)
    cfg = parse_config(d)
    base = carphone_chunks(seconds=1.0)[0]
    items = []
    for seq in range(3):
        for cam in ("cam-a", "cam-b"):
            v, h = encode_chunk(dataclasses.replace(base, camera_id=cam, chunk_seq=seq))
            items.append((v, list(h), cam))
    produce(cfg, items)
    stop = threading.Event()
    result: list[Any] = []
    caplog.set_level(logging.INFO, logger="pipeline.process.consumers")
    t = threading.Thread(target=lambda: result.append(supervise(cfg, stop, poll_s=0.5)), daemon=True)
    t.start()

    def decisions() -> list[str]:
        return [r.getMessage() for r in caplog.records if "process job: consumers " in r.getMessage()]

    try:
        out = consume_all(cfg, cfg.kafka.topics.redacted, len(items), timeout_s=300)
        deadline = time.monotonic() + 120
        while not any(m.startswith("process job: consumers 2 -> 1") for m in decisions()) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        deadline = time.monotonic() + 120
        while not any("process job: consumer 1 stopped exit_code=0" in r.getMessage() for r in caplog.records) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed(cfg) == len(items)
    finally:
        stop.set()
        t.join(180)
    assert result == [0]
    got = decisions()
    assert got[0].startswith("process job: consumers 1 -> 2 (up: lag "), got
    assert not any(" -> 3 " in m for m in got), got  # 2 partitions: a third would own nothing
    assert any(m.startswith("process job: consumers 2 -> 1 (down: lag 0") for m in got), got
    assert any("process job: consumer 1 stopped exit_code=0" in r.getMessage() for r in caplog.records)
    red = {(r.camera_id, r.chunk_seq) for r in (decode_chunk_redacted(m.value(), m.headers()) for m in out)}
    assert red == {(cam, seq) for seq in range(3) for cam in ("cam-a", "cam-b")}
