"""The Ray actors' logic as plain objects (Ray only wraps them): decode errors become DLQ
reasons, detection failures fail closed, outages are retried (never DLQ'd), camera zones
are masked, the detector batches concurrent callers."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from operators.codec import decode_h264_chunk, encode_h264_chunk
from operators.types import Boxes, Label
from pipeline.process.actors import (
    ChunkActor,
    ChunkStage,
    ChunkTask,
    Detections,
    is_outage,
)
from pipeline.process.plan import build_plan
from schemas.config import parse_config
from tests.fakes import FakeDetector, bare_detector_actor

N = 6
PTS = tuple(i * 100 for i in range(N))


def chunk(n: int = N) -> tuple[np.ndarray, bytes]:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (n, 64, 96, 3), dtype=np.uint8)
    return frames, encode_h264_chunk(frames, fps=10.0, pts_ms=[i * 100 for i in range(n)])


def actor(detector: FakeDetector, policies_dir: Any = None, timeout_s: float = 5.0, **process: Any) -> ChunkActor:
    raw = {"process": {"classes": ["face"], "style": "fill", "detect_every": 1, **process}}
    if policies_dir is not None:
        raw["policies_dir"] = str(policies_dir)
    return ChunkActor(build_plan(parse_config(raw)), [detector], detector_timeout_s=timeout_s)


def task(payload: bytes, **kw: Any) -> ChunkTask:
    return ChunkTask(codec="h264", payload=payload, camera_id="cam-1", fps=10.0, pts_ms=PTS, width=96, height=64, **kw)


def run(a: ChunkActor, t: ChunkTask) -> Any:
    return asyncio.run(a.redact(t))


def test_bad_payloads_fail_at_decode_with_the_reason():
    _, payload = chunk()
    a = actor(FakeDetector())
    for t, why in ((task(b"\x00\x00\x01junk" * 20), "decode failed"),
                   (ChunkTask("h264", payload, "cam-1", 10.0, PTS + (700, 800), 96, 64), "decode failed"),
                   (ChunkTask("jpeg", b"", "cam-1", 10.0, (0,), 96, 64), "decode failed")):
        res = run(a, t)
        assert res.failed_stage is ChunkStage.DECODE and why in res.error and res.payload is None, res


def test_detections_are_masked_and_failed_frames_masked_whole():
    face = Boxes.of([[10, 10, 40, 40]], [0.9], Label.FACE)
    det = FakeDetector(lambda f: Detections([face] + [Boxes.empty()] * (len(f) - 1), [5], ["face: boom"]))
    _, payload = chunk()
    res = run(actor(det), task(payload))
    assert res.failed_stage is None and res.fail_closed_frames == (5,) and res.errors == ("face: boom",)
    assert set(res.cpu_s) >= {"decode", "mask", "encode"}
    dec = decode_h264_chunk(res.payload)
    assert len(dec) == N and float(dec[5].std()) < 3.0  # whole frame filled
    assert float(dec[0][15:35, 15:35].std()) < 6.0  # the face region filled
    assert float(dec[1].std()) > 20.0  # the rest untouched (noise survives H.264 roughly)


def test_only_scheduled_frames_go_to_the_detector():
    det = FakeDetector()
    _, payload = chunk()
    run(actor(det, detect_every=4), task(payload))
    assert len(det.sent[0]) == 3  # frames 0, 4 and the last (5)


@pytest.mark.parametrize("det, timed_out", [(FakeDetector(exc=RuntimeError("onnx broke")), None),
                                             (FakeDetector(hang=True), 0)])
def test_a_detector_that_raises_or_hangs_fails_closed(det: FakeDetector, timed_out: Any):
    _, payload = chunk()
    a = actor(det, timeout_s=0.5)
    a.queue_timeout_s = 0.5  # (a detector actor that stopped answering at all; normally 300 s)
    res = run(a, task(payload))
    assert res.failed_stage is None and not res.outage and res.detector_timeout == timed_out
    assert res.fail_closed_frames == tuple(range(N))
    assert all(float(f.std()) < 3.0 for f in decode_h264_chunk(res.payload))


def test_a_dead_detector_actor_is_an_outage_not_a_detection_failure():
    from ray.exceptions import ActorDiedError

    _, payload = chunk()
    res = run(actor(FakeDetector(exc=ActorDiedError())), task(payload))
    assert res.outage and res.payload is None and res.failed_stage is None


def test_outages_are_told_apart_from_bad_input():
    from ray import exceptions as rex

    assert is_outage(rex.ActorDiedError()) and is_outage(rex.WorkerCrashedError())
    assert is_outage(rex.ActorUnavailableError("node gone", None))
    assert not is_outage(ValueError("bad frame")) and not is_outage(RuntimeError("x"))
    wrapped = rex.RayTaskError("f", "tb", ValueError("bad"))
    assert not is_outage(wrapped)


def test_when_masking_itself_fails_every_frame_is_masked():
    a = actor(FakeDetector())
    frames, _ = chunk()
    pol = a.plan.default
    res = a._finish(a.redactors[pol.policy_id], pol, frames, [None] * 3, [], [], task(b""))
    assert res.fail_closed_frames == tuple(range(N))
    assert all(float(f.std()) < 3.0 for f in decode_h264_chunk(res.payload))


def test_a_drop_policy_leaves_failed_frames_out_and_counts_them(tmp_path):
    (tmp_path / "default.yaml").write_text("policy_id: default\non_failure: drop\nstyle: fill\nclasses: [face]\n")
    _, payload = chunk()
    det = FakeDetector(lambda f: Detections([Boxes.empty()] * len(f), [1, 3], ["x"]))
    res = run(actor(det, policies_dir=tmp_path), task(payload))
    assert res.dropped == 2 and res.fail_closed_frames == () and res.pts_ms == (0, 200, 400, 500)
    assert len(decode_h264_chunk(res.payload)) == 4
    everything = FakeDetector(lambda f: Detections([None] * len(f), list(range(len(f))), ["x"]))
    res = run(actor(everything, policies_dir=tmp_path), task(payload))
    assert res.payload is None and res.dropped == N


def test_a_camera_zone_is_masked_together_with_the_policy_zones():
    """The camera record's zones travel on each chunk: that region is masked; a camera
    without zones keeps it."""
    _, payload = chunk()
    a = actor(FakeDetector())
    zone = {"name": "window", "polygon": [[0, 0], [48, 0], [48, 32], [0, 32]]}
    with_zone = decode_h264_chunk(run(a, task(payload, camera_zones=(zone,))).payload)
    without = decode_h264_chunk(run(a, task(payload)).payload)
    assert all(float(f[2:30, 2:46].std()) < 6.0 for f in with_zone)
    assert all(float(f[2:30, 2:46].std()) > 20.0 for f in without)
    assert all(float(f[36:60, 52:92].std()) > 20.0 for f in with_zone)  # outside the zone: untouched


def test_the_detector_deadline_runs_from_the_start_of_a_batch_and_fails_closed():
    import time

    d = bare_detector_actor(timeout_s=0.3)
    d._run = lambda chunks: time.sleep(1.0)  # type: ignore[method-assign,assignment,func-returns-value]
    res = asyncio.run(d.detect(np.zeros((2, 8, 8, 3), np.uint8)))
    assert res.failed == [0, 1] and "timeout" in res.errors[0]


def test_the_detector_batches_concurrent_callers():
    raw = parse_config({"process": {"classes": ["face"], "detect_every": 1}})
    d = bare_detector_actor()
    seen: list[int] = []

    def fake_run(chunks: list[np.ndarray]) -> list[Detections]:
        seen.append(len(chunks))
        return [Detections([Boxes.empty()] * len(c), [], []) for c in chunks]

    d._run = fake_run  # type: ignore[method-assign]
    frames = np.zeros((3, 8, 8, 3), np.uint8)

    async def two_callers() -> list[Detections]:
        return list(await asyncio.gather(d.detect(frames), d.detect(frames[:2])))

    out = asyncio.run(two_callers())
    assert seen == [2] and d.batches == 1 and [len(o.boxes) for o in out] == [3, 2]
    assert raw.ray.detector.max_wait_ms == 20
