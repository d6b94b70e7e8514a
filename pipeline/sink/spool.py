"""Bounded memory for the sink's open segments: chunk payloads past a byte budget go to disk.

An open segment holds every redacted chunk of its window until the window closes, so a sink
that keeps payloads in RAM needs cameras x segment length of memory (an SRE estimate for a
city: 75-110 GB). :class:`ChunkSpool` keeps at most ``max_buffered_bytes`` of payload in
memory; each chunk past it is appended to its segment's spool file and replaced by a
:class:`SpooledChunk` (the same fields; ``payload`` reads the bytes back). The remux reads
the payloads back chunk by chunk, so the MP4 is byte-identical to the in-memory path.

The spool is a cache, never a source of truth: offsets stay uncommitted until the segment
holding a chunk is stored, so a restarted sink re-reads every open chunk from Kafka. That is
why :meth:`ChunkSpool.__init__` deletes whatever an earlier process left in the directory,
and why a failed spool write (disk full) keeps the payload in memory rather than losing it.

Not thread-safe; the sink loop owns it. Chunk metadata (timestamps, counts) stays in memory:
it is O(frames), not O(bytes).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)

SPOOL_SUFFIX = ".spool"


class SpoolError(VeilStreamError):
    """A spooled payload cannot be read back (its file was removed or truncated). Neither a
    retry nor the DLQ can help: the sink must restart and re-read the chunks from Kafka,
    where they are still uncommitted."""


class SpooledChunk:
    """A redacted chunk whose payload lives in a spool file (read-only).

    Every field but ``payload`` is the original chunk's (``meta``, the chunk with an empty
    payload); ``payload`` reads ``length`` bytes at ``offset`` of ``path`` on each access.
    """

    __slots__ = ("meta", "path", "offset", "length")

    def __init__(self, meta: Any, path: str, offset: int, length: int) -> None:
        self.meta = meta
        self.path = path
        self.offset = offset
        self.length = length

    def __getattr__(self, name: str) -> Any:  # only called for names not in __slots__
        return getattr(self.meta, name)

    @property
    def payload(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.length)
        except OSError as exc:
            raise SpoolError(f"spool file unreadable camera={self.meta.camera_id} chunk_seq={self.meta.chunk_seq}: "
                             f"{exc}") from exc
        if len(data) != self.length:
            raise SpoolError(f"spool file {self.path} is short: {len(data)} of {self.length} bytes at {self.offset}")
        return data

    def materialize(self) -> Any:
        """The original chunk, payload in memory (for the DLQ, which re-encodes it)."""
        return dataclasses.replace(self.meta, payload=self.payload)


def materialize(chunk: Any) -> Any:
    """``chunk`` with its payload in memory (the chunk itself unless it is spooled)."""
    return chunk.materialize() if isinstance(chunk, SpooledChunk) else chunk


@dataclasses.dataclass
class _SegmentSpool:
    """What one open segment holds: payload bytes in memory, and its spool file if any."""

    in_memory: int = 0
    path: str | None = None
    on_disk: int = 0


class ChunkSpool:
    """Keeps open segments' payloads within ``max_buffered_bytes`` of memory.

    Args:
        directory: where spool files go; ``None`` makes a private temporary directory when
            the first chunk spills (removed by :meth:`close`, or when the spool is garbage
            collected). A given directory is emptied of spool files at start (an earlier
            process's leftovers: Kafka holds those chunks, uncommitted).
        max_buffered_bytes: payload bytes of open segments kept in memory; 0 spools every
            chunk, ``None`` never spools.
    """

    def __init__(self, directory: str | os.PathLike[str] | None, max_buffered_bytes: int | None) -> None:
        self.max_buffered_bytes = max_buffered_bytes
        self._owned = directory is None
        self._directory = None if directory is None else Path(directory)
        self.buffered_bytes = 0  # payload bytes in memory, over all open segments
        self.spooled_bytes = 0  # payload bytes in spool files now
        self.peak_buffered_bytes = 0
        self.spool_errors = 0
        self._segments: dict[int, _SegmentSpool] = {}  # id(segment) -> its accounting
        self._refs: dict[int, Any] = {}  # id(segment) -> segment (keeps the id unique while tracked)
        self._n = 0
        if self._directory is not None:
            self._directory.mkdir(parents=True, exist_ok=True)
            stale = list(self._directory.glob(f"*{SPOOL_SUFFIX}"))
            for p in stale:
                p.unlink(missing_ok=True)
            if stale:
                logger.info("spool cleaned dir=%s stale_files=%d (their chunks are re-read from Kafka)",
                            self.directory, len(stale))

    @property
    def directory(self) -> Path:
        """The spool directory (a private one is made on first use)."""
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="veil-sink-spool-"))
            weakref.finalize(self, shutil.rmtree, str(self._directory), True)
        return self._directory

    @property
    def enabled(self) -> bool:
        return self.max_buffered_bytes is not None

    def _state(self, seg: Any) -> _SegmentSpool:
        st = self._segments.get(id(seg))
        if st is None:
            st = self._segments[id(seg)] = _SegmentSpool()
            self._refs[id(seg)] = seg
        return st

    def admit(self, seg: Any) -> None:
        """Account for ``seg.chunks[-1]`` (just added): keep it in memory while the budget
        allows, else append its payload to the segment's spool file and replace it there."""
        chunk: Any = seg.chunks[-1]
        if isinstance(chunk, SpooledChunk):
            return
        st = self._state(seg)
        payload: bytes = chunk.payload
        size = len(payload)
        fits = self.max_buffered_bytes is None or self.buffered_bytes + size <= self.max_buffered_bytes
        if fits or not dataclasses.is_dataclass(chunk) or isinstance(chunk, type):  # only a dataclass
            # instance can drop its payload
            st.in_memory += size
            self.buffered_bytes += size
            self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)
            return
        try:
            if st.path is None:
                self._n += 1
                st.path = str(self.directory / f"seg-{os.getpid()}-{self._n}{SPOOL_SUFFIX}")
            with open(st.path, "ab") as f:
                offset = f.tell()
                f.write(payload)
        except OSError as exc:
            # the disk is full or gone: keep the chunk in memory (over budget, logged and
            # counted) rather than lose it; Kafka still holds it, uncommitted
            self.spool_errors += 1
            logger.error("spool write failed dir=%s camera=%s chunk_seq=%s error=%s: kept in memory",
                         self.directory, getattr(chunk, "camera_id", "?"), getattr(chunk, "chunk_seq", "?"), exc)
            st.in_memory += size
            self.buffered_bytes += size
            self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)
            return
        seg.chunks[-1] = SpooledChunk(dataclasses.replace(chunk, payload=b""), st.path, offset, size)
        st.on_disk += size
        self.spooled_bytes += size

    def release(self, seg: Any) -> None:
        """The segment is stored, dead-lettered or dropped: forget its bytes, delete its file."""
        st = self._segments.pop(id(seg), None)
        self._refs.pop(id(seg), None)
        if st is None:
            return
        self.buffered_bytes -= st.in_memory
        self.spooled_bytes -= st.on_disk
        if st.path is not None:
            try:
                os.unlink(st.path)
            except OSError as exc:
                logger.warning("spool file not removed path=%s error=%s", st.path, exc)

    def open_segments(self) -> int:
        return len(self._segments)

    def close(self) -> None:
        """Forget everything; remove the spool files (and the directory if it is ours)."""
        for seg in list(self._refs.values()):
            self.release(seg)
        if self._owned and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)


__all__ = ["ChunkSpool", "SpoolError", "SpooledChunk", "materialize"]
