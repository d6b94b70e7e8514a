"""The Ray actors' logic as plain objects (Ray only wraps them): decode errors become DLQ
reasons, masking failures fail closed, nothing unmasked leaves `finish`."""

from __future__ import annotations

import numpy as np

from operators.codec import decode_h264_chunk, encode_h264_chunk
from operators.redactor import RedactionConfig
from operators.types import Boxes, Label
from pipeline.process.actors import ChunkWorkerActor


def chunk(n: int = 6) -> tuple[np.ndarray, bytes]:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (n, 64, 96, 3), dtype=np.uint8)
    return frames, encode_h264_chunk(frames, fps=10.0, pts_ms=[i * 100 for i in range(n)])


def worker() -> ChunkWorkerActor:
    return ChunkWorkerActor(RedactionConfig(classes=("face",), style="fill", detect_every=1))


def test_decode_ok_and_bad_payloads():
    w = worker()
    _, payload = chunk()
    frames, info = w.decode("h264", payload, 6)
    assert frames is not None and frames.shape == (6, 64, 96, 3) and info["error"] is None
    for codec, data, n, why in (("h264", b"\x00\x00\x01junk" * 20, 6, "decode failed"),
                                ("h264", payload, 9, "holds 6 frames, the message declares 9"),
                                ("jpeg", b"", 1, "decode failed")):
        frames, info = w.decode(codec, data, n)
        assert frames is None and why in info["error"], info


def test_finish_masks_detections_and_fails_closed_on_failed_frames():
    w = worker()
    frames, _ = chunk()
    face = Boxes.of([[10, 10, 40, 40]], [0.9], Label.FACE)
    raw = [face, Boxes.empty(), Boxes.empty(), Boxes.empty(), Boxes.empty(), Boxes.empty()]
    out = w.finish(frames, (raw, [5], ["face: timeout"]), "cam-1", 10.0, [i * 100 for i in range(6)])
    assert out["fail_closed_frames"] == [5] and out["errors"] == ["face: timeout"]
    dec = decode_h264_chunk(out["payload"])
    assert len(dec) == 6
    assert float(dec[5].std()) < 3.0  # whole frame filled
    assert float(dec[0][15:35, 15:35].std()) < 6.0  # the face region filled
    assert float(dec[1].std()) > 20.0  # the rest untouched (noise survives H.264 roughly)


def test_finish_when_masking_itself_fails_masks_everything():
    w = worker()
    frames, _ = chunk()
    bad = [None] * 3  # wrong length: the redactor raises; the actor must not pass frames through
    out = w.finish(frames, (bad, [], []), "cam-1", 10.0, [i * 100 for i in range(6)])
    assert out["fail_closed_frames"] == list(range(6))
    dec = decode_h264_chunk(out["payload"])
    assert all(float(f.std()) < 3.0 for f in dec)


def test_finish_with_a_drop_policy_leaves_failed_frames_out_and_counts_them():
    w = ChunkWorkerActor(RedactionConfig(classes=("face",), style="fill", detect_every=1), on_failure="drop")
    frames, _ = chunk()
    raw = [Boxes.empty()] * 6
    pts = [i * 100 for i in range(6)]
    out = w.finish(frames, (raw, [2, 5], ["face: timeout"]), "cam-1", 10.0, pts)
    assert out["dropped"] == 2 and out["fail_closed_frames"] == [] and out["pts_ms"] == [0, 100, 300, 400]
    dec = decode_h264_chunk(out["payload"])
    assert len(dec) == 4 and all(float(f.std()) > 20.0 for f in dec)  # kept frames, none blanked


def test_finish_with_a_drop_policy_and_every_frame_failed_returns_no_payload():
    w = ChunkWorkerActor(RedactionConfig(classes=("face",), style="fill", detect_every=1), on_failure="drop")
    frames, _ = chunk()
    out = w.finish(frames, ([None] * 6, list(range(6)), ["boom"]), "cam-1", 10.0, [i * 100 for i in range(6)])
    assert out["payload"] is None and out["pts_ms"] == [] and out["dropped"] == 6


def test_unknown_on_failure_is_refused():
    import pytest

    from schemas.errors import VeilStreamError
    with pytest.raises(VeilStreamError, match="on_failure"):
        ChunkWorkerActor(RedactionConfig(classes=("face",)), on_failure="pass")


def test_finish_masks_by_the_chunk_policy():
    """One worker, two policies: the face is masked for the policy that masks faces only."""
    faces = RedactionConfig(classes=("face",), style="fill", detect_every=1)
    plates = RedactionConfig(classes=("plate",), style="fill", detect_every=1)
    w = ChunkWorkerActor(faces, policies={"faces": (faces, None, "mask"), "plates": (plates, None, "mask")})
    frames, _ = chunk()
    face = Boxes.of([[10, 10, 40, 40]], [0.9], Label.FACE)
    raw = [face] + [Boxes.empty()] * 5
    pts = [i * 100 for i in range(6)]
    masked = decode_h264_chunk(w.finish(frames, (raw, [], []), "c", 10.0, pts, "faces")["payload"])
    kept = decode_h264_chunk(w.finish(frames, (raw, [], []), "c", 10.0, pts, "plates")["payload"])
    assert float(masked[0][15:35, 15:35].std()) < 6.0
    assert float(kept[0][15:35, 15:35].std()) > 20.0
    import pytest

    from schemas.errors import VeilStreamError
    with pytest.raises(VeilStreamError, match="no policy"):
        w.finish(frames, (raw, [], []), "c", 10.0, pts, "other")
