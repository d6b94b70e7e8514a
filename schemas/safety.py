"""Hostile-input hygiene shared by every entry point: ids, limits, credentials in text.

* **Ids.** :data:`ID_PATTERN` is the one definition of a camera (and policy) id. The JSON
  Schemas carry it anchored as ``^...$`` and :mod:`schemas` evaluates those anchors as
  whole-string anchors (``$`` never matches before a trailing newline), the CLI and the
  sink call :func:`camera_id_problem`, which uses ``re.fullmatch``. Nothing is ever
  "sanitised" into an id: an id that cannot be a Kafka key and an object-key component as
  it is gets refused where it enters (registration, a message), so two cameras can never
  share a storage prefix.
* **Credentials.** :func:`redact_url` and :func:`scrub_secrets` remove ``user:password@``
  and the values of secret query parameters (``?password=``, ``pwd=``, ``token=``,
  ``key=``, ``sig=``, ``auth=``, ``api_key=``... any case, see :func:`secret_param`) from
  URLs anywhere in a text (FFmpeg repeats the URL it failed to open in its error text) and
  any literal secret the caller knows (the value read from ``credentials_env``). Every
  layer that shows or logs a camera URL goes through :func:`redact_url` (the CLI's error
  handler, ``cameras list``, the ingest reader's logs and last error).
  :func:`url_credentials_problem` refuses URLs that carry credentials (either way) at
  registration and when a stored registry record is read.

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
    "secret_param",
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
# Only ASCII whitespace ends the token: Python's ``\s`` also matches Unicode separators
# (U+2028, U+00A0...), and a password holding one must not end the match before its "@".
_URL_CRED = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\t\n\v\f\r '\"<>]*@)")


def _strip_userinfo(m: re.Match[str]) -> str:
    return m.group("scheme") + "***@"


# A query (or ";" path) parameter whose value is a secret: names are matched whole, case-
# insensitively, after percent-decoding. Long words match with any prefix (``camPassword``,
# ``access_token``, ``x-amz-signature``); short ones alone or after a separator (``key``,
# ``api_key``, ``x-api-key`` but not ``keyframe`` or ``monkey``).
_SECRET_NAME = re.compile(
    r"[\w.-]*(?:password|passwd|passphrase|token|secret|apikey|signature|credentials?)"
    r"|(?:[\w.-]*[_.-])?(?:pass|pwd|pw|key|sig|auth|authorization|session|sessionid)",
    re.IGNORECASE)
# Shown masked but not refused at registration: a user name is not a secret by itself.
_USER_NAME = re.compile(r"(?:[\w.-]*[_.-])?(?:user|username|usr|login)", re.IGNORECASE)
# name=value after "?", "&" or ";" inside a URL-ish token (a value ends at the next
# separator, quote, space or "#"); the name may be percent-encoded.
_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[A-Za-z0-9_.%+-]{1,64})=(?P<value>[^&;#\t\n\v\f\r '\"<>]*)")


def secret_param(name: str) -> bool:
    """Whether a URL query parameter called ``name`` carries a secret (``password``,
    ``PWD``, ``access_token``, ``api_key``, ``sig``, ``X-Amz-Signature``...)."""
    import urllib.parse

    return _SECRET_NAME.fullmatch(urllib.parse.unquote_plus(name)) is not None


def _mask_param(m: re.Match[str]) -> str:
    import urllib.parse

    name = m.group("name")
    plain = urllib.parse.unquote_plus(name)
    if m.group("value") and (_SECRET_NAME.fullmatch(plain) or _USER_NAME.fullmatch(plain)):
        return f"{m.group('sep')}{name}=***"
    return m.group(0)


def _redact_query(text: str) -> str:
    if "=" not in text:
        return text
    return _PARAM.sub(_mask_param, text)


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@`` part and with the values of secret (and user
    name) query parameters masked, for logs and error messages:
    ``rtsp://u:p/w@host/s`` -> ``rtsp://***@host/s``,
    ``rtsp://host/live?user=admin&password=x&ch=1`` -> ``rtsp://host/live?user=***&password=***&ch=1``.
    Works on a bare URL and on free text holding URLs."""
    return _redact_query(_URL_CRED.sub(_strip_userinfo, url))


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
    """``None`` unless ``url`` embeds ``user[:password]@`` or a secret query parameter
    (:func:`secret_param`); then a one-line refusal with the hint to use ``credentials_env``
    (the URL and the secret are not repeated; a parameter is named, never its value)."""
    if not isinstance(url, str):
        return None
    if _URL_CRED.search(url):
        return (f"{what}: credentials in the URL are refused (they would be stored in the camera registry "
                f"and shown in listings); remove 'user:password@' and put user:password in an environment "
                f"variable named by credentials_env (e.g. --credentials-env CAM_LOBBY_CREDS)")
    names = sorted({m.group("name") for m in _PARAM.finditer(url) if secret_param(m.group("name"))})
    if names:
        shown = ", ".join(repr(n[:40]) for n in names[:5])
        return (f"{what}: credentials in the URL's query ({shown}) are refused (they would be stored in the "
                f"camera registry and shown in listings); remove them and put user:password in an environment "
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
