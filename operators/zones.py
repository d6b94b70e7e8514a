"""Static privacy zones: polygons that are masked on every frame (shop windows, homes).

File format (YAML)::

    zones:            # applied to every camera / every file
      - name: shop-window
        polygon: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.5], [0.1, 0.5]]
        normalized: true   # optional; default: true when every coordinate is in [0, 1]
    cameras:          # optional per-camera extra zones
      cam-001:
        - name: apartment-window
          polygon: [[640, 0], [1280, 0], [1280, 360]]

Normalized coordinates are fractions of the frame width (x) and height (y); otherwise
they are pixels. Note the one ambiguity: a pixel polygon whose every coordinate is 0 or 1
reads as normalized unless ``normalized: false`` is given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from schemas.yamlio import read_yaml

from .types import ConfigError

BoolMask = npt.NDArray[np.bool_]

_ZONE_KEYS = ("name", "polygon", "normalized")
_ROOT_KEYS = ("zones", "cameras")


@dataclass(frozen=True, eq=False)
class PrivacyZone:
    """One polygon to mask.

    Attributes:
        name: label for logs and audit.
        polygon_xy: ``(P, 2)`` float64 vertices ``x, y``, P >= 3 (read-only copy).
        normalized: vertices are fractions of the frame width/height, else pixels.
    """

    name: str
    polygon_xy: npt.NDArray[np.float64]
    normalized: bool

    def __post_init__(self) -> None:
        pts = np.array(self.polygon_xy, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 3:
            raise ConfigError(f"zone {self.name!r}: polygon_xy must be (P >= 3, 2), got {pts.shape}")
        if not np.isfinite(pts).all():
            raise ConfigError(f"zone {self.name!r}: polygon_xy must be finite")
        pts.setflags(write=False)
        object.__setattr__(self, "polygon_xy", pts)

    def pixel_polygon(self, h: int, w: int) -> npt.NDArray[np.int32]:
        """``(P, 2)`` int32 pixel vertices for an ``h x w`` frame (rounded)."""
        pts = self.polygon_xy * np.array([w, h], np.float64) if self.normalized else self.polygon_xy
        # Clamp before the int cast: fillPoly clips to the image anyway, and huge values
        # would overflow int32.
        lim = 4.0 * max(h, w, 1)
        return np.rint(np.clip(pts, -lim, lim)).astype(np.int32)


class ZoneSet:
    """Zones for every camera plus optional per-camera extras.

    ``mask(h, w)`` covers the global zones; ``for_camera(id).mask(h, w)`` covers the global
    zones and that camera's. Masks are cached per size and returned read-only.
    """

    def __init__(self, zones: Sequence[PrivacyZone] = (),
                 cameras: Mapping[str, Sequence[PrivacyZone]] | None = None) -> None:
        self.zones: tuple[PrivacyZone, ...] = tuple(zones)
        self.cameras: dict[str, tuple[PrivacyZone, ...]] = {
            str(k): tuple(v) for k, v in (cameras or {}).items()
        }
        self._masks: dict[tuple[int, int], BoolMask] = {}
        self._per_camera: dict[str, ZoneSet] = {}

    def __repr__(self) -> str:
        return f"ZoneSet(zones={[z.name for z in self.zones]}, cameras={sorted(self.cameras)})"

    @property
    def empty(self) -> bool:
        """True when no zone applies anywhere."""
        return not self.zones and not any(self.cameras.values())

    def mask(self, h: int, w: int) -> BoolMask:
        """``(h, w)`` bool, True inside any global zone (boundary pixels included).

        The array is cached and read-only; copy it before modifying.
        """
        key = (int(h), int(w))
        m = self._masks.get(key)
        if m is None:
            canvas = np.zeros(key, np.uint8)
            if self.zones and key[0] > 0 and key[1] > 0:
                # One call per polygon: fillPoly with several contours fills with the
                # even-odd rule, so where two zones overlap the overlap would be a hole.
                for z in self.zones:
                    cv2.fillPoly(canvas, [z.pixel_polygon(*key)], 1)
            m = canvas.astype(bool)
            m.setflags(write=False)
            self._masks[key] = m
        return m

    def for_camera(self, camera_id: str) -> ZoneSet:
        """The zones that apply to ``camera_id``: global ones plus its own (cached)."""
        zs = self._per_camera.get(camera_id)
        if zs is None:
            zs = ZoneSet(self.zones + self.cameras.get(camera_id, ()))
            self._per_camera[camera_id] = zs
        return zs


def load_zones(path_or_mapping: str | os.PathLike[str] | Mapping[str, Any]) -> ZoneSet:
    """Read a zones YAML file (or take an already-parsed mapping) and validate it.

    Raises:
        ConfigError: naming every problem with its dotted path (e.g.
            ``zones[0].polygon: expected at least 3 [x, y] points, got 2``), all at once.
    """
    if isinstance(path_or_mapping, Mapping):
        return parse_zones(path_or_mapping)
    path = Path(path_or_mapping)
    data = read_yaml(path, "zones file")
    try:
        return parse_zones(data)
    except ConfigError as exc:
        raise ConfigError(f"zones file {str(path)!r}: {exc}") from None


def parse_zones(data: Any) -> ZoneSet:
    """Pure counterpart of :func:`load_zones` for an already-loaded document."""
    problems: list[str] = []
    if not isinstance(data, Mapping):
        got = "an empty document" if data is None else type(data).__name__
        raise ConfigError(f"<root>: expected a mapping with keys {', '.join(_ROOT_KEYS)}, got {got}")
    for k in data:
        if k not in _ROOT_KEYS:
            problems.append(f"{k}: unknown key; expected {', '.join(_ROOT_KEYS)}")
    zones = _parse_zone_list(data.get("zones"), "zones", problems)
    cameras: dict[str, tuple[PrivacyZone, ...]] = {}
    cams = data.get("cameras")
    if cams is not None:
        if not isinstance(cams, Mapping):
            problems.append(f"cameras: expected a mapping of camera id -> list of zones, "
                            f"got {type(cams).__name__}")
        else:
            for cam, lst in cams.items():
                if not isinstance(cam, str) or not cam:
                    problems.append(f"cameras.{cam}: camera id must be a non-empty string")
                    continue
                cameras[cam] = _parse_zone_list(lst, f"cameras.{cam}", problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return ZoneSet(zones, cameras)


def parse_zone_list(items: Any, path: str = "zones") -> tuple[PrivacyZone, ...]:
    """A list of zone mappings (``{name, polygon, normalized}``, as in a policy or a camera
    record) as typed zones; ``ConfigError`` names every problem with its dotted path."""
    problems: list[str] = []
    zones = _parse_zone_list(list(items) if isinstance(items, (tuple, list)) else items, path, problems)
    if problems:
        raise ConfigError("; ".join(problems))
    return zones


def _parse_zone_list(lst: Any, path: str, problems: list[str]) -> tuple[PrivacyZone, ...]:
    if lst is None:
        return ()
    if not isinstance(lst, list):
        problems.append(f"{path}: expected a list of zones, got {type(lst).__name__}")
        return ()
    out: list[PrivacyZone] = []
    seen: set[str] = set()
    for i, item in enumerate(lst):
        zone = _parse_zone(item, f"{path}[{i}]", problems)
        if zone is None:
            continue
        if zone.name in seen:
            problems.append(f"{path}[{i}].name: duplicate zone name {zone.name!r}")
        seen.add(zone.name)
        out.append(zone)
    return tuple(out)


def _parse_zone(item: Any, path: str, problems: list[str]) -> PrivacyZone | None:
    if not isinstance(item, Mapping):
        problems.append(f"{path}: expected a mapping with {', '.join(_ZONE_KEYS)}, got {type(item).__name__}")
        return None
    start = len(problems)
    for k in item:
        if k not in _ZONE_KEYS:
            problems.append(f"{path}.{k}: unknown key; expected {', '.join(_ZONE_KEYS)}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{path}.name: expected a non-empty string, got {name!r}")
    normalized = item.get("normalized")
    if normalized is not None and not isinstance(normalized, bool):
        problems.append(f"{path}.normalized: expected true or false, got {normalized!r}")
        normalized = None
    pts = _parse_polygon(item.get("polygon"), f"{path}.polygon", problems)
    if pts is not None:
        in_unit = bool(((pts >= 0.0) & (pts <= 1.0)).all())
        if normalized is None:
            normalized = in_unit
        elif normalized and not in_unit:
            bad = pts[(pts < 0.0) | (pts > 1.0)][0]
            problems.append(f"{path}.polygon: normalized is true, so coordinates must be within "
                            f"[0, 1], got {float(bad):g}")
    if len(problems) > start or pts is None:
        return None
    return PrivacyZone(str(name), pts, bool(normalized))


def _parse_polygon(raw: Any, path: str, problems: list[str]) -> npt.NDArray[np.float64] | None:
    if raw is None:
        problems.append(f"{path}: required; expected at least 3 [x, y] points")
        return None
    if not isinstance(raw, list):
        problems.append(f"{path}: expected a list of [x, y] points, got {type(raw).__name__}")
        return None
    ok = True
    pts: list[tuple[float, float]] = []
    for j, p in enumerate(raw):
        if (isinstance(p, (list, tuple)) and len(p) == 2
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                        for c in p)):
            pts.append((float(p[0]), float(p[1])))
        else:
            problems.append(f"{path}[{j}]: expected [x, y] with two finite numbers, got {p!r}")
            ok = False
    if ok and len(pts) < 3:
        problems.append(f"{path}: expected at least 3 [x, y] points, got {len(pts)}")
        ok = False
    return np.array(pts, np.float64) if ok else None


__all__ = ["PrivacyZone", "ZoneSet", "load_zones", "parse_zone_list", "parse_zones"]
