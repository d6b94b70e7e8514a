"""``limits.max_decoded_bytes_per_chunk``: a few KB of H.264 can claim gigabytes of
pixels (a still scene compresses a thousandfold). The bound is checked from the message's
frame count and size before decoding, and again while decoding, which stops at the first
frame past it; the process stage dead-letters such a chunk with reason ``limit_exceeded``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import operators.codec as codec
from operators.codec import (
    CodecError,
    DecodeLimitError,
    decode_chunk_payload,
    decode_h264_chunk,
    encode_h264_chunk,
    encode_jpeg_frames,
)
from pipeline.process.actors import ChunkActor, ChunkResult, ChunkStage, ChunkTask, Detections
from pipeline.process.handler import ProcessHandler
from pipeline.process.plan import build_plan
from pipeline.process.worker import ProcessWorker
from pipeline.runtime import TestingSink, TestingSource, run_until_idle, runtime_on_lists
from schemas.config import LimitsConfig, parse_config
from schemas.errors import ConfigError
from schemas.messages import ChunkCaptured, LimitExceededError, decode_chunk_captured, encode_chunk
from schemas.safety import chunk_limit_problem

ROOT = Path(__file__).resolve().parents[2]
N, W, H = 30, 256, 256
FRAME_BYTES = W * H * 3
PTS = tuple(i * 33 for i in range(N))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """30 frames of a still 256x256 scene: a few KB that decode to 5.9 MB."""
    frames = np.full((N, H, W, 3), 120, np.uint8)
    payload = encode_h264_chunk(frames, fps=30.0)
    assert len(payload) * 100 < N * FRAME_BYTES  # the amplification this limit is about
    return payload


@pytest.fixture()
def converted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts frames the H.264 decoder turned into pixel arrays."""
    seen: list[int] = []
    real = codec._to_bgr

    def counting(fr: Any) -> np.ndarray:
        seen.append(1)
        return real(fr)

    monkeypatch.setattr(codec, "_to_bgr", counting)
    return seen


def test_the_default_fits_a_4k_30fps_2s_chunk_and_bounds_the_old_worst_case() -> None:
    limits = parse_config({}).limits
    assert limits == LimitsConfig()
    assert chunk_limit_problem(limits, width=3840, height=2160, frames=60, payload_bytes=1) is None
    assert chunk_limit_problem(limits, width=1920, height=1080, frames=250, payload_bytes=1) is None
    over = chunk_limit_problem(limits, width=4096, height=4096, frames=600, payload_bytes=1)  # 30 GB: allowed before
    assert over is not None and "limits.max_decoded_bytes_per_chunk" in over
    with pytest.raises(ConfigError, match="limits.max_decoded_bytes_per_chunk"):
        parse_config({"limits": {"max_decoded_bytes_per_chunk": 0}})


def test_the_helm_values_schema_carries_the_same_key() -> None:
    values = json.loads((ROOT / "helm/veilstream/values.schema.json").read_text())
    config = json.loads((ROOT / "schemas/config.schema.json").read_text())
    key = config["properties"]["limits"]["properties"]["max_decoded_bytes_per_chunk"]
    assert key["default"] == LimitsConfig().max_decoded_bytes_per_chunk
    assert json.dumps(key) in json.dumps(values)


def test_a_message_claiming_too_many_decoded_bytes_is_refused_before_decoding(bomb: bytes) -> None:
    msg = ChunkCaptured(camera_id="cam-1", chunk_seq=3, pts_ms=PTS, fps=30.0, width=W, height=H, codec="h264",
                        captured_at_ms=1_700_000_000_000, payload=bomb)
    value, headers = encode_chunk(msg)
    limits = LimitsConfig(max_decoded_bytes_per_chunk=2 * FRAME_BYTES)
    with pytest.raises(LimitExceededError, match="max_decoded_bytes_per_chunk") as exc:
        decode_chunk_captured(value, headers, limits=limits)
    assert exc.value.reason == "limit_exceeded"
    assert decode_chunk_captured(value, headers, limits=LimitsConfig()).chunk_seq == 3


def test_the_decoder_stops_at_the_first_frame_past_the_bound(bomb: bytes, converted: list[int]) -> None:
    # no metadata at all: the running total stops it
    with pytest.raises(DecodeLimitError, match="max_decoded_bytes_per_chunk") as exc:
        decode_h264_chunk(bomb, max_decoded_bytes=int(1.5 * FRAME_BYTES))
    assert isinstance(exc.value, CodecError) and exc.value.reason == "limit_exceeded"
    assert len(converted) == 1
    converted.clear()
    # a declared frame count: the first decoded frame's coded size predicts the whole chunk
    with pytest.raises(DecodeLimitError):
        decode_h264_chunk(bomb, expected_frames=N, max_decoded_bytes=10 * FRAME_BYTES)
    assert converted == []
    # count and size declared: refused before the decoder is even created
    with pytest.raises(DecodeLimitError):
        decode_chunk_payload("h264", bomb, (W, H), expected_frames=N, strict=True, max_decoded_bytes=FRAME_BYTES)
    assert converted == []
    assert len(decode_h264_chunk(bomb, max_decoded_bytes=N * FRAME_BYTES)) == N


