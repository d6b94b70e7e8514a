"""Legal holds belong to cases (security review finding 1): lifting a hold for one case
never releases what another case holds, only the role that placed a case's hold lifts it,
and every change (and refusal) is an audit event carrying the case id.

The stores are the in-memory fakes plus a fake of the three legal-hold calls of the MinIO
client; the CLI path runs through ``pipeline.cli.main`` with ``Governance.from_config``
replaced by this fake deployment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.governance.audit import AuditLog
from pipeline.governance.context import AccessError, Governance
from pipeline.governance.holds import LEGACY_CASE, HoldRefusedError, hold, hold_cases, may_lift
from pipeline.objectkeys import manifest_key, segment_key
from tests.fakes import InMemoryObjectStore

# the console's env fixture (in-memory stores, users ivan = investigator, pia = privacy officer)
from tests.unit.test_console import NOW_MS, client, csrf, env  # noqa: F401

T0 = 1795378500000  # 2026-11-22T20:15:00Z
CAM = "cam-s"
CRIM = "CRIM-2026-1"


@dataclass
class FakeLockClient:
    """The MinIO client's legal-hold calls (and remove_object) on the fakes' objects."""

    store: InMemoryObjectStore
    held: set[str] = field(default_factory=set)

    def enable_object_legal_hold(self, bucket: str, key: str) -> None:
        assert bucket == self.store.bucket and key in self.store.objects
        self.held.add(key)

    def disable_object_legal_hold(self, bucket: str, key: str) -> None:
        assert bucket == self.store.bucket
        self.held.discard(key)

    def is_object_legal_hold_enabled(self, bucket: str, key: str) -> bool:
        return key in self.held

    def remove_object(self, bucket: str, key: str) -> None:
        assert bucket == self.store.bucket
        self.store.objects.pop(key, None)


@dataclass
class LockStore(InMemoryObjectStore):
    _client: FakeLockClient | None = None

    @property
    def client(self) -> FakeLockClient:
        if self._client is None:
            self._client = FakeLockClient(self)
        return self._client


@dataclass
class Cam:
    camera_id: str = CAM
    policy_id: str = "default"


def deployment(actor: str = "officer", cam: str = CAM, t0: int = T0) -> Governance:
    """One camera with 11 stored objects in the interval (6 segments + 5 manifests)."""
    red = LockStore(bucket="red")
    for i in range(6):
        k = segment_key(cam, t0 + i * 2000, t0 + (i + 1) * 2000)
        red.put_object(k, b"mp4", "video/mp4", {}, {})
        if i < 5:
            red.put_object(manifest_key(k), b"{}", "application/json", {}, {})
    audit = LockStore(bucket="audit")
    gov = Governance(cfg=None, store=red, audit_store=audit, raw_store=LockStore(bucket="raw"),
                     audit=AuditLog(audit), actor=actor, registry=lambda: {cam: Cam(cam)})
    return gov


def held(gov: Governance) -> set[str]:
    return set(gov.store.client.held)


def events(gov: Governance) -> list[dict[str, Any]]:
    """Recorded events in the order they were written (two may share a millisecond)."""
    return [json.loads(gov.audit_store.get_object(k)) for k in gov.audit_store.puts if k.startswith("events/")]


def lift(gov: Governance, case: str, role: str, t0: int = T0, t1: int = T0 + 12_000) -> Any:
    return hold(gov, CAM, t0, t1, case_id=case, enable=False, role=role)


def place(gov: Governance, case: str, role: str, t0: int = T0, t1: int = T0 + 12_000) -> Any:
    return hold(gov, CAM, t0, t1, case_id=case, enable=True, role=role)


def test_lifting_an_unrelated_case_releases_nothing() -> None:
    gov = deployment()
    res = place(gov, CRIM, "investigator")
    assert len(res.keys) == 11 and len(held(gov)) == 11
    with pytest.raises(AccessError, match=f"case 'SR-7' holds none of the 11 object.*held for case.*{CRIM}"):
        lift(gov, "SR-7", "privacy-officer")
    assert len(held(gov)) == 11  # the investigator's evidence stays held
    assert all(set(hold_cases(gov, gov.store, k)) == {CRIM} for k in held(gov))
    assert [e["action"] for e in events(gov)] == ["hold_add"]  # nothing changed: no lift recorded


def test_an_object_held_by_two_cases_stays_held_until_both_lift() -> None:
    gov = deployment()
    place(gov, CRIM, "investigator")  # all 11
    place(gov, "CRIM-2026-2", "investigator", T0, T0 + 3_000)  # the first two segments and manifests
    both = {k for k in held(gov) if len(hold_cases(gov, gov.store, k)) == 2}
    assert len(both) == 4
    res = lift(gov, CRIM, "investigator")
    assert len(res.released) == 7 and sorted(res.still_held) == sorted(f"red/{k}" for k in both)
    assert all(v == ["CRIM-2026-2"] for v in res.still_held.values())
    assert held(gov) == both
    res = lift(gov, "CRIM-2026-2", "investigator", T0, T0 + 3_000)
    assert len(res.released) == 4 and not res.still_held and not held(gov)
    # a case lifted twice: nothing of it is left, nothing else is touched
    with pytest.raises(AccessError, match="holds none"):
        lift(gov, CRIM, "investigator")


def test_partial_overlap_leaves_what_the_case_does_not_hold_and_says_so() -> None:
    gov = deployment()
    place(gov, "SR-7", "privacy-officer", T0, T0 + 3_000)
    place(gov, CRIM, "investigator", T0 + 6_500, T0 + 12_000)
    res = lift(gov, "SR-7", "privacy-officer")  # the whole interval, but SR-7 holds only its start
    assert len(res.released) == 4 and len(res.not_held) == 7
    # of the 7 left as they were, CRIM's 5 stay held and 2 were never held
    assert len(held(gov)) == 5 and all(set(hold_cases(gov, gov.store, k)) == {CRIM} for k in held(gov))
    ev = events(gov)[-1]
    assert ev["action"] == "hold_remove" and ev["case_id"] == "SR-7" and len(ev["details"]["not_held_by_case"]) == 7


@pytest.mark.parametrize("placed_by, lifter", [("investigator", "privacy-officer"),
                                               ("privacy-officer", "investigator")])
def test_a_role_that_did_not_place_the_hold_may_not_lift_it(placed_by: str, lifter: str) -> None:
    gov = deployment()
    place(gov, CRIM, placed_by)
    with pytest.raises(HoldRefusedError, match=f"placed by role {placed_by}; role '{lifter}' may not lift"):
        lift(gov, CRIM, lifter)
    assert len(held(gov)) == 11
    ev = events(gov)[-1]
    assert ev["action"] == "hold_refused" and ev["case_id"] == CRIM and ev["details"]["placed_by"] == [placed_by]
    assert ev["details"]["role"] == lifter and len(ev["object_keys"]) == 11
    assert len(lift(gov, CRIM, placed_by).released) == 11  # the placing role (any of its members) lifts it


def test_re_placing_a_case_hold_under_another_role_cannot_take_it_over() -> None:
    gov = deployment()
    place(gov, CRIM, "investigator", T0, T0 + 3_000)
    with pytest.raises(HoldRefusedError, match="may not take its hold over"):
        place(gov, CRIM, "privacy-officer")  # would hand the lift to the privacy officer
    assert len(held(gov)) == 4
    assert all(hold_cases(gov, gov.store, k)[CRIM]["role"] == "investigator" for k in held(gov))
    with pytest.raises(HoldRefusedError):
        lift(gov, CRIM, "privacy-officer")
    assert events(gov)[-2]["action"] == "hold_refused" and len(held(gov)) == 4
    place(gov, CRIM, "investigator")  # the same role extends its case's hold; the old records stay
    assert len(held(gov)) == 11


@pytest.mark.parametrize("role", ["analyst", "auditor", "sre", ""])
def test_roles_outside_the_hold_roles_may_neither_place_nor_lift(role: str) -> None:
    gov = deployment()
    with pytest.raises(HoldRefusedError, match="may not place or lift"):
        place(gov, CRIM, role)
    assert not held(gov)
    place(gov, CRIM, "investigator")
    with pytest.raises(HoldRefusedError):
        lift(gov, CRIM, role)
    assert len(held(gov)) == 11
    assert not may_lift(role, role) and may_lift("investigator", "investigator")


def test_every_change_is_audited_with_its_case_and_role() -> None:
    gov = deployment(actor="det.park")
    place(gov, CRIM, "investigator")
    gov.actor = "officer.kim"
    place(gov, "SR-7", "privacy-officer", T0, T0 + 3_000)
    lift(gov, "SR-7", "privacy-officer", T0, T0 + 3_000)
    evs = events(gov)
    assert [(e["action"], e["case_id"], e["actor"], e["details"]["role"]) for e in evs] == [
        ("hold_add", CRIM, "det.park", "investigator"),
        ("hold_add", "SR-7", "officer.kim", "privacy-officer"),
        ("hold_remove", "SR-7", "officer.kim", "privacy-officer")]
    assert len(evs[0]["object_keys"]) == 11 and len(evs[1]["details"]["also_held_for"]) == 4
    assert evs[2]["details"]["released"] == [] and len(evs[2]["details"]["still_held_for"]) == 4
    # the hold record of a case names who placed it, with its event
    rec = hold_cases(gov, gov.store, next(iter(held(gov))))[CRIM]
    assert rec["role"] == "investigator" and rec["actor"] == "det.park" and rec["event_id"] == evs[0]["event_id"]


def test_a_hold_from_before_per_case_records_is_kept_and_only_its_legacy_case_lifts_it() -> None:
    gov = deployment()
    old = segment_key(CAM, T0, T0 + 2000)
    gov.store.client.enable_object_legal_hold("red", old)  # set by an older version: no case on record
    with pytest.raises(AccessError, match="holds none"):
        lift(gov, "SR-7", "privacy-officer")
    assert old in held(gov)
    place(gov, "SR-7", "privacy-officer")  # joining it files the old hold under LEGACY_CASE
    assert set(hold_cases(gov, gov.store, old)) == {"SR-7", LEGACY_CASE}
    lift(gov, "SR-7", "privacy-officer")
    assert held(gov) == {old}
    with pytest.raises(HoldRefusedError):
        lift(gov, LEGACY_CASE, "investigator")
    assert lift(gov, LEGACY_CASE, "privacy-officer").released == [f"red/{old}"] and not held(gov)


def test_cli_hold_names_the_case_and_role(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import pipeline.cliconfig as cliconfig
    from pipeline.cli import main

    gov = deployment()
    monkeypatch.setattr(cliconfig, "load_cli_config", lambda _args: None)  # the governance commands read it there
    monkeypatch.setattr(Governance, "from_config", classmethod(lambda cls, cfg, actor=None, **_k: gov))
    monkeypatch.delenv("VEILSTREAM_ROLE", raising=False)
    common = ["--camera", CAM, "--from", str(T0), "--to", str(T0 + 12_000)]
    assert main(["hold", "add", *common, "--case", CRIM]) == 2  # no role: refused before anything
    assert "--role is required" in capsys.readouterr().err and not held(gov)
    assert main(["hold", "add", *common, "--case", CRIM, "--role", "investigator"]) == 0
    assert "for case CRIM-2026-1 (role investigator)" in capsys.readouterr().out
    assert main(["hold", "remove", *common, "--case", "SR-7", "--role", "privacy-officer"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds none of the 11" in err[0] and "nothing lifted" in err[0]
    assert main(["hold", "remove", *common, "--case", CRIM, "--role", "privacy-officer"]) == 1
    assert "may not lift" in capsys.readouterr().err and len(held(gov)) == 11
    monkeypatch.setenv("VEILSTREAM_ROLE", "investigator")
    assert main(["hold", "remove", *common, "--case", CRIM]) == 0
    assert "11 released" in capsys.readouterr().out and not held(gov)
    assert [(e["action"], e["case_id"]) for e in events(gov)] == [
        ("hold_add", CRIM), ("hold_refused", CRIM), ("hold_remove", CRIM)]


def test_console_holds_act_as_the_users_role_and_refusals_are_403(env: Any) -> None:  # noqa: F811
    from pipeline.console.exports import GovernanceBridge

    t0 = NOW_MS - 200_000
    gov = deployment(cam="cam-001", t0=t0)
    env.svc.governance["legal_hold"] = GovernanceBridge(gov).legal_hold
    body = {"camera_id": "cam-001", "from": t0, "to": t0 + 12_000, "case": CRIM}
    ivan, pia = client(env, "ivan"), client(env, "pia")
    r = ivan.post("/api/holds", json={**body, "action": "add"}, headers=csrf(ivan))
    assert r.status_code == 200 and r.json()["role"] == "investigator" and len(held(gov)) == 11, r.text
    # the privacy officer: another case releases nothing; this case is not hers to lift
    r = pia.post("/api/holds", json={**body, "case": "SR-7", "action": "remove"}, headers=csrf(pia))
    assert r.status_code == 409 and "holds none" in r.json()["error"], r.text
    r = pia.post("/api/holds", json={**body, "action": "remove"}, headers=csrf(pia))
    assert r.status_code == 403 and "may not lift" in r.json()["error"], r.text
    r = pia.post("/api/holds", json={**body, "action": "remove", "role": "investigator"}, headers=csrf(pia))
    assert r.status_code == 403 and "not one of your roles" in r.json()["error"], r.text
    assert len(held(gov)) == 11
    r = ivan.post("/api/holds", json={**body, "action": "remove"}, headers=csrf(ivan))
    assert r.status_code == 200 and r.json()["released"] == 11 and not held(gov), r.text
    assert [(x["action"], x["actor"], x["case_id"]) for x in events(gov)] == [
        ("hold_add", "ivan", CRIM), ("hold_refused", "pia", CRIM), ("hold_remove", "ivan", CRIM)]
