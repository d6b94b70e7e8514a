"""The local stack on 127.0.0.1 free ports: Kafka-protocol broker (tansu), S3 server
(moto), Ray head. For tests, the demo and ``veilstream up`` / ``down``.

Every process is started in its own session (process group = its pid) with output to
a log file, and stopped *by pid*: before any signal, ``/proc/<pid>/cmdline`` must still
contain the marker of the command we started (a recycled pid is never killed), then
the whole group and any descendants get SIGTERM, then SIGKILL after a grace period.
Nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import VeilStreamError

__all__ = [
    "DevStackError",
    "ManagedProcess",
    "cmdline",
    "free_port",
    "pid_alive",
    "spawn",
    "stop_pid",
    "wait_until",
]


class DevStackError(VeilStreamError):
    """A local stack component could not be started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(n: int, host: str = "127.0.0.1", exclude: Collection[int] = ()) -> list[int]:
    """``n`` distinct TCP ports free on ``host`` right now, none of them in ``exclude``.

    All are held open until every one is picked: separate :func:`free_port` calls may get
    the same port back (the OS reuses a just-released one), which once handed one port to two
    Ray components and the head refused to start."""
    held: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind((host, 0))
            port = int(s.getsockname()[1])
            if port not in exclude:
                ports.append(port)
        return ports
    finally:
        for s in held:
            s.close()


def cmdline(pid: int) -> list[str]:
    """The argv of a live process ([] if it is gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (our own children are reaped)."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _matches(pid: int, marker: str) -> bool:
    return marker in " ".join(cmdline(pid))


def stop_pid(pid: int, marker: str, timeout_s: float = 10.0) -> bool:
    """Stop the process ``pid`` we started, its process group and its descendants.

    Args:
        pid: the recorded pid (also its process group id: we start sessions).
        marker: a substring of the command line we started; if the pid now belongs to
            something else, nothing is signalled.
        timeout_s: grace period after SIGTERM before SIGKILL.

    Returns:
        True if our process was running and has been stopped, False if it was already
        gone (or the pid was recycled by another command).
    """
    if not pid_alive(pid) or not _matches(pid, marker):
        return False
    victims = [pid, *_descendants(pid)]
    try:
        group = os.getpgid(pid) == pid
    except OSError:
        group = False

    def signal_all(sig: int) -> None:
        if group:
            with contextlib.suppress(OSError):
                os.killpg(pid, sig)
        for v in victims:
            if pid_alive(v):
                with contextlib.suppress(OSError):
                    os.kill(v, sig)

    signal_all(signal.SIGTERM)
    if not wait_until(lambda: not any(pid_alive(v) for v in victims), timeout_s, interval_s=0.05):
        signal_all(signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(v) for v in victims), 5.0, interval_s=0.05)
    return True


def wait_until(pred: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``pred`` until it is true or ``timeout_s`` passes; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if pred():
                return True
        except Exception:  # noqa: BLE001 - a probe failing means "not yet"
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


@dataclass
class ManagedProcess:
    """A process we started: what it is, where it logs, and how to stop it."""

    name: str
    pid: int
    marker: str
    log_path: str
    argv: list[str] = field(default_factory=list)
    grace_s: float = 10.0  # SIGTERM -> SIGKILL delay (Ray ignores SIGTERM in practice: short)

    def alive(self) -> bool:
        if not pid_alive(self.pid):
            return False
        argv = cmdline(self.pid)
        # [] while the child is still inside execve (its new argv not set up yet): Popen returns
        # as soon as exec is committed, and on a loaded machine a start-up check can land in that
        # window; calling it dead there left a running server behind, never stopped.
        return not argv or self.marker in " ".join(argv)

    def stop(self, timeout_s: float | None = None) -> bool:
        return stop_pid(self.pid, self.marker, self.grace_s if timeout_s is None else timeout_s)

    def relatives(self) -> list[int]:
        """Other live pids running the same program with our marker: a component restarted
        by hand or by a fault test on the same port (same listener URL), which ``down`` must
        stop too. Matching on program *and* marker never touches anybody else's process."""
        prog = self.argv[0] if self.argv else None
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in (self.pid, os.getpid()):
                continue
            argv = cmdline(int(entry.name))
            if argv and (prog is None or argv[0] == prog) and self.marker in " ".join(argv) \
                    and pid_alive(int(entry.name)):
                out.append(int(entry.name))
        return out

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = Path(self.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def spawn(name: str, argv: Sequence[str], log_path: str | os.PathLike[str], marker: str,
          env: Mapping[str, str] | None = None, cwd: str | None = None, grace_s: float = 10.0) -> ManagedProcess:
    """Start ``argv`` in a new session with stdout+stderr appended to ``log_path``."""
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        try:
            proc = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(env) if env is not None else None, cwd=cwd,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise DevStackError(f"cannot start {name} ({argv[0]}): {exc}") from None
    # Popen would warn about a still-running child at interpreter exit; the pid is what
    # we track (the stack outlives `veilstream up`).
    proc.returncode = 0
    # Popen returns when the child's close-on-exec pipe closes, which the kernel does a moment
    # BEFORE the new program's argv is readable in /proc/<pid>/cmdline: a check of the marker in
    # that window takes a running process for a dead one (and then never stops it). Wait for it.
    wait_until(lambda: bool(cmdline(proc.pid)) or not pid_alive(proc.pid), 5.0, interval_s=0.005)
    return ManagedProcess(name=name, pid=proc.pid, marker=marker, log_path=str(log), argv=list(argv),
                          grace_s=grace_s)
