"""Storing one completed segment: remux, upload, manifest, and the plug-ins' hooks.

    remux MP4 (bad chunks → dead_letter) ──► plan_write (replay?) ──► retention hooks
    ──► PUT mp4 ──► manifest_fields hooks ──► PUT manifest ──► after_durable hooks

The manifest goes second: a manifest always describes an mp4 that is stored. What governs a
stored segment (hash chain, retention, notice, audit) comes in as plug-ins
(:mod:`pipeline.sink.plugins`); this module imports none of it. The caller (the sink loop)
finishes the segment's offsets only after :meth:`SegmentWriter.write` returned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.objectkeys import SegmentError, manifest_key
from pipeline.objectstore import ObjectStore, RetentionSpec

from .plugins import PluginError, SegmentPlugin, SegmentRef
from .segments import (
    CompletedSegment,
    SourceOffset,
    StreamTemplates,
    manifest,
    manifest_bytes,
    plan_write,
    remux_segment,
    segment_metadata,
    segment_tags,
)

logger = logging.getLogger(__name__)

MP4_CONTENT_TYPE = "video/mp4"
JSON_CONTENT_TYPE = "application/json"

DeadLetter = Callable[[Any, SourceOffset, str, str], None]
"""``f(chunk, source, reason, error)``: a chunk that cannot be stored goes to the DLQ."""


@dataclass(frozen=True)
class StoredSegment:
    """What :meth:`SegmentWriter.write` did with a segment.

    Attributes:
        action: ``write``, ``part`` (stored under a ``-p<chunk_seq>`` key) or ``skip`` (a
            replay found it stored already).
        key: the MP4's object key.
        bytes_written: mp4 + manifest bytes (0 on ``skip``).
        stored_at_ms: wall-clock ms when the mp4 was stored (``None`` on ``skip``).
    """

    action: str
    key: str
    bytes_written: int = 0
    stored_at_ms: int | None = None


@dataclass(frozen=True)
class _Existing:
    doc: dict[str, Any]
    body: bytes


class SegmentWriter:
    """Writes segments to ``store`` and runs ``plugins`` (in order) around each write.

    Args:
        store: the segment bucket.
        plugins: hook sets (:class:`pipeline.sink.plugins.SegmentPlugin`), called in this order.
        dead_letter: where a chunk that cannot be remuxed goes (the rest of its segment is kept).
    """

    def __init__(self, store: ObjectStore, plugins: Sequence[SegmentPlugin] = (), *,
                 dead_letter: DeadLetter) -> None:
        self.store = store
        self.plugins = tuple(plugins)
        self.dead_letter = dead_letter
        self.templates = StreamTemplates()  # output stream parameters, probed once per kind of stream

    def write(self, seg: CompletedSegment) -> StoredSegment | None:
        """Store one segment (or dead-letter its bad chunks: ``None`` when none is left).

        Mutates ``seg``: chunks that were dead-lettered are removed from it. Raises on an
        outage (and on a plug-in's error), and then nothing was finished: the caller retries.
        """
        mp4 = self._remux(seg)
        if mp4 is None:
            return None
        key = seg.key()
        existing = self._existing_manifest(key)
        action = plan_write(existing.doc if existing else None, seg)
        if action == "part":
            key = seg.key(part=seg.chunk_seqs[0])
            existing = self._existing_manifest(key)
            if plan_write(existing.doc if existing else None, seg) == "skip":
                action = "skip"
        ref = self._ref(seg, key)
        if action == "skip" and existing is not None:
            logger.info("segment already stored camera=%s key=%s chunks=%d (replay)", seg.camera_id, key,
                        len(seg.chunks))
            ref = dataclasses.replace(ref, retention=self._retention(ref))
            for plugin in self.plugins:
                plugin.already_stored(ref, existing.body)
            return StoredSegment("skip", key)
        return self._upload(seg, ref, mp4, action)

    def _upload(self, seg: CompletedSegment, ref: SegmentRef, mp4: bytes, action: str) -> StoredSegment:
        sha = hashlib.sha256(mp4).hexdigest()
        tags = segment_tags(seg)
        ref = dataclasses.replace(ref, retention=self._retention(ref))
        keep = ref.retention
        self.store.put_object(ref.key, mp4, MP4_CONTENT_TYPE, segment_metadata(seg, sha), tags, retention=keep)
        stored_ms = int(time.time() * 1000)
        doc = manifest(seg, sha, key=ref.key, size_bytes=len(mp4), stored_at_ms=stored_ms)
        for plugin in self.plugins:
            for name, value in plugin.manifest_fields(ref).items():
                if name in doc:
                    raise PluginError(f"plug-in {type(plugin).__name__} sets manifest field {name!r}, "
                                      "which is already set")
                doc[name] = value
        man = manifest_bytes(doc)
        # the manifest goes second: a manifest always describes an mp4 that is stored
        self.store.put_object(ref.manifest_key, man, JSON_CONTENT_TYPE, {"sha256": sha}, tags, retention=keep)
        for plugin in self.plugins:
            plugin.after_durable(ref, doc, man)
        logger.info("segment stored camera=%s key=%s frames=%d chunks=%d bytes=%d action=%s",
                    seg.camera_id, ref.key, seg.frames, len(seg.chunks), len(mp4), action)
        return StoredSegment(action, ref.key, len(mp4) + len(man), stored_ms)

    def _retention(self, ref: SegmentRef) -> RetentionSpec | None:
        for plugin in self.plugins:
            keep = plugin.retention(ref)
            if keep is not None:
                return keep
        return None

    @staticmethod
    def _ref(seg: CompletedSegment, key: str) -> SegmentRef:
        return SegmentRef(camera_id=seg.camera_id, key=key, manifest_key=manifest_key(key),
                          day=key.split("/date=", 1)[1][:10], start_ms=seg.start_ms, end_ms=seg.end_ms,
                          policy_id=seg.policies[0][0] if seg.policies else "")

    def _remux(self, seg: CompletedSegment) -> bytes | None:
        """MP4 of the segment; chunks that cannot be remuxed go to the DLQ, the rest is kept."""
        try:
            return remux_segment(seg.chunks, self.templates)
        except SegmentError as exc:
            logger.warning("remux failed camera=%s start=%d error=%s: isolating bad chunks", seg.camera_id,
                           seg.start_ms, exc)
        good_chunks, good_sources = [], []
        for chunk, src in zip(seg.chunks, seg.sources, strict=True):
            try:
                remux_segment([chunk], self.templates)
            except SegmentError as exc:
                self.dead_letter(chunk, src, "remux_failed", str(exc))
                continue
            good_chunks.append(chunk)
            good_sources.append(src)
        seg.chunks, seg.sources = good_chunks, good_sources
        if not seg.chunks:
            return None
        try:
            return remux_segment(seg.chunks, self.templates)
        except SegmentError as exc:  # each chunk alone is fine but together they are not
            for chunk, src in zip(seg.chunks, seg.sources, strict=True):
                self.dead_letter(chunk, src, "remux_failed", f"segment remux: {exc}")
            seg.chunks, seg.sources = [], []
            return None

    def _existing_manifest(self, key: str) -> _Existing | None:
        mkey = manifest_key(key)
        if self.store.stat_object(mkey) is None:
            return None
        body = self.store.get_object(mkey)
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None  # unreadable manifest: rewrite the pair
        return _Existing(doc, body) if isinstance(doc, dict) else None
