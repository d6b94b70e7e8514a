"""Fuzz targets: every parser of hostile input, with the only outcomes it may have.

Each target takes raw bytes (what a fuzzer produces) and must either return normally or
raise the module's one documented error (``SchemaError`` / ``ConfigError`` / ``CodecError``);
any other exception, a hang or a crash is a bug. Used by

* ``tests/unit/test_fuzz.py``: hypothesis property tests plus a bounded atheris run of each
  target (CI);
* ``python -m tests.fuzz.targets TARGET [libFuzzer flags]`` / ``make fuzz``: long
  coverage-guided runs with atheris (crashes are written as ``crash-*`` files; each one
  becomes a regression case in ``tests/fuzz/regressions/``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

REGRESSIONS = Path(__file__).parent / "regressions"

# a valid message to mutate around (small: 2 JPEG frames of 32x24)
_BASE: tuple[bytes, list[tuple[str, bytes]]] | None = None


def base_message() -> tuple[bytes, list[tuple[str, bytes]]]:
    global _BASE
    if _BASE is None:
        import numpy as np

        from operators.codec import encode_jpeg_frames
        from schemas.messages import ChunkCaptured, encode_chunk

        frames = np.full((2, 24, 32, 3), 120, np.uint8)
        msg = ChunkCaptured(camera_id="cam-1", chunk_seq=3, pts_ms=(1000, 1040), fps=25.0, width=32, height=24,
                            codec="jpeg", captured_at_ms=1000, payload=encode_jpeg_frames(frames))
        _BASE = encode_chunk(msg)
    return _BASE


def _split(data: bytes, parts: int) -> list[bytes]:
    """Deterministically cut fuzzer bytes into ``parts`` pieces (first bytes are lengths)."""
    out, pos = [], parts
    for i in range(parts):
        n = data[i] if i < len(data) else 0
        out.append(data[pos:pos + n * 4] if i < parts - 1 else data[pos:])
        pos += n * 4
    return out


def message(data: bytes) -> None:
    """Kafka message parser: arbitrary value, meta JSON and header values."""
    from schemas.config import LimitsConfig
    from schemas.messages import (
        SchemaError,
        decode_chunk_captured,
        decode_chunk_redacted,
        decode_dlq,
    )

    value, meta, version, key = _split(data, 4)
    headers = [("veil-meta", meta), ("schema_version", version[:4] or b"1"), ("veil-type", b"ChunkCaptured")]
    for decode in (decode_chunk_captured, decode_chunk_redacted, decode_dlq):
        try:
            if decode is decode_chunk_captured:
                out = decode(value, headers, key=key, limits=LimitsConfig())
                assert out.camera_id == key.decode("utf-8", "replace")
                assert len(out.payload) == len(value)
            else:
                decode(value, headers)
        except SchemaError:
            pass


def meta_mutation(data: bytes) -> None:
    """The valid message with its meta JSON fields replaced by fuzzer-chosen JSON values."""
    from schemas.messages import HEADER_META, SchemaError, decode_chunk_captured

    value, headers = base_message()
    meta = json.loads(dict(headers)[HEADER_META])
    try:
        patch = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        patch = data.decode("latin-1")
    keys = sorted(meta)
    if isinstance(patch, dict):
        meta.update(patch)
    elif data:
        meta[keys[data[0] % len(keys)]] = patch
    hdrs = [(k, json.dumps(meta).encode() if k == HEADER_META else v) for k, v in headers]
    try:
        out = decode_chunk_captured(value, hdrs, key=str(meta.get("camera_id")).encode())
    except SchemaError:
        return
    from schemas.safety import camera_id_problem

    assert camera_id_problem(out.camera_id) is None
    assert all(0 <= t < 253402300800000 for t in out.pts_ms)


def jpeg_payload(data: bytes) -> None:
    """Chunk decoder, JPEG frames: arbitrary bytes, and the valid payload with bytes flipped."""
    from operators.codec import CodecError, decode_chunk_payload

    value, _ = base_message()
    mutated = bytearray(value)
    for i in range(0, len(data) - 1, 2):
        mutated[data[i] * 7 % len(mutated)] = data[i + 1]
    for payload in (data, bytes(mutated)):
        try:
            frames = decode_chunk_payload("jpeg", payload, (32, 24), expected_frames=2, max_pixels=1 << 20,
                                          strict=True)
            assert frames.shape == (2, 24, 32, 3)
        except CodecError:
            pass


_H264: bytes | None = None


def h264_payload(data: bytes) -> None:
    """Chunk decoder, H.264 Annex-B: arbitrary bytes after a start code, and a valid
    payload with bytes flipped."""
    global _H264
    import numpy as np

    from operators.codec import CodecError, decode_chunk_payload, encode_h264_chunk

    if _H264 is None:
        _H264 = encode_h264_chunk(np.full((3, 24, 32, 3), 90, np.uint8), 25.0)
    mutated = bytearray(_H264)
    for i in range(0, len(data) - 1, 2):
        pos = 4 + data[i] * 13 % (len(mutated) - 4)
        mutated[pos] = data[i + 1]
    for payload in (b"\x00\x00\x00\x01" + data, bytes(mutated)):
        try:
            frames = decode_chunk_payload("h264", payload, (32, 24), expected_frames=3, max_pixels=1 << 20,
                                          strict=True)
            assert frames.shape == (3, 24, 32, 3)
        except CodecError:
            pass


def _yaml(data: bytes) -> object:
    try:
        return yaml.safe_load(data.decode("utf-8", "replace"))
    except yaml.YAMLError:
        return None


def config(data: bytes) -> None:
    """Config loader: arbitrary YAML documents (also written to a file: load_config)."""
    import tempfile

    from schemas.config import load_config, parse_config
    from schemas.errors import ConfigError

    doc = _yaml(data)
    try:
        parse_config(doc if isinstance(doc, dict) else {"kafka": doc})
    except ConfigError:
        pass
    with tempfile.NamedTemporaryFile("wb", suffix=".yaml") as fh:
        fh.write(data)
        fh.flush()
        try:
            load_config(fh.name)
        except ConfigError:
            pass


def policy(data: bytes) -> None:
    """Policy loader and the zones parser it embeds."""
    from operators.zones import parse_zones
    from schemas.errors import ConfigError
    from schemas.policy import parse_policy

    doc = _yaml(data)
    try:
        parse_policy(doc if isinstance(doc, dict) else {"policy_id": "p", "zones": doc})
    except ConfigError:
        pass
    try:
        parse_zones(doc)
    except ConfigError:
        pass


def camera_record(data: bytes) -> None:
    """Camera registry reader: arbitrary record values from the cameras topic."""
    from schemas.messages import SchemaError, decode_camera
    from schemas.safety import url_credentials_problem

    for value in (data, json.dumps({"camera_id": "c", "url": data.decode("utf-8", "replace")}).encode()):
        try:
            cam = decode_camera(value)
        except SchemaError:
            continue
        if cam is not None:
            assert url_credentials_problem(cam.url) is None  # never a stored password


TARGETS: dict[str, Callable[[bytes], None]] = {
    "message": message, "meta_mutation": meta_mutation, "jpeg_payload": jpeg_payload,
    "h264_payload": h264_payload, "config": config, "policy": policy, "camera_record": camera_record,
}


def every_target(data: bytes) -> None:
    """All targets in one process (the first byte picks one): one start-up for CI."""
    if data:
        names = sorted(TARGETS)
        TARGETS[names[data[0] % len(names)]](data[1:])


TARGETS["all"] = every_target


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.targets {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[argv[1]]
    flags = argv[2:]
    if not any(f.startswith("-rss_limit_mb=") for f in flags):
        # libFuzzer's RSS limit reads the peak RSS (getrusage ru_maxrss), and Linux carries the
        # parent's peak across fork+exec: started from a pytest process that has grown to 2.2 GB,
        # the fuzzer "ran out" of its default 2 GB before its first input. Allow 2 GB above the
        # peak this process started with instead.
        import resource

        inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        flags.append(f"-rss_limit_mb={inherited_mb + 2048}")
    with atheris.instrument_imports():
        import operators.codec  # noqa: F401
        import operators.zones  # noqa: F401
        import schemas.config  # noqa: F401
        import schemas.messages  # noqa: F401
        import schemas.policy  # noqa: F401
        import schemas.safety  # noqa: F401
    atheris.Setup([argv[0], *flags], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
