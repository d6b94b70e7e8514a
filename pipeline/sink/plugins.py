"""The sink's plug-in interface: what a :class:`~pipeline.sink.writer.SegmentWriter` tells the
code that governs what it stores (hash chain, retention, camera notice, audit).

The sink's data path (``pipeline.sink``) knows nothing of governance: the deployment's edge
(``pipeline.sinkapp``) builds the plug-ins (``pipeline.governance.segmentplugins``) and hands
them to the sink. Governance sees the sink only through this module.

For each segment the writer calls every plug-in, in the order given, at these points::

    retention(ref)            before the first PUT: object-lock retention of the segment's
                              objects (the first plug-in that names one sets it)
    PUT mp4
    manifest_fields(ref)      fields added to the manifest (a field name already there is an error)
    PUT manifest              ── the segment is durable ──
    after_durable(ref, ...)   e.g. the chain record; raising makes the sink retry the segment
                              (its offsets stay uncommitted until every hook has returned)
    already_stored(ref, ...)  instead of all of the above when a replay finds the segment stored

Offsets of a segment's chunks are finished only after the last hook returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.objectstore import RetentionSpec
from schemas.errors import VeilStreamError


class PluginError(VeilStreamError):
    """A plug-in broke the interface (e.g. a manifest field the writer already sets): not a
    fault of the segment's data, so the segment is retried, never dead-lettered."""


@dataclass(frozen=True)
class SegmentRef:
    """What a plug-in is told about the segment being stored.

    Attributes:
        camera_id: the segment's camera.
        key: the MP4's object key (``-p<chunk_seq>`` part included when it is one).
        manifest_key: the manifest's object key.
        day: UTC date of the window start, ``YYYY-MM-DD`` (the key's ``date=``).
        start_ms: window start, camera clock, ms since the epoch.
        end_ms: window end (exclusive).
        policy_id: the first chunk's policy (``""`` when the chunks carry none).
        retention: what the ``retention`` hooks decided (``None`` before and without one).
    """

    camera_id: str
    key: str
    manifest_key: str
    day: str
    start_ms: int
    end_ms: int
    policy_id: str
    retention: RetentionSpec | None = None


class SinkHandle(Protocol):
    """What a plug-in may use of the sink that runs it (given once, to :meth:`SegmentPlugin.attach`)."""

    @property
    def producer(self) -> Any:
        """The sink's Kafka producer (``ChunkProducer``-like), ``None`` while the sink is not running."""

    def count_error(self, kind: str) -> None:
        """Count one error in the sink's ``veil_sink_errors_total{kind=...}``."""


class SegmentPlugin(Protocol):
    """A hook set run for every stored segment. Every hook has a do-nothing default: a plug-in
    subclasses this protocol and overrides what it needs."""

    def attach(self, sink: SinkHandle) -> None:
        """Called once when the sink is built."""
        return None

    def retention(self, segment: SegmentRef) -> RetentionSpec | None:
        """Object-lock retention for the segment's objects (mp4, manifest, records), or ``None``."""
        return None

    def manifest_fields(self, segment: SegmentRef) -> Mapping[str, Any]:
        """Fields to add to the segment's manifest (after the mp4 is stored, before the manifest)."""
        return {}

    def after_durable(self, segment: SegmentRef, manifest: Mapping[str, Any], manifest_json: bytes) -> None:
        """The mp4 and the manifest (``manifest_json``, exactly the stored bytes) are durable.
        Raising makes the sink retry the segment; a replay then calls :meth:`already_stored`."""
        return None

    def already_stored(self, segment: SegmentRef, manifest_json: bytes) -> None:
        """A replay found the segment stored already (``manifest_json``: the stored manifest).
        Raising makes the sink retry the segment."""
        return None
