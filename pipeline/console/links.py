"""The links the console hands out (a released export, a shared segment), so that each can
be revoked before it expires.

A link's URL carries a signed token naming a link id; the registry is the authority on it:
an id it does not know (never issued here, or its record is lost) is refused, a revoked one
is answered 410. Issue and revoke are recorded as audit events by the caller (``share`` and
``share_revoke``, before the link exists or stops working).

With ``console.work_dir`` set the registry is the file ``<work_dir>/links.json`` (mode
0600, atomic replace, an ``flock`` around each read-modify-write), so links survive a
console restart and ``veilstream console --revoke-link ID`` (another process, on the console's
host) revokes a link the running console then refuses: the console re-reads the file when
its modification time changes. Without a work_dir the registry is in memory.

Presigned S3 links made by ``veilstream share`` (the CLI) are not in here and cannot be
revoked by anyone before their expiry: the storage checks only their signature.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .statefile import StateFile

logger = logging.getLogger(__name__)

KEEP_AFTER_EXPIRY_S = 86400.0
"""An expired link's record is kept a day (its URL answers "expired", not "unknown")."""


@dataclass(frozen=True)
class Link:
    link_id: str
    kind: str  # export | segment
    target: str  # the job id (export) or the segment key (segment)
    camera_id: str
    case: str
    by: str  # who issued it
    role: str  # the role whose storage credentials serve it (segment)
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    revoked_by: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class LinkRegistry:
    def __init__(self, path: str | os.PathLike[str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path else None
        self._file = StateFile(self.path) if self.path is not None else None
        self.clock = clock
        self._lock = threading.Lock()
        self._links: dict[str, Link] = {}
        self._stamp: tuple[int, int] | None = None
        if self.path is not None:
            with self._lock:
                self._reload_if_changed()

    # ---------------------------------------------------------------- API
    def issue(self, kind: str, target: str, *, camera_id: str, case: str, by: str, ttl_s: float,
              role: str = "") -> Link:
        now = self.clock()
        link = Link(secrets.token_urlsafe(12), kind, target, camera_id, case, by, role, now, now + ttl_s)
        with self._edit() as links:
            links[link.link_id] = link
        return link

    def get(self, link_id: str) -> Link | None:
        """The link's record (expired ones a day longer), ``None`` when unknown."""
        with self._lock:
            self._reload_if_changed()
            return self._links.get(link_id)

    def revoke(self, link_id: str, by: str) -> Link | None:
        """Revoke ``link_id`` (idempotent: a revoked link keeps its first revocation)."""
        with self._edit() as links:
            link = links.get(link_id)
            if link is None:
                return None
            if link.revoked_at is None:
                link = links[link_id] = replace(link, revoked_at=self.clock(), revoked_by=by)
            return link

    def of_target(self, target: str) -> list[Link]:
        with self._lock:
            self._reload_if_changed()
            return sorted((lk for lk in self._links.values() if lk.target == target), key=lambda lk: lk.created_at)

    # ---------------------------------------------------------------- persistence
    def _reload_if_changed(self) -> None:
        if self._file is None:
            return
        stamp = self._file.stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is None:
            self._links = {}
            return
        try:
            data = json.loads(self._file.read())
            self._links = {str(k): Link(**v) for k, v in dict(data.get("links") or {}).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            # fail closed: links nobody can check are refused, none is let through
            logger.error("console links unreadable path=%s error=%s: every link is refused until it is fixed",
                         self.path, exc)
            self._links = {}

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Link]]:
        with self._lock, self._file.locked() if self._file is not None else contextlib.nullcontext():
            self._stamp = None  # under the file lock: always the file as it is now
            self._reload_if_changed()
            yield self._links
            now = self.clock()
            self._links = {k: v for k, v in self._links.items() if v.expires_at + KEEP_AFTER_EXPIRY_S > now}
            self._save()

    def _save(self) -> None:
        if self._file is None:
            return
        # an OSError here fails the issue/revoke: the caller answers 500
        self._file.write(json.dumps({"links": {k: v.as_json() for k, v in self._links.items()}}))
        self._stamp = self._file.stamp()


def revoke_from_cli(work_dir: str | os.PathLike[str] | None, link_id: str, actor: str,
                    record: Callable[..., Any]) -> Link:
    """``veilstream console --revoke-link ID``: record ``share_revoke`` (``record(action, **kw)``,
    the governance audit log), then revoke in the console's registry file.

    Raises:
        LookupError: no work_dir configured, or no such link; the message says which.
    """
    if not work_dir:
        raise LookupError("console.work_dir is not set: the console keeps its links in memory; revoke the link "
                          "in the console (the job page, or POST /api/links/ID/revoke)")
    reg = LinkRegistry(Path(work_dir) / "links.json")
    link = reg.get(link_id)
    if link is None:
        raise LookupError(f"no link {link_id[:40]!r} in {reg.path} (expired more than a day ago, or never issued "
                          "by this console)")
    if link.revoked_at is None:
        record("share_revoke", camera_id=link.camera_id or None, case_id=link.case or None,
               object_keys=[link.target] if link.kind == "segment" else [],
               details={"link": link.link_id, "kind": link.kind, "target": link.target, "issued_by": link.by,
                        "via": "cli"})
    out = reg.revoke(link_id, actor)
    assert out is not None
    return out
