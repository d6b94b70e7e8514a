"""Server-side sign-in sessions: the signed cookie carries a session id, this store says
whether it is still good.

Sign-out deletes the record, so a copied or replayed cookie stops working at once (a
signed cookie alone is valid until it expires, whatever happened since). Each request also
looks the user up again (:meth:`pipeline.console.auth.LocalUsers.get`, which re-reads the
users file within ``reload_s``): a removed user's sessions end, a changed role applies.

Records are kept by the SHA-256 of the session id (the file never holds a usable id) and,
with ``console.work_dir`` set, written to ``<work_dir>/sessions.json`` (mode 0600, atomic
replace) on every sign-in and sign-out, so sessions survive a console restart as the signed
cookies did. Without a work_dir they live in memory: a restart signs everybody out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .statefile import StateFile

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionRecord:
    username: str
    roles: tuple[str, ...]  # as signed in (OIDC users keep these; local users are looked up again)
    via: str  # local | oidc
    created_at: float
    expires_at: float


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore:
    def __init__(self, path: str | os.PathLike[str] | None = None, max_age_s: float = 8 * 3600,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path else None
        self._file = StateFile(self.path) if self.path is not None else None
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._by_digest: dict[str, SessionRecord] = {}
        if self.path is not None:
            self._load()

    def create(self, username: str, roles: tuple[str, ...], via: str) -> str:
        """A new session; returns its id (for the signed cookie)."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._drop_expired(now)
            self._by_digest[_digest(sid)] = SessionRecord(username, tuple(roles), via, now, now + self.max_age_s)
            self._save()
        return sid

    def get(self, sid: str) -> SessionRecord | None:
        """The live session ``sid`` names, else ``None`` (unknown, signed out or expired)."""
        if not sid:
            return None
        with self._lock:
            rec = self._by_digest.get(_digest(sid))
        if rec is None or rec.expires_at <= self.clock():
            return None
        return rec

    def revoke(self, sid: str) -> bool:
        with self._lock:
            gone = self._by_digest.pop(_digest(sid), None) is not None
            if gone:
                self._save()
        return gone

    def revoke_user(self, username: str) -> int:
        """End every session of ``username``; returns how many."""
        with self._lock:
            ds = [d for d, r in self._by_digest.items() if r.username == username]
            for d in ds:
                del self._by_digest[d]
            if ds:
                self._save()
        return len(ds)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_digest)

    # ---------------------------------------------------------------- persistence
    def _drop_expired(self, now: float) -> None:
        for d in [d for d, r in self._by_digest.items() if r.expires_at <= now]:
            del self._by_digest[d]

    def _load(self) -> None:
        assert self._file is not None
        try:
            data = json.loads(self._file.read())
            recs = {str(d): SessionRecord(str(r["username"]), tuple(r["roles"]), str(r["via"]),
                                          float(r["created_at"]), float(r["expires_at"]))
                    for d, r in dict(data.get("sessions") or {}).items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # fail closed: an unreadable file signs everybody out, it never lets anybody in
            logger.error("console sessions unreadable path=%s error=%s: everybody signs in again", self.path, exc)
            return
        self._by_digest = recs
        self._drop_expired(self.clock())

    def _save(self) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps({"sessions": {d: asdict(r) for d, r in self._by_digest.items()}}))
        except OSError as exc:
            # the in-memory state is authoritative for this process; a restart would lose it
            logger.error("console sessions not saved path=%s error=%s", self.path, exc)
