"""Raw vault envelope encryption (pure, no network): sealed objects hide the footage."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pipeline.governance.vault import (
    LocalKeyFileProvider,
    VaultError,
    VaultKeyError,
    make_key_file,
    new_data_key,
    raw_key,
    raw_key_first_ms,
    seal,
    stuff,
    unseal,
    unstuff,
)


def _h264() -> bytes:
    import numpy as np

    from operators.codec import encode_h264_chunk

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (6, 64, 96, 3), dtype=np.uint8)
    return encode_h264_chunk(frames, 25.0)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x01", b"\x00\xff\x00\x00\x00\x01\xff", bytes(range(256)) * 3])
def test_stuffing_round_trips_and_never_leaves_a_zero_pair(data: bytes) -> None:
    s = stuff(data)
    assert b"\x00\x00" not in s and unstuff(s) == data


def test_sealed_chunk_has_no_start_code_cannot_be_demuxed_and_opens_with_the_key(tmp_path: Path) -> None:
    import av

    payload = _h264()
    assert b"\x00\x00\x01" in payload
    prov = LocalKeyFileProvider(tmp_path / "m.key")
    make_key_file(prov.path)
    dk = new_data_key(prov, "cam-1", "2026-11-23")
    meta = {"camera_id": "cam-1", "chunk_seq": 7, "pts_ms": [1000, 1040, 1080, 1120, 1160, 1200], "codec": "h264"}
    blob = seal(meta, payload, dk)
    assert b"\x00\x00\x01" not in blob and b"\x00\x00\x00\x01" not in blob
    with pytest.raises((av.FFmpegError, ValueError)):
        with av.open(io.BytesIO(blob), mode="r") as c:
            list(c.decode(video=0))
    got_meta, got = unseal(blob, prov)
    assert got == payload and got_meta == meta
    # a wrong master key is named, not a traceback
    other = LocalKeyFileProvider(tmp_path / "other.key")
    make_key_file(other.path)
    with pytest.raises(VaultKeyError, match="wrong master key"):
        unseal(blob, other)
    # one flipped ciphertext byte fails authentication
    bad = bytearray(blob)
    bad[-5] ^= 0x01
    with pytest.raises(VaultError, match="altered"):
        unseal(bytes(bad), prov)


def test_key_file_problems_say_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(VaultKeyError, match="No such file"):
        _ = LocalKeyFileProvider(tmp_path / "missing").key_id
    (tmp_path / "short").write_text("abcd")
    with pytest.raises(VaultKeyError, match="expected 32 bytes or 64 hex"):
        _ = LocalKeyFileProvider(tmp_path / "short").key_id


def test_raw_key_is_deterministic_and_carries_the_first_frame_time() -> None:
    k = raw_key("cam-1", 1795378500123, 42)
    assert k == "camera=cam-1/date=2026-11-22/hour=20/20261122T201500123Z_42.raw"
    assert raw_key_first_ms(k) == 1795378500123
