"""The object-key layout of the segment bucket (pure): where the sink writes a camera's
segments and manifests, and where governance, the console and the CLI read them::

    camera=<id>/date=YYYY-MM-DD/hour=HH/<window start>_<window end>[-p<chunk_seq>].mp4   (UTC)
    ... same key with .json: the segment's manifest

Keys are a pure function of the data (camera, window), so a replay overwrites instead of
duplicating. Neutral ground: the sink (:mod:`pipeline.sink`) and governance
(:mod:`pipeline.governance`) both import it, and it imports neither.
"""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.errors import VeilStreamError
from schemas.safety import camera_id_problem


class SegmentError(VeilStreamError):
    pass


def key_component(camera_id: str) -> str:
    """The camera id as a key path component: the id itself, never a lossy rewrite (two
    ids must never share a prefix). An id that is not a valid id is refused.

    Raises:
        SegmentError: ``camera_id`` is not a valid id (:data:`schemas.safety.ID_PATTERN`).
    """
    problem = camera_id_problem(camera_id)
    if problem:
        raise SegmentError(problem)
    return camera_id


def _utc(ms: int) -> datetime:
    try:
        return datetime.fromtimestamp(ms // 1000, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise SegmentError(f"timestamp {ms} ms is outside the representable UTC range: {exc}") from None


def format_ts(ms: int) -> str:
    """``1795378500000`` -> ``20261122T201500000Z`` (UTC, millisecond precision).

    Raises:
        SegmentError: ``ms`` is not a representable UTC time (e.g. year 10000).
    """
    dt = _utc(ms)
    return f"{dt:%Y%m%dT%H%M%S}{ms % 1000:03d}Z"


def segment_prefix(camera_id: str, start_ms: int) -> str:
    dt = _utc(start_ms)
    return f"camera={key_component(camera_id)}/date={dt:%Y-%m-%d}/hour={dt:%H}/"


def segment_key(camera_id: str, start_ms: int, end_ms: int, part: int | None = None,
                ext: str = "mp4") -> str:
    """Deterministic object key of a segment; date and hour are those of ``start_ms`` (UTC).

    ``part`` (a chunk sequence number) only appears for late data of a window that was
    already stored without it (see :func:`plan_write`).
    """
    suffix = f"-p{part}" if part is not None else ""
    return f"{segment_prefix(camera_id, start_ms)}{format_ts(start_ms)}_{format_ts(end_ms)}{suffix}.{ext}"


def manifest_key(mp4_key: str) -> str:
    return mp4_key[: -len(".mp4")] + ".json" if mp4_key.endswith(".mp4") else mp4_key + ".json"
