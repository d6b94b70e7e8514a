"""The raw-sink stage with fakes: what a policy keeps is sealed, offsets wait for durability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.config import parse_config
from schemas.messages import ChunkCaptured, encode_chunk
from tests.fakes import FakeConsumer, FakeMsg, InMemoryObjectStore


def _worker(tmp_path: Path, store: InMemoryObjectStore, msgs: list[FakeMsg], consumer: Any = None):
    from pipeline.governance.rawsink import RawSinkWorker
    from pipeline.governance.vault import LocalKeyFileProvider, RawVault, make_key_file

    pdir = tmp_path / "p"
    pdir.mkdir()
    (pdir / "keep.yaml").write_text(yaml.safe_dump({"policy_id": "keep", "retention": {"raw_days": 3}}))
    (pdir / "default.yaml").write_text(yaml.safe_dump({"policy_id": "default"}))
    make_key_file(tmp_path / "k")
    cfg = parse_config({"policies_dir": str(pdir), "metrics": {"enabled": False},
                        "raw_vault": {"key_file": str(tmp_path / "k")}})
    vault = RawVault(store, LocalKeyFileProvider(tmp_path / "k"))
    clock = [0.0]
    w = RawSinkWorker(cfg, vault, consumer=consumer or FakeConsumer(msgs, None), clock=lambda: clock[0])
    return w, clock


def _msg(offset: int, cam: str, policy: str | None) -> FakeMsg:
    c = ChunkCaptured(camera_id=cam, chunk_seq=offset, pts_ms=(1795378500000 + offset * 1000,), fps=1.0, width=16,
                      height=16, codec="jpeg", captured_at_ms=1, payload=b"\xff\xd8jpeg", policy_id=policy)
    v, h = encode_chunk(c)
    return FakeMsg("veil.chunks.raw", 0, offset, cam.encode(), v, h)


def test_only_kept_policies_are_sealed_and_an_outage_holds_offsets_back(tmp_path: Path) -> None:
    store = InMemoryObjectStore(fail_puts=2)  # the data key and the first chunk fail once
    msgs = [_msg(0, "a", "keep"), _msg(1, "b", None), _msg(2, "a", "keep"),
            FakeMsg("veil.chunks.raw", 0, 3, b"a", b"junk", [])]
    w, clock = _worker(tmp_path, store, msgs)
    consumer = w.k.consumer
    w.step()
    assert consumer.paused and not consumer.committed()  # nothing committed past the failed chunk
    for _ in range(6):
        clock[0] += 5.0
        w.step()
    raw = [k for k in store.objects if k.endswith(".raw")]
    assert len(raw) == 2 and all(k.startswith("camera=a/") for k in raw)
    assert all(store.retention[k].mode == "GOVERNANCE" for k in raw)
    assert consumer.committed() == {("veil.chunks.raw", 0): 4}
    assert w.outcomes.labels(outcome="policy_keeps_no_raw")._value.get() == 1
    assert w.outcomes.labels(outcome="invalid_message")._value.get() == 1
    assert not consumer.paused


@pytest.mark.parametrize(("vault", "needle"), [
    ({}, "raw_vault.key_file is not set"),
    ({"key_file": "/nonexistent/master.key"}, "master key file /nonexistent/master.key"),
    ({"key_provider": "aws-kms"}, "raw_vault.kms_key_id is not set"),
])
def test_raw_sink_refuses_a_missing_master_key_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          vault: dict, needle: str) -> None:
    from pipeline.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"raw_vault": vault, "metrics": {"enabled": False}}))
    rc = main(["raw-sink", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc != 0 and needle in err and len(err.strip().splitlines()) == 1, err


def test_the_raw_sink_handler_runs_from_a_list_in_and_a_revoke_drops_its_retry(tmp_path: Path) -> None:
    from pipeline.runtime import TestingSource

    store = InMemoryObjectStore(fail_puts=99)  # the object store is down for the whole test
    a, b = _msg(0, "a", "keep"), _msg(1, "b", None)
    src = TestingSource([(0, a.key(), a.value(), a.headers()), (1, b.key(), b.value(), b.headers())],
                        topic="veil.chunks.raw", partitions=2)
    w, clock = _worker(tmp_path, store, [], consumer=src)
    w.step()
    assert w.runtime.waiting and src.paused == {("veil.chunks.raw", 0), ("veil.chunks.raw", 1)}
    assert src.committed() == {("veil.chunks.raw", 1): 1}  # the counted one; the stored one waits
    src.revoke([("veil.chunks.raw", 0)])
    assert not w.runtime.waiting and w.k.tracker.inflight() == 0
    clock[0] += 60.0
    w.step()
    assert not src.paused and not [k for k in store.objects if k.endswith(".raw")]
