"""What governance does to every segment the sink stores, as sink plug-ins
(:class:`pipeline.sink.plugins.SegmentPlugin`, run by the sink's ``SegmentWriter`` in this order):

* :class:`RetentionPlugin`: object-lock retention from the segment's policy (``retain_until``);
* :class:`ChainPlugin`: the manifest's ``chain`` link to the camera-day's previous manifest,
  and after the manifest is durable its WORM chain record in the audit bucket
  (:mod:`.chain`; a failed record makes the sink retry the segment, a replay that finds the
  segment stored writes a record that is missing);
* :class:`NoticePlugin`: the camera's notice (purpose, scope, contact) in the manifest;
* :class:`AuditPlugin`: a ``SegmentStored`` event (the manifest) on the audit topic, best effort.

:func:`sink_plugins` is the set a deployed sink runs; the edge (``pipeline.sinkapp``) wires it.
Governance sees the sink only through :mod:`pipeline.sink.plugins`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.objectstore import ObjectStore, RetentionSpec
from pipeline.sink.plugins import SegmentPlugin, SegmentRef, SinkHandle

from .chain import ChainHead, chain_prefix, chain_record, chain_record_key, first_link
from .rules import retain_until

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"


class RetentionPlugin(SegmentPlugin):
    """Object-lock retention of a segment's objects from its policy (``policies``: id -> Policy)."""

    def __init__(self, policies: Mapping[str, Any]) -> None:
        self.policies = dict(policies)
        self._unknown: set[str] = set()

    def retention(self, segment: SegmentRef) -> RetentionSpec | None:
        if not self.policies:
            return None
        pid = segment.policy_id
        pol = self.policies.get(pid)
        if pol is None:
            if pid not in self._unknown:  # stored anyway: losing footage is worse
                self._unknown.add(pid)
                logger.warning("segment policy unknown policy_id=%s camera=%s: stored without retention; add "
                               "%s.yaml to policies_dir", pid, segment.camera_id, pid or "<policy_id>")
            return None
        return RetentionSpec(pol.retention.mode, retain_until(pol))


class ChainPlugin(SegmentPlugin):
    """The per-camera, per-day hash chain of manifests (:mod:`.chain`).

    Args:
        audit_store: the WORM audit bucket for chain records; ``None`` keeps the chain in the
            manifests only (heads in memory, no records).
    """

    def __init__(self, audit_store: ObjectStore | None) -> None:
        self.audit_store = audit_store
        self.heads: dict[tuple[str, str], ChainHead] = {}

    def manifest_fields(self, segment: SegmentRef) -> Mapping[str, Any]:
        head = self._head(segment.camera_id, segment.day)
        return {"chain": head.link() if head is not None else first_link()}

    def after_durable(self, segment: SegmentRef, manifest: Mapping[str, Any], manifest_json: bytes) -> None:
        self._record(segment, int(manifest["chain"]["seq"]), manifest_json)

    def already_stored(self, segment: SegmentRef, manifest_json: bytes) -> None:
        """A replay found the segment stored: make sure its chain record is too (a crash
        between the manifest and the record would otherwise leave a gap)."""
        if self.audit_store is None:
            return
        try:
            seq = int((json.loads(manifest_json).get("chain") or {})["seq"])
        except (KeyError, TypeError, ValueError):
            return  # a manifest from before the chain existed
        if self.audit_store.stat_object(chain_record_key(segment.camera_id, segment.day, seq)) is None:
            self._head(segment.camera_id, segment.day)  # a restarted sink: the newest record first (see _record)
            self._record(segment, seq, manifest_json)

    def _head(self, camera_id: str, day: str) -> ChainHead | None:
        """The camera-day's last chain entry: in memory, else the audit bucket's newest record."""
        head = self.heads.get((camera_id, day))
        if head is None and self.audit_store is not None:
            keys = sorted(self.audit_store.list_objects(chain_prefix(camera_id, day)))
            if keys:
                rec = json.loads(self.audit_store.get_object(keys[-1]))
                head = ChainHead(int(rec["seq"]), str(rec["key"]), str(rec["manifest_sha256"]))
                self.heads[(camera_id, day)] = head
        return head

    def _record(self, segment: SegmentRef, seq: int, manifest_json: bytes) -> None:
        """Advance the head and write its WORM chain record (raises: the segment is retried).

        A record written late (a replay of a segment whose record failed, while later
        segments were chained) never moves the head back: the next manifest would fork the chain."""
        cam, day, mkey = segment.camera_id, segment.day, segment.manifest_key
        msha = hashlib.sha256(manifest_json).hexdigest()
        head = self.heads.get((cam, day))
        if head is None or seq >= head.seq:
            self.heads[(cam, day)] = ChainHead(seq, mkey, msha)
        if self.audit_store is not None:
            self.audit_store.put_object(chain_record_key(cam, day, seq),
                                        chain_record(cam, day, seq, mkey, msha, int(time.time() * 1000)),
                                        JSON_CONTENT_TYPE, {"camera": cam}, {"kind": "chain"},
                                        retention=segment.retention)


