"""Hostile-input hygiene shared by every entry point: ids, limits, credentials in text.

* **Ids.** :data:`ID_PATTERN` is the one definition of a camera (and policy) id. The JSON
  Schemas carry it anchored as ``^...$`` and :mod:`schemas` evaluates those anchors as
  whole-string anchors (``$`` never matches before a trailing newline), the CLI and the
  sink call :func:`camera_id_problem`, which uses ``re.fullmatch``. Nothing is ever
  "sanitised" into an id: an id that cannot be a Kafka key and an object-key component as
  it is gets refused where it enters (registration, a message), so two cameras can never
  share a storage prefix.
* **Credentials.** :func:`redact_url` and :func:`scrub_secrets` remove ``user:password@``
  from URLs anywhere in a text (FFmpeg repeats the URL it failed to open in its error
  text) and any literal secret the caller knows (the value read from ``credentials_env``).
  :func:`url_credentials_problem` refuses URLs that carry credentials at registration.

Stdlib only (this package's import rule).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "ID_PATTERN",
    "camera_id_problem",
    "chunk_limit_problem",
    "decoded_bytes_problem",
    "pixels_problem",
    "redact_url",
    "scrub_secrets",
    "url_credentials_problem",
]

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
"""A camera or policy id: 1-64 of letters, digits, ``.``, ``_``, ``-``; starts with a
letter or digit (so never ``.``/``..``, never a ``/``, ``=``, space or control character)."""

_ID = re.compile(ID_PATTERN)
ID_WORDS = ("1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(no spaces, slashes or control characters)")


def camera_id_problem(value: object, what: str = "camera_id") -> str | None:
    """``None`` for a valid id, else one line saying what is wrong (never echoes more
    than 80 characters of the value)."""
    if not isinstance(value, str):
        return f"{what}: expected a string, got {type(value).__name__}"
    if _ID.fullmatch(value) is None:
        shown = repr(value[:80]) + ("..." if len(value) > 80 else "")
        return f"{what}: {shown} is not a valid id: expected {ID_WORDS}"
    return None


# userinfo: everything between "scheme://" and the LAST "@" of the URL token. A password
# may hold "/", ":", "#" or "?" unescaped in what operators type, so the authority cannot
# be found by splitting at the first "/".
_URL_CRED = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*@)")


def _strip_userinfo(m: re.Match[str]) -> str:
    return m.group("scheme") + "***@"


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` part, for logs and error messages:
    ``rtsp://u:p/w@host/s`` -> ``rtsp://***@host/s``."""
    return _URL_CRED.sub(_strip_userinfo, url)


def scrub_secrets(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL's credentials and every literal in ``secrets`` (and its
    ``user:password`` halves) replaced by ``***``. Use on any exception text that may
    contain a URL before it is logged, stored (DLQ, status) or printed."""
    out = redact_url(text)
    for secret in secrets:
        if not secret:
            continue
        parts = {secret, *([p for p in secret.split(":", 1) if len(p) >= 4] if ":" in secret else [])}
        for p in sorted(parts, key=len, reverse=True):
            out = out.replace(p, "***")
    return out


def url_credentials_problem(url: str, what: str = "url") -> str | None:
    """``None`` unless ``url`` embeds ``user[:password]@``; then a one-line refusal with
    the hint to use ``credentials_env`` (the URL itself is not repeated)."""
    if isinstance(url, str) and _URL_CRED.search(url):
        return (f"{what}: credentials in the URL are refused (they would be stored in the camera registry "
                f"and shown in listings); remove 'user:password@' and put user:password in an environment "
                f"variable named by credentials_env (e.g. --credentials-env CAM_LOBBY_CREDS)")
    return None


def chunk_limit_problem(limits: object | None, *, width: int, height: int, frames: int,
                        payload_bytes: int) -> str | None:
    """``None`` when a chunk is within ``limits`` (a ``LimitsConfig``-like object with
    ``max_pixels_per_frame``, ``max_frames_per_chunk``, ``max_message_bytes``,
    ``max_decoded_bytes_per_chunk``; ``None`` = no limits), else one line naming the
    limit. Pure: check before decoding."""
    if limits is None:
        return None
    max_px = int(getattr(limits, "max_pixels_per_frame", 0) or 0)
    max_frames = int(getattr(limits, "max_frames_per_chunk", 0) or 0)
    max_bytes = int(getattr(limits, "max_message_bytes", 0) or 0)
    too_big = pixels_problem(max_px, width, height)
    if too_big:
        return too_big
    if max_frames and int(frames) > max_frames:
        return f"{int(frames)} frames exceed limits.max_frames_per_chunk {max_frames}"
    if max_bytes and int(payload_bytes) > max_bytes:
        return f"payload of {int(payload_bytes)} bytes exceeds limits.max_message_bytes {max_bytes}"
    return decoded_bytes_problem(getattr(limits, "max_decoded_bytes_per_chunk", None), frames=frames,
                                 width=width, height=height)


def decoded_bytes_problem(max_bytes: int | None, *, frames: int, width: int, height: int) -> str | None:
    """``None`` unless ``frames`` BGR frames of ``width x height`` (``frames x width x
    height x 3`` bytes once decoded) exceed ``max_bytes`` (``None``/0 = no limit)."""
    need = int(frames) * int(width) * int(height) * 3
    if max_bytes and need > int(max_bytes):
        return (f"{int(frames)} frames of {int(width)}x{int(height)} decode to {need} bytes, over "
                f"limits.max_decoded_bytes_per_chunk {int(max_bytes)}")
    return None


def pixels_problem(max_pixels: int | None, width: int, height: int, what: str = "frame") -> str | None:
    """``None`` unless ``width x height`` exceeds ``max_pixels`` (``None``/0 = no limit)."""
    if max_pixels and int(width) * int(height) > int(max_pixels):
        return (f"{what} is {int(width)}x{int(height)} = {int(width) * int(height)} pixels, over the limit of "
                f"{int(max_pixels)} (limits.max_pixels_per_frame / --max-pixels)")
    return None
