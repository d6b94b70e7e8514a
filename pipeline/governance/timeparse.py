"""Times and durations as the governance commands take them: ISO 8601 or epoch ms, ``15m``."""

from __future__ import annotations

import datetime as dt
import re

from schemas.errors import InputError


# ---------------------------------------------------------------- parsing (pure)
def parse_time(value: str | int | float) -> int:
    """``2026-11-23T10:15:00Z`` / ``2026-11-23 10:15:00+09:00`` / epoch ms -> epoch ms (UTC)."""
    if isinstance(value, int | float):
        return int(value)
    s = str(value).strip()
    if re.fullmatch(r"\d{11,14}", s):
        return int(s)
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"time {value!r}: expected ISO 8601 like 2026-11-23T10:15:00Z, or epoch milliseconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def parse_duration(value: str) -> int:
    """``15m`` / ``1h`` / ``90s`` / ``2d`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", str(value))
    if not m or int(m.group(1)) <= 0:
        raise InputError(f"duration {value!r}: expected a positive number with s, m, h or d (e.g. 15m)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
