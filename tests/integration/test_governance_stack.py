"""Evidence handling on the local stack: real broker (tansu), S3 server with object lock, KMS.

One camera-day is built once per module through the real stages: ``veilstream raw-sink``
seals the raw chunks (H.264 from carphone_pristine.mp4) into the vault, the sink writes
redacted segments with chained manifests and WORM chain records. The tests then drive
the commands (``veilstream subject|case|share|share-open|hold|verify|audit``) through
``pipeline.cli.main`` exactly as an officer would, bad input included.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.integration

T0 = 1795378500000  # 2026-11-22T20:15:00Z
DAY = "2026-11-22"
FPS = 10.0
CHUNK_FRAMES = 10
CHUNKS = 3
NOTICE = {"purpose": "crime prevention", "scope": "Gate 3, 24h", "contact": "privacy@city.example, 02-120"}


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat().replace("+00:00", "Z")


def _frames() -> np.ndarray:
    from operators.video import VideoReader, sample_video

    with VideoReader(str(sample_video("carphone_pristine.mp4"))) as r:
        out: list[np.ndarray] = []
        for ch in r.chunks(CHUNK_FRAMES):
            out.extend(ch.frames)
            if len(out) >= CHUNK_FRAMES * CHUNKS:
                break
    return np.stack(out[: CHUNK_FRAMES * CHUNKS])


def _cli(*argv: str) -> tuple[int, str, str]:
    import contextlib

    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def stack(broker: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import os
    import uuid

    from operators.codec import encode_h264_chunk
    from pipeline.devstack.broker import create_topics
    from pipeline.governance.rawsink import build_raw_sink
    from pipeline.governance.vault import make_key_file
    from pipeline.ingest.registry import publish_cameras
    from pipeline.kafka import ChunkProducer
    from pipeline.sinkapp import build_sink
    from schemas.config import config_to_dict, parse_camera, parse_config
    from schemas.messages import ChunkCaptured, ChunkRedacted, encode_chunk

    tmp = tmp_path_factory.mktemp("gov")
    run = uuid.uuid4().hex[:8]
    os.environ["VEIL_GOV_S3_ACCESS"], os.environ["VEIL_GOV_S3_SECRET"] = s3.access_key, s3.secret_key
    topics = {"raw": f"raw-{run}", "redacted": f"red-{run}", "dlq": f"dlq-{run}", "cameras": f"cams-{run}",
              "audit": f"audit-{run}"}
    create_topics(broker.bootstrap, {topics["raw"]: 2, topics["redacted"]: 2, topics["dlq"]: 1,
                                     topics["cameras"]: 2, topics["audit"]: 1},
                  config={"max.message.bytes": str(16 * 1024 * 1024)},
                  per_topic={topics["cameras"]: {"cleanup.policy": "compact"}})
    pdir = tmp / "policies"
    pdir.mkdir()
    for pid, raw_days in (("vault", 2), ("noraw", 0)):
        (pdir / f"{pid}.yaml").write_text(yaml.safe_dump({"policy_id": pid, "retention": {
            "redacted_days": 1, "raw_days": raw_days, "mode": "GOVERNANCE"}}))
    key_file = tmp / "master.key"
    make_key_file(key_file)
    raw_cfg = {
        "policies_dir": str(pdir),
        "kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics, "session_timeout_ms": 6000,
                  "raw_retention_ms": 3_600_000},
        "object_store": {"endpoint": s3.endpoint, "bucket": f"red-{run}", "audit_bucket": f"audit-{run}",
                         "raw_bucket": f"raw-{run}", "object_lock": True, "access_key_env": "VEIL_GOV_S3_ACCESS",
                         "secret_key_env": "VEIL_GOV_S3_SECRET"},
        "raw_vault": {"key_file": str(key_file), "consumer_group": f"raw-sink-{run}"},
        "sink": {"consumer_group": f"sink-{run}", "segment_seconds": 2, "idle_flush_s": 0.5},
        "metrics": {"enabled": False},
    }
    cfg = parse_config(raw_cfg)
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    publish_cameras(cfg, [parse_camera({"camera_id": "cam-s", "url": "rtsp://10.0.0.1/s", "kind": "rtsp",
                                        "policy_id": "vault", "notice": NOTICE}),
                          parse_camera({"camera_id": "cam-n", "url": "rtsp://10.0.0.1/n", "kind": "rtsp",
                                        "policy_id": "noraw"})])
    frames = _frames()
    prod = ChunkProducer(broker.bootstrap, client_id="test-gov")
    for cam, pol in (("cam-s", "vault"), ("cam-n", "noraw")):
        for seq in range(CHUNKS):
            f = frames[seq * CHUNK_FRAMES:(seq + 1) * CHUNK_FRAMES]
            pts = tuple(T0 + seq * 1000 + i * 100 for i in range(CHUNK_FRAMES))
            payload = encode_h264_chunk(f, FPS)
            common = dict(camera_id=cam, chunk_seq=seq, pts_ms=pts, fps=FPS, width=176, height=144, codec="h264",
                          captured_at_ms=int(time.time() * 1000), payload=payload)
            v, h = encode_chunk(ChunkCaptured(**common, policy_id=pol))
            prod.produce_sync(topics["raw"], v, cam, h)
            # the "redacted" copy: content does not matter to governance, only its objects
            v, h = encode_chunk(ChunkRedacted(**common, masks_per_class={"face": 1}, policy_id=pol, policy_version=1))
            prod.produce_sync(topics["redacted"], v, cam, h)
    prod.flush()
    rs = build_raw_sink(cfg)
    assert rs.run(exit_when_idle_s=3.0) == 0
    sink = build_sink(cfg)
    assert sink.run(exit_when_idle_s=3.0) == 0
    return {"cfg": cfg, "path": str(cfg_path), "run": run, "raw_sink": rs, "sink": sink, "frames": frames,
            "tmp": tmp, "key_file": key_file, "s3": s3, "topics": topics, "raw_cfg": raw_cfg,
            "bootstrap": broker.bootstrap}


def _committed_all(bootstrap: str, group: str, topic: str) -> bool:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in range(2)]
        committed = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
        high = sum(c.get_watermark_offsets(tp, timeout=5, cached=False)[1] for tp in parts)
        return committed == high and high > 0
    finally:
        c.close()


def test_raw_vault_objects_are_sealed_under_lock_and_offsets_committed(stack: dict[str, Any]) -> None:
    import av

    from pipeline.governance.rawsink import raw_store

    cfg = stack["cfg"]
    store = raw_store(cfg)
    keys = sorted(store.list_objects("camera="))
    assert len(keys) == CHUNKS and all(k.startswith("camera=cam-s/") for k in keys), keys  # cam-n keeps no raw
    assert stack["raw_sink"].outcomes.labels(outcome="policy_keeps_no_raw")._value.get() == CHUNKS
    for k in keys:
        blob = store.get_object(k)
        assert b"\x00\x00\x01" not in blob and b"\x00\x00\x00\x01" not in blob
        with pytest.raises((av.FFmpegError, ValueError)):
            with av.open(io.BytesIO(blob), mode="r") as c:
                list(c.decode(video=0))
        ret = store.get_retention(k)
        assert ret is not None and ret.mode == "GOVERNANCE"
    assert sorted(store.list_objects("keys/")) == [f"keys/camera=cam-s/date={DAY}.key"]  # one data key per day
    assert _committed_all(stack["bootstrap"], cfg.raw_vault.consumer_group, cfg.kafka.topics.raw)


def test_manifests_are_chained_stamped_with_the_notice_and_verify(stack: dict[str, Any]) -> None:
    from pipeline.objectstore import MinioSegmentStore

    cfg = stack["cfg"]
    store = MinioSegmentStore.from_config(cfg.object_store)
    mans = [json.loads(store.get_object(k)) for k in sorted(store.list_objects("camera=cam-s/")) if k.endswith(".json")]
    assert [m["chain"]["seq"] for m in mans] == [1, 2]
    assert mans[0]["chain"]["prev_sha256"] is None
    first = store.get_object(mans[1]["chain"]["prev_key"])
    assert mans[1]["chain"]["prev_sha256"] == hashlib.sha256(first).hexdigest()
    assert all(m["notice"] == NOTICE for m in mans)
    rc, out, _err = _cli("verify", "--config", stack["path"], "--camera", "cam-s", "--date", DAY, "--actor", "auditor")
    assert rc == 0 and "OK" in out, out
    rc, out, _err = _cli("cameras", "list", "--config", stack["path"])
    assert rc == 0 and "crime prevention" in out and "privacy@city.example" in out, out
    rc, _out, err = _cli("cameras", "add", "cam-x", "rtsp://10.0.0.1/x", "--policy-id", "noraw", "--purpose",
                         "traffic", "--scope", "crossing 4", "--contact", "02-120", "--config", stack["path"],
                         "--actor", "ops.lee")
    assert rc == 0, err
    rc, out, _err = _cli("audit", "list", "--config", stack["path"], "--json")
    events = [json.loads(line) for line in out.splitlines()]
    add = [e for e in events if e["action"] == "camera_add"]
    assert add and add[-1]["actor"] == "ops.lee" and add[-1]["details"]["cam-x"]["notice"]["purpose"] == "traffic"
    # the sink recorded the policies it started with
    assert {e["details"]["policy_id"] for e in events if e["action"] == "policy_change"} == {"vault", "noraw"}


def test_subject_and_case_exports_are_recorded(stack: dict[str, Any]) -> None:
    import av

    from operators.subject import subject_redactor
    from operators.types import Label

    frames = stack["frames"]
    det = subject_redactor().detect(frames[12:13])[0][0]
    persons = det.xyxy[det.label == Label.PERSON]
    faces = det.xyxy[det.label == Label.FACE]
    b = persons[0] if len(persons) else faces[0]
    x, y, w, h = int(b[0]), int(b[1]), int(b[2] - b[0]), int(b[3] - b[1])
    out = stack["tmp"] / "subject.mp4"
    t1, t2, at = _iso(T0), _iso(T0 + CHUNKS * 1000), _iso(T0 + 1200)
    rc, so, se = _cli("subject", "export", "--config", stack["path"], "--camera", "cam-s", "--from", t1, "--to", t2,
                      "--subject", f"{max(0, x)},{max(0, y)},{min(w, 176 - max(0, x))},{min(h, 144 - max(0, y))}@{at}",
                      "--case", "SR-1", "-o", str(out), "--actor", "officer.kim")
    assert rc == 0, se
    rep = json.loads(out.with_suffix(".json").read_text())
    assert rep["frames"] == CHUNK_FRAMES * CHUNKS and rep["subject_visible_frames"] > 0
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == CHUNK_FRAMES * CHUNKS
    case_out = stack["tmp"] / "case.mp4"
    rc, so, se = _cli("case", "export", "--config", stack["path"], "--camera", "cam-s", "--from", t1, "--to", t2,
                      "--case", "C-9", "--legal-basis", "Criminal Procedure Act art. 106",
                      "--official", "Det. Park, Seoul Metro Police", "-o", str(case_out), "--actor", "officer.kim")
    assert rc == 0, se
    crep = json.loads(case_out.with_suffix(".json").read_text())
    assert crep["frames"] == CHUNK_FRAMES * CHUNKS and len(crep["raw_objects"]) == CHUNKS
    with av.open(str(case_out)) as c:  # unmasked: the decoded frames are the camera's (up to coding noise)
        got = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(got) == CHUNK_FRAMES * CHUNKS
    assert float(np.abs(got[5].astype(int) - stack["frames"][5].astype(int)).mean()) < 12
    rc, so, _ = _cli("audit", "list", "--config", stack["path"], "--json")
    events = [json.loads(line) for line in so.splitlines()]
    by = {e["action"]: e for e in events}
    assert by["subject_export"]["case_id"] == "SR-1" and by["subject_export"]["actor"] == "officer.kim"
    assert by["case_export"]["details"]["official"] == "Det. Park, Seoul Metro Police"
    assert len(by["case_export"]["object_keys"]) == CHUNKS
    # the event objects are WORM: retained at least a year
    import datetime as dt

    from pipeline.objectstore import audit_store_for

    audit = audit_store_for(stack["cfg"])
    ret = audit.get_retention(next(iter(audit.list_objects("events/"))))
    assert ret is not None and ret.until > dt.datetime.now(dt.UTC) + dt.timedelta(days=360)
    # ... and the same events on veil.audit
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": stack["bootstrap"], "group.id": f"chk-{stack['run']}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(stack["topics"]["audit"], 0, OFFSET_BEGINNING)])
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not {"subject_export", "case_export"} <= seen:
        m = c.poll(0.5)
        if m is not None and not m.error() and dict(m.headers() or []).get("veil-type") == b"AccessAudited":
            seen.add(json.loads(m.value())["action"])
    c.close()
    assert {"subject_export", "case_export"} <= seen


@pytest.mark.parametrize(("args", "needle"), [
    (("--camera", "nope"), "unknown camera 'nope'"),
    (("--camera", "cam-n"), "keeps no raw footage"),
    (("--camera", "cam-s", "--subject", "150,100,60,60@2026-11-22T20:15:01Z"), "outside the 176x144 frame"),
])
def test_bad_subject_requests_get_one_line(stack: dict[str, Any], args: tuple[str, ...], needle: str) -> None:
    base = {"--camera": "cam-s", "--subject": "10,10,50,50@2026-11-22T20:15:01Z"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    rc, _so, se = _cli("subject", "export", "--config", stack["path"], "--from", _iso(T0), "--to",
                       _iso(T0 + 3000), "--case", "SR-2", "-o", str(stack["tmp"] / "x.mp4"),
                       *[x for kv in base.items() for x in kv])
    assert rc != 0 and needle in se and len(se.strip().splitlines()) == 1, se


def test_wrong_master_key_is_named(stack: dict[str, Any], tmp_path: Path) -> None:
    from pipeline.governance.vault import make_key_file
    from schemas.config import config_to_dict, parse_config

    other = tmp_path / "other.key"
    make_key_file(other)
    raw = dict(stack["raw_cfg"], raw_vault={"key_file": str(other)})
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(config_to_dict(parse_config(raw))))
    rc, _so, se = _cli("case", "export", "--config", str(p), "--camera", "cam-s", "--from", _iso(T0), "--to",
                       _iso(T0 + 3000), "--case", "C-1", "--legal-basis", "x", "--official", "y",
                       "-o", str(tmp_path / "c.mp4"))
    assert rc != 0 and "wrong master key" in se and len(se.strip().splitlines()) == 1, se


def test_share_links_redacted_only_and_expire(stack: dict[str, Any]) -> None:
    from pipeline.objectstore import MinioSegmentStore

    store = MinioSegmentStore.from_config(stack["cfg"].object_store)
    seg = next(k for k in sorted(store.list_objects("camera=cam-s/")) if k.endswith(".mp4"))
    rc, url, se = _cli("share", "--config", stack["path"], seg, "--ttl", "15m", "--case", "C-9")
    assert rc == 0, se
    dst = stack["tmp"] / "shared.mp4"
    rc, _so, se = _cli("share-open", url.strip(), "-o", str(dst))
    assert rc == 0 and dst.read_bytes() == store.get_object(seg), se
    raw_key = next(iter(__import__("pipeline.governance.rawsink", fromlist=["raw_store"]).raw_store(
        stack["cfg"]).list_objects("camera=")))
    rc, _so, se = _cli("share", "--config", stack["path"], raw_key, "--case", "C-9")
    assert rc != 0 and "never shared" in se
    rc, url, se = _cli("share", "--config", stack["path"], seg, "--ttl", "1s", "--case", "C-9")
    assert rc == 0, se
    time.sleep(2.2)
    rc, _so, se = _cli("share-open", url.strip(), "-o", str(stack["tmp"] / "late.mp4"))
    assert rc != 0 and "share link expired" in se and len(se.strip().splitlines()) == 1, se


def test_legal_hold_refuses_deletion_until_removed(stack: dict[str, Any]) -> None:
    import boto3
    from botocore.exceptions import ClientError

    s3, cfg, path = stack["s3"], stack["cfg"], stack["path"]
    rc, so, se = _cli("hold", "add", "--config", path, "--camera", "cam-s", "--from", _iso(T0), "--to",
                      _iso(T0 + 3000), "--case", "C-9", "--role", "investigator")
    assert rc == 0, se
    # a second case holds the same interval: lifting C-9 alone must not release anything
    rc, so, se = _cli("hold", "add", "--config", path, "--camera", "cam-s", "--from", _iso(T0), "--to",
                      _iso(T0 + 3000), "--case", "C-10", "--role", "privacy-officer")
    assert rc == 0, se
    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id=s3.access_key,
                          aws_secret_access_key=s3.secret_key)
    os_ = cfg.object_store
    victims = []
    for bucket, prefix in ((os_.bucket, "camera=cam-s/"), (os_.raw_bucket, "camera=cam-s/")):
        for v in client.list_object_versions(Bucket=bucket, Prefix=prefix).get("Versions", []):
            victims.append((bucket, v["Key"], v["VersionId"]))
    assert {b for b, _k, _v in victims} == {os_.bucket, os_.raw_bucket}
    assert any(k.endswith(".json") for _b, k, _v in victims) and any(k.endswith(".raw") for _b, k, _v in victims)
    victims += [(os_.raw_bucket, v["Key"], v["VersionId"])  # the wrapped data key of the day is held too
                for v in client.list_object_versions(Bucket=os_.raw_bucket, Prefix="keys/").get("Versions", [])]
    assert any(k.startswith("keys/") for _b, k, _v in victims)
    for bucket, key, vid in victims:
        assert client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=vid)["LegalHold"]["Status"] == "ON"
    bucket, key, vid = next(v for v in victims if v[1].endswith(".raw"))
    with pytest.raises(ClientError, match="AccessDenied"):  # even with governance bypass
        client.delete_object(Bucket=bucket, Key=key, VersionId=vid, BypassGovernanceRetention=True)
    rc, so, se = _cli("hold", "remove", "--config", path, "--camera", "cam-s", "--from", _iso(T0), "--to",
                      _iso(T0 + 3000), "--case", "C-404", "--role", "privacy-officer")
    assert rc == 1 and "holds none" in se, se  # a case that holds nothing lifts nothing
    rc, so, se = _cli("hold", "remove", "--config", path, "--camera", "cam-s", "--from", _iso(T0), "--to",
                      _iso(T0 + 3000), "--case", "C-9", "--role", "privacy-officer")
    assert rc == 1 and "may not lift" in se, se  # C-9 is the investigator's
    rc, so, se = _cli("hold", "remove", "--config", path, "--camera", "cam-s", "--from", _iso(T0), "--to",
                      _iso(T0 + 3000), "--case", "C-9", "--role", "investigator")
    assert rc == 0 and "0 released" in so and "for case(s) C-10" in so, (so, se)
    for b, k, v in victims:
        assert client.get_object_legal_hold(Bucket=b, Key=k, VersionId=v)["LegalHold"]["Status"] == "ON"
    rc, so, se = _cli("hold", "remove", "--config", path, "--camera", "cam-s", "--from", _iso(T0), "--to",
                      _iso(T0 + 3000), "--case", "C-10", "--role", "privacy-officer")
    assert rc == 0, se
    assert client.get_object_legal_hold(Bucket=bucket, Key=key, VersionId=vid)["LegalHold"]["Status"] == "OFF"
    # without the hold, governance retention yields to an explicit bypass (COMPLIANCE would not)
    client.delete_object(Bucket=bucket, Key=key, VersionId=vid, BypassGovernanceRetention=True)
    rc, so, _ = _cli("audit", "list", "--config", path)
    assert "hold_add" in so and "hold_remove" in so and "hold_refused" in so and "case=C-10" in so


def test_verify_names_each_tampering_in_an_unlocked_copy(stack: dict[str, Any]) -> None:
    from pipeline.governance.context import Governance
    from pipeline.governance.verify import verify
    from pipeline.objectstore import MinioSegmentStore

    cfg = stack["cfg"]
    src = MinioSegmentStore.from_config(cfg.object_store)
    dst = MinioSegmentStore.from_config(cfg.object_store)
    dst.bucket, dst.object_lock = f"tamper-{stack['run']}", False
    dst.ensure_bucket()
    keys = sorted(src.list_objects("camera=cam-s/"))
    for k in keys:
        dst.put_object(k, src.get_object(k), "application/octet-stream", {}, {})
    gov = Governance.from_config(cfg, actor="auditor", kafka=False)
    gov.store = dst
    assert verify(gov, "cam-s", DAY, record=False).ok
    mp4s = [k for k in keys if k.endswith(".mp4")]
    dst.put_object(mp4s[0], b"edited bytes", "video/mp4", {}, {})                       # altered
    dst.client.remove_object(dst.bucket, mp4s[1])                                        # removed
    ins = mp4s[1].replace("_2026", "_2027").replace(".mp4", "-x.mp4")
    dst.put_object(ins, b"forged", "video/mp4", {}, {})                                  # inserted
    man1 = mp4s[1][:-4] + ".json"
    forged = json.loads(dst.get_object(man1))
    forged["frames"] = 1
    dst.put_object(man1, json.dumps(forged).encode(), "application/json", {}, {})        # manifest altered
    rep = verify(gov, "cam-s", DAY, record=False)
    got = {(f.kind, f.key) for f in rep.findings}
    assert ("altered", mp4s[0]) in got and ("inserted", ins) in got and ("altered", man1) in got, got
    assert ("removed", mp4s[1]) in got or ("replaced", man1) in got, got
    rc, so, _ = _cli("verify", "--config", stack["path"], "--camera", "cam-s", "--date", "2026-13-01")
    assert rc != 0


def test_kms_provider_wraps_with_a_kms_key(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from pipeline.governance.vault import (
        AwsKmsKeyProvider,
        VaultKeyError,
        new_data_key,
        seal,
        unseal,
    )

    s3 = stack["s3"]
    for k, v in (("AWS_ACCESS_KEY_ID", s3.access_key), ("AWS_SECRET_ACCESS_KEY", s3.secret_key)):
        monkeypatch.setenv(k, v)
    kms = boto3.client("kms", endpoint_url=s3.url, region_name="us-east-1")
    k1, k2 = (kms.create_key(Description=f"veil-{i}")["KeyMetadata"]["Arn"] for i in range(2))
    p1 = AwsKmsKeyProvider(k1, endpoint_url=s3.url)
    blob = seal({"camera_id": "c", "chunk_seq": 1, "pts_ms": [1]}, b"\x00\x00\x01payload", new_data_key(p1, "c", DAY))
    assert unseal(blob, p1)[1] == b"\x00\x00\x01payload"
    with pytest.raises(VaultKeyError, match="wrong master key"):
        header_swapped = blob.replace(k1.encode(), k2.encode())
        unseal(header_swapped, AwsKmsKeyProvider(k2, endpoint_url=s3.url))