class NoticePlugin(SegmentPlugin):
    """The camera's notice in its manifests (``notices(camera_id) -> {purpose, scope, contact}``,
    e.g. :class:`.notice.RegistryNotices`; empty: no ``notice`` field)."""

    def __init__(self, notices: Callable[[str], Mapping[str, str]]) -> None:
        self.notices = notices

    def manifest_fields(self, segment: SegmentRef) -> Mapping[str, Any]:
        notice = self.notices(segment.camera_id)
        return {"notice": dict(notice)} if notice else {}


class AuditPlugin(SegmentPlugin):
    """A ``SegmentStored`` event (the manifest) on the audit topic: who can read what was
    stored, when, under which policy and models. Best effort after the objects are durable:
    a failed produce is logged and counted (``errors{kind="audit"}``), the segment stays
    stored. Produced on the sink's own producer (flushed before the sink commits)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sink: SinkHandle | None = None

    def attach(self, sink: SinkHandle) -> None:
        self.sink = sink

    def after_durable(self, segment: SegmentRef, manifest: Mapping[str, Any], manifest_json: bytes) -> None:
        sink = self.sink
        if sink is None or sink.producer is None:
            return
        from schemas import SCHEMA_VERSION
        from schemas.messages import HEADER_CONTENT_TYPE, HEADER_TYPE, HEADER_VERSION

        cam, key = segment.camera_id, segment.key
        headers = [(HEADER_TYPE, b"SegmentStored"), (HEADER_VERSION, str(SCHEMA_VERSION).encode("ascii")),
                   (HEADER_CONTENT_TYPE, b"application/json"), ("veil-object-key", key.encode("utf-8"))]

        def cb(d: Any) -> None:
            if d.error:
                sink.count_error("audit")
                logger.error("audit event failed camera=%s key=%s error=%s", cam, key, d.error)

        try:
            sink.producer.produce(self.topic, manifest_json, cam, headers, on_done=cb)
        except Exception as exc:  # noqa: BLE001 - never lose a stored segment over its audit line
            sink.count_error("audit")
            logger.error("audit event failed camera=%s key=%s error=%s", cam, key, exc)


def sink_plugins(config: Any, audit_store: ObjectStore | None, policies: Mapping[str, Any],
                 notices: Callable[[str], Mapping[str, str]] | None = None) -> list[SegmentPlugin]:
    """What a deployed sink runs for every segment, in order: retention, hash chain, notice, audit.

    Args:
        config: the ``PipelineConfig`` (``kafka.topics.audit``; the camera registry for notices).
        audit_store: the WORM audit bucket (``pipeline.objectstore.audit_store_for``).
        policies: id -> Policy (``policies_dir``); empty: no retention.
        notices: camera notices; default :class:`.notice.RegistryNotices` on the config.
    """
    if notices is None:
        from .notice import RegistryNotices

        notices = RegistryNotices(config)
    return [RetentionPlugin(policies), ChainPlugin(audit_store), NoticePlugin(notices),
            AuditPlugin(config.kafka.topics.audit)]
