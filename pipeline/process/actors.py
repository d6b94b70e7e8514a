"""Ray actors of the processing stage. Each is a thin shell around ``operators``.

* ``ChunkWorkerActor`` (CPU): decodes a chunk payload, and later masks + re-encodes it.
* ``DetectorActor`` (GPU, fraction of a GPU, or CPU, from config): runs the detectors on
  the scheduled frames of several chunks at once, batched across cameras.

Resources are never in decorators: the driver sets them with ``.options(...)`` from the
config, because an actor asking for a GPU is never scheduled on a node without one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from operators.redactor import RedactionConfig, Redactor
from operators.types import Boxes, VeilStreamError
from operators.zones import load_zones

logger = logging.getLogger(__name__)


class ChunkWorkerActor:
    """Decode (CPU) and finish (fallback, temporal fill, mask, encode) chunks."""

    def __init__(self, redaction: RedactionConfig, zones: dict[str, Any] | None = None,
                 crf: int = 23, preset: str = "veryfast", on_failure: str = "mask",
                 policies: dict[str, tuple[RedactionConfig, dict[str, Any] | None, str]] | None = None) -> None:
        """``redaction`` / ``zones`` / ``on_failure``: the default policy; ``policies``:
        ``policy_id -> (config, zones, on_failure)`` of every policy ``finish`` may be asked for."""
        self.crf = crf
        self.preset = preset
        self.default = self._build(redaction, zones, on_failure)
        self.policies = {pid: self._build(*spec) for pid, spec in (policies or {}).items()}
        self.redactor, self.on_failure = self.default

    @staticmethod
    def _build(redaction: RedactionConfig, zones: dict[str, Any] | None, on_failure: str) -> tuple[Redactor, str]:
        if on_failure not in ("mask", "drop"):
            raise VeilStreamError(f"on_failure: expected mask or drop, got {on_failure!r}")
        return Redactor(redaction, zones=load_zones(zones) if zones else None, detectors={}), on_failure

    def ready(self) -> bool:
        return True

    def decode(self, codec: str, payload: bytes, expected_frames: int, size_wh: tuple[int, int] | None = None,
               max_pixels: int | None = None) -> tuple[np.ndarray | None, dict[str, Any]]:
        """Decode a payload; returns ``(frames, info)``. ``frames`` is ``None`` on error and
        ``info["error"]`` says why (the driver sends the chunk to the DLQ). The frames must
        be exactly ``size_wh`` and ``expected_frames`` (the header cannot lie about them)."""
        from operators.codec import decode_chunk_payload

        t0 = time.perf_counter()
        try:
            frames = decode_chunk_payload(codec, payload, size_wh, expected_frames=expected_frames,
                                          max_pixels=max_pixels, strict=size_wh is not None)
        except VeilStreamError as exc:
            return None, {"error": f"decode failed: {exc}"}
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad message, not a crash
            return None, {"error": f"decode failed: {type(exc).__name__}: {exc}"}
        if len(frames) == 0:
            return None, {"error": "decode failed: no frames in payload"}
        if len(frames) != expected_frames:
            # damaged or truncated payload: its timestamps no longer match its frames; the
            # chunk goes to the DLQ with the reason rather than being guessed at
            return None, {"error": f"decode failed: payload holds {len(frames)} frames, "
                                   f"the message says {expected_frames}"}
        info = {"frames": int(len(frames)), "shape": list(frames.shape[1:]),
                "decode_ms": (time.perf_counter() - t0) * 1000.0, "error": None}
        return frames, info

    def finish(self, frames: np.ndarray, detected: tuple[list[Boxes | None], list[int], list[str]],
               camera_id: str, fps: float, pts_ms: list[int], policy_id: str | None = None) -> dict[str, Any]:
        """Mask and re-encode one chunk. Fail closed: if anything goes wrong while masking,
        every frame is masked whole; if even that cannot be encoded, nothing is returned
        but the error (the driver routes the chunk to the DLQ).

        With ``on_failure="drop"`` (a policy's choice) the frames that would be masked whole
        are left out instead: ``pts_ms`` then lists the frames kept, ``dropped`` counts the
        others, and ``payload`` is ``None`` when none is left."""
        from operators.codec import encode_h264_chunk

        raw, failed, errors = detected
        t0 = time.perf_counter()
        if policy_id is not None and policy_id not in self.policies:  # the driver checks first
            raise VeilStreamError(f"no policy {policy_id!r} in this worker")
        redactor, on_failure = self.policies[policy_id] if policy_id is not None else self.default
        try:
            res = redactor.finish(frames, raw, failed, camera_id=camera_id)
            out, counts, fail_closed = res.frames, res.masks_per_class, res.fail_closed_frames
        except Exception as exc:  # noqa: BLE001
            logger.error("masking failed camera=%s error=%s: masking every frame whole", camera_id, exc)
            out = np.zeros_like(frames)
            counts = {c: 0 for c in redactor.config.classes}
            fail_closed = list(range(len(frames)))
            errors = [*errors, f"mask: {exc}"]
        kept_pts, dropped = list(pts_ms), 0
        if on_failure == "drop" and len(fail_closed):
            gone = set(int(i) for i in fail_closed)
            keep = [i for i in range(len(out)) if i not in gone]
            out, kept_pts, dropped = out[keep], [pts_ms[i] for i in keep], len(gone)
            fail_closed = []
        payload = (encode_h264_chunk(out, fps=fps, pts_ms=kept_pts, crf=self.crf, preset=self.preset)
                   if len(kept_pts) else None)
        return {"payload": payload, "pts_ms": kept_pts, "dropped": dropped, "masks_per_class": counts,
                "fail_closed_frames": list(fail_closed), "errors": list(errors),
                "finish_ms": (time.perf_counter() - t0) * 1000.0}


class DetectorActor:
    """Holds the detectors (heavy ONNX sessions) and serves batched detection."""

    def __init__(self, redaction: RedactionConfig) -> None:
        self.redactor = Redactor(redaction)
        self.calls = 0

    def ready(self) -> list[dict[str, str]]:
        return self.redactor.model_ids

    def detect_chunks(self, *chunks: np.ndarray) -> list[tuple[list[Boxes | None], list[int], list[str]]]:
        """Detections for each chunk (frames ``(N, H, W, 3)`` uint8), batched across chunks."""
        self.calls += 1
        return self.redactor.detect_many(list(chunks))

    def fail_next(self, mode: str) -> None:  # fault injection for tests: "raise" or "hang"
        real = self.redactor.detect_many

        def broken(chunks: list[np.ndarray]) -> Any:
            self.redactor.detect_many = real  # type: ignore[method-assign]
            if mode == "hang":
                time.sleep(3600)
            raise RuntimeError("injected detector failure")

        self.redactor.detect_many = broken  # type: ignore[method-assign]
