"""The console's bridge to the evidence API of :mod:`pipeline.governance` (subject
export, case export, share links, legal hold, verify).

Each console user acts as themselves: the bridge hands the governance functions a copy of
the deployment's :class:`~pipeline.governance.context.Governance` whose ``actor`` is the
signed-in user, so the audit events those functions record (before anything leaves) name
the person, not the console. The functions are looked up by name, so a test can replace
one (``Services.governance``) and a build without one answers with one clear line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from schemas.errors import VeilStreamError


class NotAvailableError(VeilStreamError):
    """The governance function behind a console action is not in this build."""


SUBJECT_STAGES = ((0.15, "decrypting and decoding the raw vault"), (0.9, "finding and following the subject, "
                  "masking everyone else"), (1.0, "writing the video and its report"))
"""(up to this fraction, what the export is doing) of ``governance.export.subject_export``'s progress."""
CASE_STAGES = ((0.05, "reading the raw vault"), (1.0, "decrypting and writing the unmasked video"))


def _staged(progress: Callable[[float, str], None], stages: tuple[tuple[float, str], ...]) -> Callable[[float], None]:
    """The governance export's ``progress(fraction)`` as the job's ``progress(fraction, message)``."""

    def report(fraction: float) -> None:
        msg = next((m for upto, m in stages if fraction < upto), stages[-1][1])
        progress(fraction, msg)

    return report


class GovernanceBridge:
    """Keyword-only adapters with the console's argument names over the governance API."""

    def __init__(self, gov: Any) -> None:
        self.gov = gov

    def _as(self, actor: str) -> Any:
        return dataclasses.replace(self.gov, actor=actor)

    def subject_export(self, *, camera_id: str, from_ms: int, to_ms: int, box_xywh: tuple[float, ...], at_ms: int,
                       case: str, output: Path, actor: str, progress: Callable[[float, str], None]) -> dict[str, Any]:
        from pipeline.governance.export import SubjectBox, subject_export

        progress(0.01, "reading and decrypting the raw vault")
        x, y, w, h = box_xywh
        res = subject_export(self._as(actor), camera_id, from_ms, to_ms, SubjectBox(x, y, w, h, at_ms=at_ms),
                             case_id=case, output=Path(output), report_path=Path(output).with_suffix(".report.json"),
                             progress=_staged(progress, SUBJECT_STAGES))
        return dict(res.report)

    def case_export(self, *, camera_id: str, from_ms: int, to_ms: int, case: str, legal_basis: str, official: str,
                    output: Path, actor: str, progress: Callable[[float, str], None]) -> dict[str, Any]:
        from pipeline.governance.export import case_export

        progress(0.01, "reading and decrypting the raw vault")
        res = case_export(self._as(actor), camera_id, from_ms, to_ms, case_id=case, legal_basis=legal_basis,
                          official=official, output=Path(output), progress=_staged(progress, CASE_STAGES))
        return dict(res.report)

    def legal_hold(self, *, action: str, camera_id: str, from_ms: int, to_ms: int, case: str,
                   actor: str, role: str) -> dict[str, Any]:
        """``role``: the signed-in user's role that acts (recorded on the case's hold; only
        that role lifts it, see ``governance.holds.may_lift``)."""
        from pipeline.governance.holds import hold

        res = hold(self._as(actor), camera_id, from_ms, to_ms, case_id=case, enable=action == "add", role=role)
        return {"held": res.enabled, "objects": len(res.keys), "keys": res.keys, "event_id": res.event_id,
                "role": res.role, "released": len(res.released), "still_held": res.still_held,
                "not_held_by_case": len(res.not_held)}

    def verify_day(self, *, camera_id: str, date: str, actor: str) -> dict[str, Any]:
        from pipeline.governance.verify import verify

        rep = verify(self._as(actor), camera_id, date)
        d = rep.to_dict() if hasattr(rep, "to_dict") else dict(vars(rep))
        d["ok"] = bool(rep.ok)
        d.setdefault("findings", [f.line() if hasattr(f, "line") else str(f) for f in getattr(rep, "findings", ())])
        return d

    def share(self, *, key: str, ttl_s: int, case: str, actor: str) -> dict[str, Any]:
        from pipeline.governance.shares import share
        from pipeline.governance.timeparse import iso

        link = share(self._as(actor), key, ttl_s=ttl_s, case_id=case)
        return {"url": link.url, "key": link.key, "case": link.case_id, "expires_at": iso(link.expires_at_ms),
                "event_id": link.event_id}

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {"subject_export": self.subject_export, "case_export": self.case_export,
                "legal_hold": self.legal_hold, "verify_day": self.verify_day, "share": self.share}


def lookup(functions: Mapping[str, Callable[..., Any]], name: str, what: str) -> Callable[..., Any]:
    fn = functions.get(name)
    if fn is None:
        raise NotAvailableError(f"{what} is not available: this console runs without the governance API "
                                "(pipeline.governance) configured")
    return fn
