"""The console on the local stack (``make demo``): demo users with fresh passwords, a console
config next to the stack's, and ``veilstream console`` started as a managed process (stopped
by PID, like the rest of the stack)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import secrets
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from schemas.errors import VeilStreamError

from .access import ROLES
from .auth import hash_password

DEMO_USERS = {"ana": "analyst", "pia": "privacy-officer", "ivan": "investigator", "aud": "auditor", "sam": "sre"}


@dataclass
class LocalConsole:
    url: str
    users: dict[str, tuple[str, str]]  # username -> (role, password)
    process: Any
    config_path: Path

    def stop(self) -> bool:
        return bool(self.process.stop(10.0))


def write_console_config(config_path: Path, state_dir: Path, port: int) -> tuple[Path, dict[str, tuple[str, str]]]:
    """``<state>/console-config.yaml`` (the stack's config + a console block) and a users file
    with a random password per demo user (argon2 hashes only on disk)."""
    users = {u: (r, secrets.token_urlsafe(9)) for u, r in DEMO_USERS.items()}
    assert set(DEMO_USERS.values()) == set(ROLES)
    users_file = state_dir / "console-users.yaml"
    users_file.write_text(yaml.safe_dump({"users": [
        {"username": u, "password_hash": hash_password(pw), "roles": [r]} for u, (r, pw) in users.items()]}))
    secret = state_dir / "console-session-secret"
    secret.write_text(secrets.token_urlsafe(32))
    secret.chmod(0o600)
    raw = yaml.safe_load(config_path.read_text())
    raw["console"] = {"host": "127.0.0.1", "port": port, "users_file": str(users_file),
                      "session_secret_file": str(secret), "secure_cookies": False,  # plain http on loopback
                      "work_dir": str(state_dir / "console-jobs")}
    out = state_dir / "console-config.yaml"
    out.write_text("# written by make demo for `veilstream console`\n" + yaml.safe_dump(raw, sort_keys=False))
    return out, users


def start_local_console(config_path: Path, state_dir: Path, timeout_s: float = 60.0) -> LocalConsole:
    from pipeline.devstack import free_port, spawn, wait_until

    port = free_port()
    cfg_path, users = write_console_config(Path(config_path), Path(state_dir), port)
    proc = spawn("console", [sys.executable, "-m", "pipeline.cli", "console", "--config", str(cfg_path)],
                 Path(state_dir) / "logs" / "console.log", marker=str(cfg_path))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as r:  # noqa: S310 - loopback
            return bool(r.status == 200)

    if not wait_until(lambda: proc.alive() and up(), timeout_s, 0.2):
        tail = proc.log_tail(5)
        proc.stop(5.0)
        raise VeilStreamError(f"the console did not start within {timeout_s:.0f}s; log {proc.log_path}: {tail}")
    return LocalConsole(url, users, proc, cfg_path)


def signed_in_cameras(url: str, username: str, password: str) -> list[str]:
    """Sign in as a user (form + CSRF, as a browser does) and list the cameras it may see."""
    jar = http.cookiejar.CookieJar()
    op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = op.open(url + "/login", timeout=10).read().decode()
    tok = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if not tok:
        raise VeilStreamError("console sign-in page has no CSRF token")
    body = urllib.parse.urlencode({"username": username, "password": password, "csrf_token": tok[1]}).encode()
    op.open(url + "/login", data=body, timeout=30).read()
    cams = json.loads(op.open(url + "/api/cameras", timeout=30).read())
    return [c["camera_id"] for c in cams["cameras"]]


def serve_until_interrupted(console: LocalConsole, out: Any = print, seconds: float | None = None) -> None:
    """Keep the console up: until Ctrl-C on a terminal, else for ``seconds`` (default: not at all)."""
    if seconds is None:
        seconds = float("inf") if sys.stdin.isatty() else 0.0
    if seconds <= 0:
        return
    out(f"the console stays up at {console.url} " + ("until Ctrl-C" if seconds == float("inf") else
                                                       f"for {seconds:.0f}s") + " ...")
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and console.process.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
