"""The governance API's pure parts: times, durations, subject boxes, share links, audit retention."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.governance.audit import AuditLog
from pipeline.governance.context import AccessError
from pipeline.governance.export import SubjectBox, parse_subject
from pipeline.governance.rules import audit_retention
from pipeline.governance.shares import open_share, share_expiry_ms
from pipeline.governance.timeparse import parse_duration, parse_time
from schemas.errors import InputError
from schemas.policy import parse_policy
from tests.fakes import InMemoryObjectStore


@pytest.mark.parametrize(("text", "ms"), [
    ("1795378500000", 1795378500000),
    ("2026-11-22T20:15:00Z", 1795378500000),
    ("2026-11-23T05:15:00+09:00", 1795378500000),
    ("2026-11-22T20:15:00", 1795378500000),  # no zone = UTC
])
def test_times(text: str, ms: int) -> None:
    assert parse_time(text) == ms


@pytest.mark.parametrize("bad", ["", "yesterday", "2026-13-01T00:00:00Z"])
def test_bad_times_say_what_is_expected(bad: str) -> None:
    with pytest.raises(InputError, match="ISO 8601"):
        parse_time(bad)


@pytest.mark.parametrize(("text", "s"), [("15m", 900), ("1h", 3600), ("90s", 90), ("90", 90), ("2d", 172800)])
def test_durations(text: str, s: int) -> None:
    assert parse_duration(text) == s


@pytest.mark.parametrize("bad", ["", "0m", "-5m", "15x", "m"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(InputError, match="positive number"):
        parse_duration(bad)


def test_subject_specs() -> None:
    assert parse_subject("10,20,30,40@2026-11-22T20:15:00Z") == SubjectBox(10, 20, 30, 40, at_ms=1795378500000)
    assert parse_subject("10,20,30,40@12", time_ok=False) == SubjectBox(10, 20, 30, 40, frame=12)
    assert parse_subject("10,20,30,40") == SubjectBox(10, 20, 30, 40)
    with pytest.raises(InputError, match="X,Y,W,H"):
        parse_subject("10,20,30")


@pytest.mark.parametrize(("box", "ok"), [
    ((0, 0, 176, 144), True),            # the whole frame, touching every border
    ((170, 0, 6, 10), True),
    ((170, 0, 7, 10), False),            # one pixel past the right border
    ((-1, 0, 10, 10), False),
    ((5, 5, 0, 10), False),              # zero area
])
def test_subject_box_must_lie_in_the_frame(box: tuple[int, int, int, int], ok: bool) -> None:
    b = SubjectBox(*box)
    if ok:
        b.check_inside(176, 144)
    else:
        with pytest.raises(InputError):
            b.check_inside(176, 144)


def test_share_link_expiry_is_read_from_the_signature(tmp_path: Path) -> None:
    url = ("http://127.0.0.1:9/veil/camera=c/x.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261122T201500Z"
           "&X-Amz-Expires=900&X-Amz-Signature=ab")
    assert share_expiry_ms(url) == 1795378500000 + 900_000
    with pytest.raises(AccessError, match="share link expired at 2026-11-22T20:30:00Z"):
        open_share(url, tmp_path / "x.mp4", now_ms=1795378500000 + 900_000)
    with pytest.raises(InputError, match="not a VeilStream share link"):
        share_expiry_ms("http://example/x.mp4")


def test_audit_events_are_kept_as_long_as_the_longest_footage() -> None:
    now = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    short = parse_policy({"policy_id": "a", "retention": {"redacted_days": 30}})
    long = parse_policy({"policy_id": "b", "retention": {"redacted_days": 800, "raw_days": 10, "mode": "COMPLIANCE"}})
    assert audit_retention([short], now) == ("GOVERNANCE", now + dt.timedelta(days=365))
    assert audit_retention([short, long], now) == ("COMPLIANCE", now + dt.timedelta(days=800))


def test_an_action_without_a_durable_record_is_refused() -> None:
    store = InMemoryObjectStore(fail_puts=1)
    log = AuditLog(store)
    with pytest.raises(ConnectionError):
        log.record("share", "kim", case_id="C-1", object_keys=["k"])
    ev = log.record("share", "kim", case_id="C-1", object_keys=["k"])
    assert store.get_object(ev.key) == ev.to_json() and log.events()[0]["case_id"] == "C-1"
    with pytest.raises(ValueError, match="unknown audit action"):
        log.record("peek", "kim")


def test_an_interval_too_long_for_memory_is_refused_with_what_fits() -> None:
    from pipeline.governance.clips import MAX_EXPORT_BYTES, too_long

    frame = 1280 * 720 * 3
    fits = MAX_EXPORT_BYTES // frame
    assert too_long(fits, frame, 25.0, "interval") is None
    err = too_long(fits + 1, frame, 25.0, "interval")
    assert err is not None and f"at most {fits / 25:.0f}s" in str(err) and "in pieces" in str(err)
