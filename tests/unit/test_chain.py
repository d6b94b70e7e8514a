"""Manifest hash chain verification (pure): each kind of tampering is named."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline.governance.chain import first_link, verify_day

P = "camera=c1/date=2026-11-23/hour=10/"


def _day(n: int = 3) -> tuple[list[dict], dict[str, bytes]]:
    objects: dict[str, bytes] = {}
    records = []
    link = first_link()
    for i in range(n):
        key = f"{P}s{i}.mp4"
        mp4 = f"segment {i}".encode()
        man = json.dumps({"key": key, "sha256": hashlib.sha256(mp4).hexdigest(), "chain": link},
                         sort_keys=True).encode()
        objects[key], objects[key[:-4] + ".json"] = mp4, man
        msha = hashlib.sha256(man).hexdigest()
        records.append({"seq": link["seq"], "key": key[:-4] + ".json", "manifest_sha256": msha})
        link = {"seq": link["seq"] + 1, "prev_key": key[:-4] + ".json", "prev_sha256": msha}
    return records, objects


def test_an_untouched_day_verifies() -> None:
    recs, objs = _day()
    rep = verify_day("c1", "2026-11-23", recs, objs)
    assert rep.ok and rep.segments_checked == 3, rep.findings


def test_no_records_is_not_ok() -> None:
    assert not verify_day("c1", "2026-11-23", [], {}).ok


@pytest.mark.parametrize(("tamper", "kind", "key"), [
    (lambda o: o.__setitem__(f"{P}s1.mp4", b"edited"), "altered", f"{P}s1.mp4"),
    (lambda o: o.__setitem__(f"{P}s1.mp4", o[f"{P}s2.mp4"]), "replaced", f"{P}s1.mp4"),
    (lambda o: o.pop(f"{P}s1.mp4"), "removed", f"{P}s1.mp4"),
    (lambda o: (o.pop(f"{P}s1.mp4"), o.pop(f"{P}s1.json")), "removed", f"{P}s1.json"),
    (lambda o: o.__setitem__(f"{P}s1.json", o[f"{P}s1.json"].replace(b'"seq": 2', b'"seq": 2, "x": 1')),
     "altered", f"{P}s1.json"),
    (lambda o: o.__setitem__(f"{P}s1.json", json.dumps({"key": f"{P}s1.mp4", "sha256": "0"}).encode()),
     "replaced", f"{P}s1.json"),
    (lambda o: o.update({f"{P}x.mp4": b"fake", f"{P}x.json": b"{}"}), "inserted", f"{P}x.json"),
])
def test_each_tampering_is_named(tamper, kind: str, key: str) -> None:
    recs, objs = _day()
    tamper(objs)
    rep = verify_day("c1", "2026-11-23", recs, objs)
    assert not rep.ok
    assert (kind, key) in {(f.kind, f.key) for f in rep.findings}, [f.line() for f in rep.findings]
