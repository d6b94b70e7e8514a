"""The local S3-compatible server: moto in server mode, talked to with the ``minio`` client.

Started as ``<venv>/bin/moto_server -H 127.0.0.1 -p PORT`` (falls back to
``python -m moto.server`` when the script is missing). Ready when an HTTP GET on
``/moto-api/`` answers. Any access key / secret key is accepted (no IAM unless started
with ``INITIAL_NO_AUTH_ACTION_COUNT``). Known gaps (see DESIGN.md): object-lock PUTs need
``x-amz-checksum-sha256``, GET ``?retention`` is broken, lifecycle is never executed.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import DevStackError, ManagedProcess, free_port, spawn

__all__ = ["DEV_ACCESS_KEY", "DEV_SECRET_KEY", "S3Handle", "start_s3"]

# Local-only credentials for the throwaway test server (moto accepts any pair).
DEV_ACCESS_KEY = "veilstream-dev"
DEV_SECRET_KEY = "veilstream-dev-secret"


@dataclass
class S3Handle:
    """A running moto server we started."""

    process: ManagedProcess
    port: int
    access_key: str = DEV_ACCESS_KEY
    secret_key: str = DEV_SECRET_KEY
    region: str = "us-east-1"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def endpoint(self) -> str:
        """``host:port`` as the ``minio`` client wants it (``secure=False``)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Any:  # minio.Minio, imported lazily
        from minio import Minio

        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False,
                     region=self.region)

    def stop(self, timeout_s: float | None = None) -> bool:
        return self.process.stop(timeout_s)


def _argv(port: int) -> tuple[list[str], str]:
    script = Path(sys.executable).with_name("moto_server")
    if script.is_file():
        return [str(script), "-H", "127.0.0.1", "-p", str(port)], f"-p {port}"
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], f"-p {port}"


def start_s3(log_dir: str | os.PathLike[str], port: int | None = None, timeout_s: float = 30.0) -> S3Handle:
    """Start moto's server on 127.0.0.1 (a free port unless given) and wait until ready."""
    try:
        import moto  # noqa: F401
    except ImportError:
        raise DevStackError("the local S3 server needs moto: pip install 'moto[server]>=5.0'") from None
    port = port or free_port()
    argv, marker = _argv(port)
    env = dict(os.environ)
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    proc = spawn("s3", argv, Path(log_dir) / "s3.log", marker=marker, env=env)
    handle = S3Handle(proc, port)
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise DevStackError(f"S3 server exited during start; log {proc.log_path}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(f"{handle.url}/moto-api/", timeout=1.0) as r:  # noqa: S310 - loopback
                if r.status < 500:
                    return handle
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return handle
            last = str(exc)
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    handle.stop(2.0)
    raise DevStackError(f"S3 server on port {port} not ready after {timeout_s:.0f}s: {last}")
