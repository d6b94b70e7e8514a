"""Export progress: ``subject_export`` / ``case_export`` report a growing fraction that ends at
1.0 (the console's job bar), on a real clip sealed into an in-memory raw vault."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.governance.audit import AuditLog
from pipeline.governance.clips import Stages
from pipeline.governance.context import Governance
from pipeline.governance.export import SubjectBox, case_export, subject_export
from pipeline.governance.vault import LocalKeyFileProvider, RawVault, make_key_file
from schemas.policy import parse_policy
from tests.fakes import InMemoryObjectStore

T0 = 1795378500000
CHUNK = 8


@pytest.fixture(scope="module")
def gov(tmp_path_factory: pytest.TempPathFactory) -> Governance:
    from operators.codec import encode_chunk_payload
    from operators.video import VideoReader, sample_video

    frames: list[np.ndarray] = []
    with VideoReader(str(sample_video("carphone_pristine.mp4"))) as r:
        for ch in r.chunks(CHUNK):
            frames.extend(ch.frames)
            if len(frames) >= 3 * CHUNK:
                break
    key_file = tmp_path_factory.mktemp("vault") / "master.key"
    make_key_file(key_file)
    vault = RawVault(InMemoryObjectStore(bucket="raw"), LocalKeyFileProvider(key_file))
    h, w = frames[0].shape[:2]
    for seq in range(3):
        part = np.stack(frames[seq * CHUNK:(seq + 1) * CHUNK])
        pts = [T0 + 100 * (seq * CHUNK + i) for i in range(CHUNK)]
        meta = {"camera_id": "cam-1", "chunk_seq": seq, "pts_ms": pts, "codec": "jpeg", "width": w, "height": h,
                "fps": 10.0}
        vault.put_chunk(meta, encode_chunk_payload("jpeg", part, 10.0), tags={"camera": "cam-1"})
    audit = InMemoryObjectStore(bucket="audit")
    cfg = SimpleNamespace(process=SimpleNamespace(policy_id="keep"), policies_dir="/policies")
    return Governance(cfg=cfg, store=InMemoryObjectStore(), audit_store=audit, raw_store=vault.store,
                      audit=AuditLog(audit), actor="kim", _vault=vault,
                      policies={"keep": parse_policy({"policy_id": "keep", "retention": {"raw_days": 10}})},
                      registry=lambda: {"cam-1": SimpleNamespace(policy_id="keep")})


def _check(seen: list[float]) -> None:
    assert seen and seen[-1] == 1.0, seen
    assert all(0.0 <= a < b <= 1.0 for a, b in zip(seen, seen[1:], strict=False)), seen  # strictly growing


def test_subject_export_progress_grows_and_ends_at_one(gov: Governance, tmp_path: Path) -> None:
    seen: list[float] = []
    res = subject_export(gov, "cam-1", T0, T0 + 100 * (3 * CHUNK - 1), SubjectBox(30, 10, 120, 134, at_ms=T0),
                         case_id="SAR-1", output=tmp_path / "s.mp4", progress=seen.append)
    _check(seen)
    # the stages in between are reported (decode per chunk, detection per batch, masking), not 5 % then done
    assert len(seen) >= 6 and any(0.05 < f < 0.15 for f in seen) and any(0.15 < f < 0.9 for f in seen), seen
    assert res.report["frames"] == 3 * CHUNK and json.loads((tmp_path / "s.json").read_text())["frames"] == 24


def test_case_export_progress_grows_chunk_by_chunk(gov: Governance, tmp_path: Path) -> None:
    seen: list[float] = []
    case_export(gov, "cam-1", T0, T0 + 100 * (3 * CHUNK - 1), case_id="C-1", legal_basis="warrant 12",
                official="Lee", output=tmp_path / "c.mp4", progress=seen.append)
    _check(seen)
    assert len([f for f in seen if 0.05 < f < 1.0]) >= 2, seen  # one step per chunk written
    # without a callback the exports run as before
    case_export(gov, "cam-1", T0, T0 + 1000, case_id="C-1", legal_basis="warrant 12", official="Lee",
                output=tmp_path / "c2.mp4")


def test_stages_never_go_back_and_clamp() -> None:
    seen: list[float] = []
    st = Stages(seen.append)
    st.stage(0.0, 0.5)(0.5)
    st.stage(0.0, 0.5)(0.2)  # a stage reporting less than before is ignored
    st.stage(0.5, 1.0)(7.0)  # clamped to the stage's end
    st.report(1.0)  # already there: not repeated
    assert seen == [0.25, 1.0]


def test_console_bridge_maps_the_fraction_to_a_message_and_the_job_bar_never_goes_back() -> None:
    from pipeline.console.exports import SUBJECT_STAGES, _staged
    from pipeline.console.jobs import Job

    job = Job(job_id="0" * 16, kind="subject_export", owner="kim", roles=("privacy-officer",), camera_id="cam-1",
              case="SAR-1", params={}, dir=Path("."))
    report = _staged(job.progress, SUBJECT_STAGES)
    report(0.1)
    assert job.fraction == 0.1 and "decod" in job.message
    report(0.5)
    assert job.fraction == 0.5 and "subject" in job.message
    job.progress(0.3, "late")
    assert job.fraction == 0.5
    report(0.95)
    assert "writing" in job.message
