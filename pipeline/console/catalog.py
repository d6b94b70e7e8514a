"""What is stored, read for the console: cameras, a camera-day's segments, their manifests.

Segments and manifests sit under ``camera=<id>/date=YYYY-MM-DD/hour=HH/<start>_<end>.mp4``
(+ ``.json``; see :mod:`pipeline.sink.segments`). Manifests are immutable under object lock
(a replay may only rewrite a window with a superset of its chunks), so they are cached.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

logger = logging.getLogger(__name__)

CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SEGMENT_KEY = re.compile(
    r"^camera=(?P<camera>[A-Za-z0-9._-]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"(?P<start>\d{8}T\d{9}Z)_(?P<end>\d{8}T\d{9}Z)(?:-p\d+)?\.mp4$")


def parse_ts(s: str) -> int:
    """``20261122T201500000Z`` -> epoch ms (the inverse of ``segments.format_ts``)."""
    d = dt.datetime.strptime(s[:15], "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    return int(d.timestamp()) * 1000 + int(s[15:18])


def iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Segment:
    """One stored segment as the timeline and player need it."""

    key: str
    camera_id: str
    start_ms: int
    end_ms: int
    first_frame_ms: int
    last_frame_ms: int
    frames: int
    fps: float
    fail_closed_frames: int
    fail_closed_pts_ms: tuple[int, ...]
    dropped_frames: int
    masks_per_class: dict[str, int]
    policy_id: str
    sha256: str
    size_bytes: int | None
    has_manifest: bool

    @property
    def manifest_key(self) -> str:
        return self.key[: -len(".mp4")] + ".json"

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "camera_id": self.camera_id, "start_ms": self.start_ms, "end_ms": self.end_ms,
                "first_frame_ms": self.first_frame_ms, "last_frame_ms": self.last_frame_ms,
                "frames": self.frames, "fps": self.fps, "fail_closed_frames": self.fail_closed_frames,
                "fail_closed_pts_ms": list(self.fail_closed_pts_ms), "dropped_frames": self.dropped_frames,
                "masks_per_class": self.masks_per_class, "policy_id": self.policy_id, "sha256": self.sha256,
                "size_bytes": self.size_bytes, "has_manifest": self.has_manifest,
                "start": iso(self.start_ms), "end": iso(self.end_ms)}


def fps_of(man: Mapping[str, Any]) -> float:
    """Frame rate of a segment: the manifest's ``fps`` when the sink stamped it, else
    from its frame count over the first-to-last frame span."""
    if man.get("fps"):
        return float(man["fps"])
    frames = int(man.get("frames") or 0)
    span = int(man.get("last_frame_ms") or 0) - int(man.get("first_frame_ms") or 0)
    if frames > 1 and span > 0:
        return round((frames - 1) * 1000.0 / span, 3)
    return 25.0


def segment_from(key: str, man: Mapping[str, Any] | None) -> Segment | None:
    m = SEGMENT_KEY.match(key)
    if not m:
        return None
    start, end = parse_ts(m["start"]), parse_ts(m["end"])
    man = man or {}
    return Segment(
        key=key, camera_id=m["camera"], start_ms=int(man.get("start_ms", start)), end_ms=int(man.get("end_ms", end)),
        first_frame_ms=int(man.get("first_frame_ms", start)), last_frame_ms=int(man.get("last_frame_ms", end)),
        frames=int(man.get("frames") or 0), fps=fps_of(man),
        fail_closed_frames=int(man.get("fail_closed_frames") or 0),
        fail_closed_pts_ms=tuple(int(x) for x in man.get("fail_closed_pts_ms") or ()),
        dropped_frames=int(man.get("dropped_frames") or 0),
        masks_per_class={str(k): int(v) for k, v in (man.get("masks_per_class") or {}).items()},
        policy_id=str(man.get("policy_id") or ""), sha256=str(man.get("sha256") or ""),
        size_bytes=man.get("size_bytes"), has_manifest=bool(man))


@dataclass(frozen=True)
class Gap:
    from_ms: int
    to_ms: int

    def as_json(self) -> dict[str, Any]:
        return {"from_ms": self.from_ms, "to_ms": self.to_ms, "seconds": round((self.to_ms - self.from_ms) / 1000, 1),
                "from": iso(self.from_ms), "to": iso(self.to_ms)}


def gaps(segments: list[Segment], day_start_ms: int, day_end_ms: int, tolerance_ms: int = 2000) -> list[Gap]:
    """Stretches of the day with no stored frame, longer than ``tolerance_ms`` (a chunk)."""
    out: list[Gap] = []
    cursor = day_start_ms
    for s in sorted(segments, key=lambda s: s.first_frame_ms):
        if s.first_frame_ms - cursor > tolerance_ms:
            out.append(Gap(cursor, s.first_frame_ms))
        cursor = max(cursor, s.last_frame_ms)
    if day_end_ms - cursor > tolerance_ms:
        out.append(Gap(cursor, day_end_ms))
    return out


@dataclass
class CameraStatus:
    camera_id: str
    policy_id: str
    registered: bool
    enabled: bool
    notice: dict[str, str] = field(default_factory=dict)
    last_segment_key: str | None = None
    last_frame_ms: int | None = None
    lag_s: float | None = None
    streaming: bool = False
    fail_closed_last_hour: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"camera_id": self.camera_id, "policy_id": self.policy_id, "registered": self.registered,
                "enabled": self.enabled, "notice": self.notice, "last_segment_key": self.last_segment_key,
                "last_frame": iso(self.last_frame_ms) if self.last_frame_ms else None,
                "lag_s": self.lag_s, "streaming": self.streaming,
                "fail_closed_last_hour": self.fail_closed_last_hour}


NOTICE_FIELDS = ("purpose", "scope", "contact")


def notice_of(cam: Any) -> dict[str, str]:
    """The camera notice (purpose, scope, the operator's contact) from a registry record's
    ``notice`` (camera.schema.json), else its labels."""
    nested = getattr(cam, "notice", None) or {}
    labels = getattr(cam, "labels", None) or {}
    out: dict[str, str] = {}
    for f in NOTICE_FIELDS:
        v = nested.get(f) if isinstance(nested, Mapping) else None
        v = v or labels.get(f)
        if v:
            out[f] = str(v)
    return out


class Catalog:
    """Reads the redacted bucket through an ``ObjectStore`` (``list_objects``, ``get_object``).

    ``registry`` returns ``{camera_id: CameraConfig}`` (the ``veil.cameras`` topic); it is
    cached for ``registry_ttl_s`` and may fail (the bucket alone still lists cameras).
    """

    def __init__(self, store: Any, registry: Callable[[], Mapping[str, Any]] | None = None,
                 registry_ttl_s: float = 15.0, streaming_within_s: float = 180.0,
                 clock: Callable[[], float] = time.time, manifest_cache: int = 4096) -> None:
        self.store = store
        self._registry_fn = registry
        self.registry_ttl_s = registry_ttl_s
        self.streaming_within_s = streaming_within_s
        self.clock = clock
        self._lock = threading.Lock()
        self._reg: tuple[float, dict[str, Any], str | None] = (-1e18, {}, None)
        self._manifests: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._manifest_cap = manifest_cache
        self.listing_ttl_s = 5.0
        self._listings: dict[tuple[str, str], tuple[float, list[str]]] = {}

    # ------------------------------------------------------------ registry
    def registry(self) -> tuple[dict[str, Any], str | None]:
        """``(records, error)``: the cached registry and why it could not be read (or None)."""
        now = self.clock()
        with self._lock:
            t, recs, err = self._reg
            if now - t < self.registry_ttl_s:
                return recs, err
        if self._registry_fn is None:
            recs, err = {}, None
        else:
            try:
                recs, err = dict(self._registry_fn()), None
            except Exception as exc:  # noqa: BLE001 - the page says so; the bucket still lists cameras
                logger.warning("camera registry unreadable error=%s", exc)
                recs, err = dict(self._reg[1]), f"camera registry unreadable: {exc}"
        with self._lock:
            self._reg = (now, recs, err)
        return recs, err

    def stored_cameras(self) -> set[str]:
        client = getattr(self.store, "client", None)
        bucket = getattr(self.store, "bucket", None)
        out: set[str] = set()
        if client is not None and bucket is not None:
            for obj in client.list_objects(bucket, prefix="camera=", recursive=False):
                name = obj.object_name.rstrip("/")
                if name.startswith("camera="):
                    out.add(name[len("camera="):])
            return out
        for key in self.store.list_objects("camera="):
            out.add(key.split("/", 1)[0][len("camera="):])
        return out

    def camera_ids(self) -> list[str]:
        recs, _err = self.registry()
        return sorted(set(recs) | self.stored_cameras())

    def policy_of(self, camera_id: str) -> str | None:
        """The camera's policy id from the registry; for a camera that is only in the
        bucket (removed from the registry) the policy stamped in its newest manifest."""
        recs, _err = self.registry()
        cam = recs.get(camera_id)
        if cam is not None:
            return str(getattr(cam, "policy_id", "default") or "default")
        last = self.last_segment(camera_id)
        return last.policy_id if last and last.policy_id else None

    def exists(self, camera_id: str) -> bool:
        recs, _err = self.registry()
        return camera_id in recs or camera_id in self.stored_cameras()

    # ------------------------------------------------------------ segments
    def manifest(self, key: str) -> dict[str, Any] | None:
        mkey = key[: -len(".mp4")] + ".json" if key.endswith(".mp4") else key
        with self._lock:
            if mkey in self._manifests:
                self._manifests.move_to_end(mkey)
                return self._manifests[mkey]
        try:
            man = cast("dict[str, Any]", json.loads(self.store.get_object(mkey)))
        except Exception as exc:  # noqa: BLE001 - missing or unreadable: the segment shows without it
            logger.debug("manifest unreadable key=%s error=%s", mkey, exc)
            return None
        with self._lock:
            self._manifests[mkey] = man
            while len(self._manifests) > self._manifest_cap:
                self._manifests.popitem(last=False)
        return man

    def day_keys(self, camera_id: str, date: str) -> list[str]:
        """A camera-day's segment keys; one listing per ``listing_ttl_s`` (the camera page and
        the status of every camera read the same days)."""
        now = self.clock()
        with self._lock:
            hit = self._listings.get((camera_id, date))
            if hit is not None and now - hit[0] < self.listing_ttl_s:
                return hit[1]
        keys = sorted(k for k in self.store.list_objects(f"camera={camera_id}/date={date}/") if k.endswith(".mp4"))
        with self._lock:
            self._listings[(camera_id, date)] = (now, keys)
            if len(self._listings) > 10_000:
                self._listings.clear()
        return keys

    def day(self, camera_id: str, date: str) -> list[Segment]:
        out = []
        for key in self.day_keys(camera_id, date):
            seg = segment_from(key, self.manifest(key))
            if seg is not None:
                out.append(seg)
        return sorted(out, key=lambda s: (s.start_ms, s.key))

    def segment(self, key: str) -> Segment | None:
        if not SEGMENT_KEY.match(key):
            return None
        if self.store.stat_object(key) is None:
            return None
        return segment_from(key, self.manifest(key))

    def dates(self, camera_id: str, around: dt.date | None = None, days: int = 7) -> list[str]:
        """Days (newest first, at most ``days``) up to ``around`` that hold segments."""
        end = around or dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC).date()
        out = []
        for i in range(days):
            d = (end - dt.timedelta(days=i)).isoformat()
            if any(True for _ in self.store.list_objects(f"camera={camera_id}/date={d}/")):
                out.append(d)
        return out

    def last_segment(self, camera_id: str) -> Segment | None:
        today = dt.datetime.fromtimestamp(self.clock(), tz=dt.UTC).date()
        for d in (today, today - dt.timedelta(days=1)):
            keys = self.day_keys(camera_id, d.isoformat())
            if keys:
                return segment_from(keys[-1], self.manifest(keys[-1]))
        return None

    def status(self, camera_ids: Iterable[str]) -> list[CameraStatus]:
        recs, _err = self.registry()
        now_ms = int(self.clock() * 1000)
        out = []
        for cid in camera_ids:
            cam = recs.get(cid)
            st = CameraStatus(camera_id=cid, policy_id=self.policy_of(cid) or "?", registered=cam is not None,
                              enabled=bool(getattr(cam, "enabled", False)) if cam is not None else False,
                              notice=notice_of(cam) if cam is not None else {})
            today = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC).date()
            recent: list[Segment] = []
            for d in (today - dt.timedelta(days=1), today):
                recent += self.day(cid, d.isoformat()) if now_ms - int(dt.datetime(
                    d.year, d.month, d.day, tzinfo=dt.UTC).timestamp() * 1000) < 2 * 86400_000 else []
            if recent:
                last = max(recent, key=lambda s: s.last_frame_ms)
                st.last_segment_key = last.key
                st.last_frame_ms = last.last_frame_ms
                st.lag_s = round(max(0.0, (now_ms - last.last_frame_ms) / 1000.0), 1)
                st.streaming = st.enabled and st.lag_s <= self.streaming_within_s
                st.fail_closed_last_hour = sum(
                    sum(1 for p in s.fail_closed_pts_ms if p >= now_ms - 3600_000) if s.fail_closed_pts_ms
                    else (s.fail_closed_frames if s.last_frame_ms >= now_ms - 3600_000 else 0)
                    for s in recent)
            out.append(st)
        return out
