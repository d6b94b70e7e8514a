"""Sign-in: local users (argon2-hashed passwords in a YAML file) and OpenID Connect.

Users file::

    users:
      - username: ana
        password_hash: "$argon2id$v=19$m=65536,t=3,p=4$..."   # veilstream console --hash-password
        roles: [analyst]

With OIDC (``console.oidc.issuer``), the city's identity provider signs users in
(authorization code flow with PKCE and nonce, through authlib); their roles come from the
ID token's ``roles_claim``. Only the console roles are kept from either source.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from schemas.errors import ConfigError

from .access import ROLES
from .statefile import StateFile

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class User:
    username: str
    roles: tuple[str, ...]
    password_hash: str = ""


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher

    return str(PasswordHasher().hash(password))


def _roles(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence):
        raise ConfigError(f"{where}.roles: expected a list of roles, got {type(value).__name__}")
    bad = [r for r in value if r not in ROLES]
    if bad:
        raise ConfigError(f"{where}.roles: unknown role(s) {', '.join(map(repr, bad))}; expected {', '.join(ROLES)}")
    return tuple(value)


def load_users(path: str | os.PathLike[str]) -> dict[str, User]:
    """Read the users file; every problem raises ``ConfigError`` naming the entry."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"console.users_file: {p} not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"console.users_file: {p}: {exc}") from None
    entries = (data or {}).get("users") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise ConfigError(f"console.users_file: {p}: expected 'users:' with a list of users")
    out: dict[str, User] = {}
    for i, e in enumerate(entries):
        where = f"{p}: users[{i}]"
        if not isinstance(e, Mapping) or not e.get("username") or not e.get("password_hash"):
            raise ConfigError(f"{where}: expected username, password_hash and roles")
        h = str(e["password_hash"])
        if not h.startswith("$argon2"):
            raise ConfigError(f"{where}.password_hash: expected an argon2 hash "
                              "(make one with `veilstream console --hash-password`), never a plain password")
        out[str(e["username"])] = User(str(e["username"]), _roles(e.get("roles", ()), where), h)
    return out


class LocalUsers:
    """The users file's users. With ``path``, the file is looked at again at most every
    ``reload_s`` seconds (its mtime and size) and re-read when it changed, so removing a user
    or changing their roles applies to sessions already open (see :mod:`.sessions`) within
    ``reload_s``, without a restart. A changed file that does not load keeps the users last
    read and logs the error (the console does not stop serving over a typo)."""

    def __init__(self, users: Mapping[str, User], *, path: str | os.PathLike[str] | None = None,
                 reload_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        from argon2 import PasswordHasher

        self.users = dict(users)
        self.path = Path(path) if path else None
        self._file = StateFile(self.path) if self.path is not None else None
        self.reload_s = reload_s
        self.clock = clock
        self._checked = clock()
        self._stamp = self._file_stamp()
        self._lock = threading.Lock()
        self._ph = PasswordHasher()
        # verify against a dummy hash for unknown names: the same time for both failures
        self._dummy = self._ph.hash(secrets.token_hex(8))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], reload_s: float = 30.0) -> LocalUsers:
        return cls(load_users(path), path=path, reload_s=reload_s)

    def _file_stamp(self) -> tuple[int, int] | None:
        return self._file.stamp() if self._file is not None else None

    def _maybe_reload(self) -> None:
        if self.path is None:
            return
        with self._lock:
            now = self.clock()
            if now - self._checked < self.reload_s:
                return
            self._checked = now
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                users = load_users(self.path)
            except ConfigError as exc:
                logger.error("users file not reloaded (the users read before stay) error=%s", exc)
                return
            gone = sorted(set(self.users) - set(users))
            changed = sorted(u for u in users if u in self.users and users[u].roles != self.users[u].roles)
            self.users = users
            logger.info("users file reloaded path=%s users=%d removed=%s roles_changed=%s", self.path, len(users),
                        ",".join(gone) or "-", ",".join(changed) or "-")

    def get(self, username: str) -> User | None:
        """The user as the users file says now (within ``reload_s``), ``None`` when not (any longer) there."""
        self._maybe_reload()
        return self.users.get(username)

    def authenticate(self, username: str, password: str) -> User | None:
        from argon2.exceptions import Argon2Error, InvalidHashError

        user = self.get(username)
        try:
            self._ph.verify(user.password_hash if user else self._dummy, password)
        except (Argon2Error, InvalidHashError):
            return None
        return user


def oidc_user(claims: Mapping[str, Any], roles_claim: str, username_claim: str) -> User | None:
    """A console user from ID-token claims (``None`` when it carries no console role)."""
    raw = claims.get(roles_claim) or []
    if isinstance(raw, str):
        raw = raw.replace(",", " ").split()
    roles = tuple(r for r in raw if r in ROLES)
    name = str(claims.get(username_claim) or claims.get("email") or claims.get("sub") or "")
    if not name or not roles:
        return None
    return User(name, roles)


def read_secret(file: str | None, env: str | None) -> str | None:
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {file}: {exc.strerror}") from None
    return os.environ.get(env) if env else None


def build_oauth(oidc: Any) -> Any:
    """An authlib OAuth registry with the ``city`` OpenID Connect client, or ``None``."""
    if not oidc.issuer:
        return None
    if not oidc.client_id:
        raise ConfigError("console.oidc.client_id is required when console.oidc.issuer is set")
    from authlib.integrations.starlette_client import OAuth

    secret = read_secret(oidc.client_secret_file, oidc.client_secret_env)
    oauth = OAuth()
    oauth.register(
        "city", client_id=oidc.client_id, client_secret=secret,
        server_metadata_url=oidc.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": oidc.scope, "code_challenge_method": "S256"})
    return oauth
