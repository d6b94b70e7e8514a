"""HTTP byte ranges (RFC 9110 section 14): the one parser every footage route uses.

What the console answers, for every route alike:

- no ``Range``, a range unit other than ``bytes`` (RFC: MUST ignore), or a header with no
  ``=``: the whole body, 200;
- one satisfiable range (``bytes=0-``, ``bytes=00-``, ``bytes=100-199``, ``bytes=-500``,
  ``bytes=500-``): 206 with that part; a last position past the end is clipped, a suffix
  longer than the body is the whole body (RFC 9110 14.1.2);
- several ranges (``bytes=0-9,20-29``): the whole body, 200 (RFC: a server MAY ignore
  ``Range``; serving one policy for all of them keeps one answer per request and no
  multipart bodies to get wrong);
- a malformed ``bytes`` range set (``bytes=x-``, ``bytes=5-3``, ``bytes=``): 416 (RFC: MAY
  reject an invalid ranges-specifier);
- nothing satisfiable (``bytes=999999-`` on a smaller body, ``bytes=-0``): 416 with
  ``Content-Range: bytes */SIZE``.

Whatever the header, the caller records its audit event before calling this: the decision
here changes which bytes leave, never whether the request is recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)", re.ASCII)
_SUFFIX = re.compile(r"-([0-9]+)", re.ASCII)
_HUGE = 10**18  # beyond any object the console serves; keeps int() off 4000-digit strings


class RangeError(Exception):
    """416: the range set is malformed or nothing in it is satisfiable."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _num(digits: str) -> int:
    d = digits.lstrip("0") or "0"
    return int(d) if len(d) <= 18 else _HUGE


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The part of a ``size``-byte body to send, or ``None`` for all of it (200).

    Raises:
        RangeError: 416 (malformed ``bytes`` range set, or nothing satisfiable).
    """
    if not header or not header.strip():
        return None
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None  # not a bytes range: ignored (RFC 9110 14.2)
    shown = header.strip()[:60]
    parts = [p.strip(" \t") for p in spec.split(",")]
    parts = [p for p in parts if p]  # empty list elements are allowed and ignored
    if not parts:
        raise RangeError(f"Range {shown!r}: no range in it", size)
    ranges: list[ByteRange] = []
    for p in parts:
        m = _INT_RANGE.fullmatch(p)
        if m:
            first = _num(m[1])
            last = _num(m[2]) if m[2] else None
            if last is not None and last < first:
                raise RangeError(f"Range {shown!r}: {p[:30]!r} ends before it starts", size)
            if first < size:
                ranges.append(ByteRange(first, min(last if last is not None else size - 1, size - 1)))
            continue
        m = _SUFFIX.fullmatch(p)
        if m:
            n = _num(m[1])
            if n > 0 and size > 0:
                ranges.append(ByteRange(max(0, size - n), size - 1))
            continue
        raise RangeError(f"Range {shown!r}: {p[:30]!r} is not a byte range (first-last, first- or -suffix)", size)
    if not ranges:
        raise RangeError(f"Range {shown!r}: nothing in it lies inside the {size}-byte object", size)
    if len(parts) > 1:
        return None  # several ranges: the whole body (see the module docstring)
    return ranges[0]
