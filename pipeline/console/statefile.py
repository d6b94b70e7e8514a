"""The console's small state files (``<work_dir>/links.json``, ``<work_dir>/sessions.json``) and
the users file it watches: one way to stamp, lock and write them.

- :meth:`StateFile.stamp` is the file's (modification time ns, size), ``None`` when it is
  not there: a reader re-reads the file only when the stamp changed (another process
  wrote it: ``veilstream console --revoke-link``, an edited users file).
- :meth:`StateFile.locked` holds an ``flock`` on ``.<name>.lock`` beside the file for a
  read-modify-write, so two processes on the console's host never lose each other's change.
- :meth:`StateFile.write` replaces the file atomically (a temporary file of mode 0600, then
  ``os.replace``): a reader sees the old or the new content, never half of it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


class StateFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def read(self) -> str:
        """The file's text (``FileNotFoundError`` / ``OSError`` to the caller)."""
        return self.path.read_text(encoding="utf-8")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive ``flock`` for the ``with`` block (the lock file is created, mode 0600)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def write(self, body: str) -> None:
        """Replace the file with ``body`` atomically, mode 0600 (``OSError`` to the caller)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.replace(tmp, self.path)
