"""The per-camera, per-day hash chain of segment manifests, and its verification (pure).

Every manifest the sink writes carries ``chain = {seq, prev_key, prev_sha256}``: the
sha256 of the previous manifest of the same camera and day (``None`` for the first).
After each manifest the sink writes one immutable *chain record* to the WORM audit
bucket, ``chains/camera=<id>/date=<D>/<seq>.json`` = ``{seq, key, manifest_sha256}``;
the highest seq is the day's chain head. Nobody who can rewrite the segment bucket can
also rewrite those records (object lock, a different bucket, a different role).

:func:`verify_day` compares the bucket with the records and the chain and names each
finding by kind:

* ``altered``  a segment whose bytes no longer match its manifest's sha256, or a manifest
  whose bytes no longer hash to what the chain recorded (same key, same seq, edited);
* ``replaced`` an object swapped for a different, self-consistent one (a manifest that
  is not the one the chain recorded for that key, or a segment holding another
  segment's bytes);
* ``removed``  a recorded manifest or its segment missing;
* ``inserted`` a manifest or segment under the camera-day that the chain never recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.objectkeys import key_component

CHAIN_PREFIX = "chains/"


def chain_prefix(camera_id: str, day: str) -> str:
    return f"{CHAIN_PREFIX}camera={key_component(camera_id)}/date={day}/"


def chain_record_key(camera_id: str, day: str, seq: int) -> str:
    return f"{chain_prefix(camera_id, day)}{int(seq):08d}.json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    seq: int
    key: str
    manifest_sha256: str

    def link(self) -> dict[str, Any]:
        """The ``chain`` field of the next manifest."""
        return {"seq": self.seq + 1, "prev_key": self.key, "prev_sha256": self.manifest_sha256}


def first_link() -> dict[str, Any]:
    return {"seq": 1, "prev_key": None, "prev_sha256": None}


def chain_record(camera_id: str, day: str, seq: int, key: str, manifest_sha: str, at_ms: int) -> bytes:
    return json.dumps({"camera_id": camera_id, "date": day, "seq": seq, "key": key, "manifest_sha256": manifest_sha,
                       "recorded_at_ms": at_ms}, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass
class Finding:
    kind: str  # altered | replaced | removed | inserted | broken
    key: str
    detail: str

    def line(self) -> str:
        return f"{self.kind.upper()}: {self.key}: {self.detail}"


@dataclass
class VerifyReport:
    camera_id: str
    day: str
    records: int = 0
    manifests: int = 0
    segments_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings and self.records > 0

    def to_dict(self) -> dict[str, Any]:
        return {"camera_id": self.camera_id, "date": self.day, "ok": self.ok, "chain_records": self.records,
                "manifests": self.manifests, "segments_checked": self.segments_checked,
                "findings": [{"kind": f.kind, "key": f.key, "detail": f.detail} for f in self.findings]}


def verify_day(camera_id: str, day: str, records: Iterable[Mapping[str, Any]], objects: Mapping[str, bytes],
               older_versions: Callable[[str], list[bytes]] = lambda _k: []) -> VerifyReport:
    """Check one camera-day.

    Args:
        records: the chain records from the audit bucket (any order).
        objects: every current object under the camera-day's segment prefix, key -> bytes
            (``.mp4`` segments and ``.json`` manifests).
        older_versions: bytes of a key's noncurrent versions (a replay that rewrote a fuller
            segment under the same key supersedes the earlier manifest; object lock keeps
            the old version, so the chain still resolves).
    """
    rep = VerifyReport(camera_id, day)
    recs = sorted(records, key=lambda r: int(r["seq"]))
    rep.records = len(recs)
    manifests = {k: v for k, v in objects.items() if k.endswith(".json")}
    segments = {k: v for k, v in objects.items() if k.endswith(".mp4")}
    rep.manifests = len(manifests)
    seg_sha = {k: sha256_hex(v) for k, v in segments.items()}
    recorded_shas = {str(r["manifest_sha256"]) for r in recs}
    last_for_key = {str(r["key"]): int(r["seq"]) for r in recs}  # a key's newest record wins
    expected_seq = 1
    prev_sha: str | None = None
    for r in recs:
        seq, mkey, msha = int(r["seq"]), str(r["key"]), str(r["manifest_sha256"])
        if seq != expected_seq:
            rep.findings.append(Finding("removed", chain_record_key(camera_id, day, expected_seq),
                                        f"chain records {expected_seq}..{seq - 1} are missing from the audit bucket"))
        expected_seq = seq + 1
        current = manifests.get(mkey)
        body: bytes | None = None
        if current is not None and sha256_hex(current) == msha:
            body = current
        elif last_for_key[mkey] != seq:  # superseded by a later record of the same key (replay)
            prev_sha = msha
            continue
        elif current is None:
            rep.findings.append(Finding("removed", mkey, f"manifest of chain seq {seq} is missing"))
            if mkey[:-5] + ".mp4" not in segments:
                rep.findings.append(Finding("removed", mkey[:-5] + ".mp4", f"segment of chain seq {seq} is missing"))
            prev_sha = msha
            continue
        else:
            got = _json(current)
            same_seq = isinstance(got, dict) and (got.get("chain") or {}).get("seq") == seq
            if same_seq:
                rep.findings.append(Finding("altered", mkey, f"manifest edited: sha256 {sha256_hex(current)[:16]} "
                                                             f"but the chain recorded {msha[:16]} at seq {seq}"))
            else:
                rep.findings.append(Finding("replaced", mkey, f"manifest replaced by one the chain never recorded "
                                                              f"(expected sha256 {msha[:16]} at seq {seq})"))
            if mkey[:-5] + ".mp4" not in segments:
                rep.findings.append(Finding("removed", mkey[:-5] + ".mp4", f"segment of chain seq {seq} is missing"))
            prev_sha = msha
            continue
        man = _json(body)
        link = man.get("chain") or {} if isinstance(man, dict) else {}
        if link.get("prev_sha256") != prev_sha:
            rep.findings.append(Finding("altered", mkey, f"chain broken at seq {seq}: prev_sha256 "
                                                         f"{str(link.get('prev_sha256'))[:16]} != {str(prev_sha)[:16]}"))
        prev_sha = msha
        if body is not current:
            continue  # a superseded version: its segment was rewritten with it
        skey = str(man.get("key") or mkey[:-5] + ".mp4")
        want = str(man.get("sha256"))
        rep.segments_checked += 1
        if skey not in seg_sha:
            rep.findings.append(Finding("removed", skey, f"segment of chain seq {seq} is missing"))
        elif seg_sha[skey] != want:
            others = [k for k, m in manifests.items() if k != mkey and isinstance(_json(m), dict)
                      and _json(m).get("sha256") == seg_sha[skey]]
            if others:
                rep.findings.append(Finding("replaced", skey, f"segment bytes replaced by those of {others[0]}"))
            else:
                rep.findings.append(Finding("altered", skey, f"segment sha256 {seg_sha[skey][:16]} != manifest "
                                                             f"{want[:16]}"))
    for mkey, body in sorted(manifests.items()):
        if sha256_hex(body) not in recorded_shas and mkey not in last_for_key:
            rep.findings.append(Finding("inserted", mkey, "manifest not in the camera-day's chain"))
    recorded_segments = {k[:-5] + ".mp4" for k in last_for_key}
    for skey in sorted(segments):
        if skey not in recorded_segments:
            rep.findings.append(Finding("inserted", skey, "segment not in the camera-day's chain"))
    return rep


def _json(b: bytes) -> Any:
    try:
        return json.loads(b)
    except (ValueError, UnicodeDecodeError):
        return None