def test_jpeg_payloads_are_bounded_from_their_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = encode_jpeg_frames(np.full((4, 32, 32, 3), 7, np.uint8))
    decoded: list[int] = []
    real = codec.cv2.imdecode
    monkeypatch.setattr(codec.cv2, "imdecode", lambda *a: decoded.append(1) or real(*a))
    with pytest.raises(DecodeLimitError, match="4 frames of 32x32"):
        decode_chunk_payload("jpeg", payload, max_decoded_bytes=3 * 32 * 32 * 3)
    assert decoded == []
    assert len(decode_chunk_payload("jpeg", payload, max_decoded_bytes=4 * 32 * 32 * 3)) == 4


class _Detector:
    def __init__(self) -> None:
        self.detect = self

    def remote(self, frames: np.ndarray) -> Any:
        async def call() -> Detections:
            return Detections([None] * len(frames), [], [])
        return call()


def test_the_chunk_actor_reports_limit_exceeded_as_its_dlq_reason(bomb: bytes, converted: list[int]) -> None:
    plan = build_plan(parse_config({"process": {"classes": ["face"], "style": "fill", "detect_every": 1}}))
    actor = ChunkActor(plan, [_Detector()])
    task = ChunkTask(codec="h264", payload=bomb, camera_id="cam-1", fps=30.0, pts_ms=PTS, width=W, height=H,
                     max_decoded_bytes=N * FRAME_BYTES - 1)
    res = asyncio.run(actor.redact(task))
    assert res.failed_stage is ChunkStage.DECODE and res.reason == "limit_exceeded" and res.payload is None
    assert converted == []


class _FakeRay:
    """``ray.wait`` / ``ray.get`` over the results a test set per ref (none: still running)."""

    def __init__(self) -> None:
        self.results: dict[Any, Any] = {}

    def wait(self, refs: list[Any], num_returns: int, timeout: float, fetch_local: bool = True) -> Any:
        return [r for r in refs if r in self.results], [r for r in refs if r not in self.results]

    def get(self, ref: Any) -> Any:
        return self.results.pop(ref)

    def kill(self, actor: Any, no_restart: bool = False) -> None:
        return None


def _stage(max_bytes: int, value: bytes, headers: Any, result: ChunkResult | None = None) -> Any:
    """The process stage's handler on the runtime, from one raw message in to a list out;
    Ray is a fake that answers ``result`` (or nothing) to every submitted chunk."""
    cfg = parse_config({"limits": {"max_decoded_bytes_per_chunk": max_bytes},
                        "process": {"classes": ["face"], "style": "fill"}})
    w = ProcessWorker(cfg)
    ray, submitted = _FakeRay(), []

    def submit(task: ChunkTask) -> Any:
        ref = object()
        submitted.append(task)
        if result is not None:
            ray.results[ref] = result
        return ref

    handler = ProcessHandler(cfg, w.plan, w.metrics, submit, ray)
    source, sink = TestingSource([(b"cam-1", value, list(headers))], topic=cfg.kafka.topics.raw), TestingSink()
    rt = runtime_on_lists(w.kafka, handler, w.settings(), source, sink)
    return SimpleNamespace(rt=rt, source=source, sink=sink, submitted=submitted, dlq=cfg.kafka.topics.dlq)


def test_the_process_stage_dead_letters_the_chunk_without_decoding_it(bomb: bytes, converted: list[int]) -> None:
    msg = ChunkCaptured(camera_id="cam-1", chunk_seq=0, pts_ms=PTS, fps=30.0, width=W, height=H, codec="h264",
                        captured_at_ms=1_700_000_000_000, payload=bomb)
    value, headers = encode_chunk(msg)
    st = _stage(N * FRAME_BYTES - 1, value, headers)
    run_until_idle(st.rt)
    assert st.sink.dlq_reasons(st.dlq) == ["limit_exceeded"] and st.submitted == [] and converted == []
    assert st.source.committed() == {("veil.chunks.raw", 0): 1}  # once the DLQ record is acked
    st = _stage(N * FRAME_BYTES, value, headers)
    st.rt.step()
    assert st.sink.out == [] and len(st.submitted) == 1 and not st.source.committed()  # on Ray: held


def test_a_decoder_side_refusal_is_dead_lettered_as_limit_exceeded(bomb: bytes) -> None:
    msg = ChunkCaptured(camera_id="cam-1", chunk_seq=0, pts_ms=PTS, fps=30.0, width=W, height=H, codec="h264",
                        captured_at_ms=1_700_000_000_000, payload=bomb)
    value, headers = encode_chunk(msg)
    res = ChunkResult(ChunkStage.DECODE, "decode failed: over", reason="limit_exceeded")
    st = _stage(10**9, value, headers, result=res)
    run_until_idle(st.rt)
    assert len(st.submitted) == 1 and st.sink.dlq_reasons(st.dlq) == ["limit_exceeded"]
    assert st.source.committed() == {("veil.chunks.raw", 0): 1}
