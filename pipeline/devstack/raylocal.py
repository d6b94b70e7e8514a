"""A local Ray head as a separate process, so workers connect to it like to a cluster.

Started as::

    <venv>/bin/ray start --head --block --node-ip-address 127.0.0.1 --port P \\
        --num-cpus N --object-store-memory BYTES --include-dashboard=false \\
        --disable-usage-stats --temp-dir /tmp/veil-ray-XXXX \\
        --node-manager-port .. --object-manager-port .. --ray-client-server-port .. \\
        --dashboard-agent-listen-port .. --dashboard-agent-grpc-port .. \\
        --runtime-env-agent-port .. --metrics-export-port ..   (all free ports)

Why a head process and not in-process ``ray.init``: ``veilstream up`` must outlive the
command that started it, ``down`` must stop it by pid, and failure tests kill nodes.
``--block`` keeps ``ray start`` in the foreground as the leader of a process group
holding gcs_server, raylet and the workers, so stopping that group stops all of Ray.
A private ``--temp-dir`` keeps our cluster out of ``/tmp/ray/ray_current_cluster``, so
another ``ray.init()`` on the same machine never attaches to it by accident (short
path: Ray's unix sockets live under it). Every port is explicit so concurrent stacks
never collide on Ray's fixed defaults (6379, 10001, 52365...).

Workers connect with ``ray.init(address="127.0.0.1:P")`` after
:func:`pipeline.raynet.keep_ray_on_loopback`.

Loopback only: Ray has no authentication, and ``--node-ip-address 127.0.0.1`` alone does
not keep it local (Ray swaps it for the machine's routable address and its GCS, raylet
and agents then listen on every interface). The head runs with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (:func:`pipeline.raynet.loopback_env`), which keeps
the node address 127.0.0.1 and every listener on it; its job drivers inherit it.

Token authentication is set explicitly, never left to Ray's default: Ray 2.59+ turns it on
for ``ray start`` whenever ``~/.ray/auth_token`` exists (any plain ``ray.init()`` on the
machine writes that file), while a driver's ``ray.init(address=...)`` does not send the
token, so the stack's own workers were refused (``InvalidAuthToken``) on a machine where
someone had once started a local Ray. The head runs with ``RAY_AUTH_MODE`` as the caller's
environment sets it (``token``, with ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` for every
driver too) and ``disabled`` otherwise: the loopback listeners are then the boundary.

The head also gets :data:`pipeline.process.raysettings.QUIET_RAY_ENV` (task events, timeline
and event-loop stats off: Ray's observability work that nothing here reads), as the stage's
in-process ``ray.init`` does; a value the caller's environment sets wins.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.process.raysettings import apply_quiet_ray_env
from pipeline.raynet import loopback_env

from . import DevStackError, ManagedProcess, free_port, free_ports, spawn

AUTH_MODE_ENV = "RAY_AUTH_MODE"
"""Ray's token-authentication switch (``token`` | ``disabled``); see the module doc."""

__all__ = ["RayHandle", "loopback_node_argv", "start_ray_head"]


@dataclass
class RayHandle:
    """A running Ray head we started."""

    process: ManagedProcess
    port: int
    temp_dir: str
    num_cpus: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout_s: float | None = None) -> bool:
        stopped = self.process.stop(timeout_s)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        return stopped


def _ray_bin() -> str:
    path = Path(sys.executable).with_name("ray")
    if path.is_file():
        return str(path)
    found = shutil.which("ray")
    if not found:
        raise DevStackError("the ray CLI was not found: pip install 'ray[default]>=2.30'")
    return found


_KEEP_LOOPBACK_CLI = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
                      "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")


def loopback_node_argv() -> list[str]:
    """The ``ray`` CLI for a second node joining the local (loopback) head, e.g.
    ``[*loopback_node_argv(), "start", "--address", head, "--node-ip-address", "127.0.0.1", ...]``.

    The head's way (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) makes ``ray start --address``
    refuse to add a node, and without it the node would swap 127.0.0.1 (its own address
    and the head's) for the routable one, where the head does not listen. This runs the
    same CLI with that swap turned off, so the node listens on loopback as well."""
    return [sys.executable, "-c", _KEEP_LOOPBACK_CLI]


def _ready(temp_dir: str) -> bool:
    # `ray start` writes the cluster address file into its temp dir once GCS and the
    # raylet are up; the raylet's socket appears in the session dir.
    sess = Path(temp_dir) / "session_latest" / "sockets"
    return (Path(temp_dir) / "ray_current_cluster").is_file() and sess.is_dir() and any(
        p.name == "raylet" for p in sess.iterdir())


def _dashboard_up(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_ray_head(log_dir: str | os.PathLike[str], num_cpus: int | None = None, object_store_mb: int = 256,
                   port: int | None = None, timeout_s: float = 90.0, dashboard_port: int | None = None,
                   env_extra: dict[str, str] | None = None) -> RayHandle:
    """Start a Ray head on 127.0.0.1 and wait until it accepts drivers.

    Args:
        dashboard_port: also run the dashboard (the Ray Jobs API, what ``veilstream process
            --submit`` talks to) on this port, and wait until it answers.
        env_extra: environment of the head (its job supervisors and drivers inherit it).
    """
    num_cpus = num_cpus or (os.cpu_count() or 1)
    port = port or free_port()
    temp_dir = tempfile.mkdtemp(prefix="veil-ray-", dir="/tmp")
    flags = ("--node-manager-port", "--object-manager-port", "--ray-client-server-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
             "--metrics-export-port")
    # distinct from each other, the head's port and the dashboard's: Ray refuses to start otherwise
    ports = dict(zip(flags, free_ports(len(flags), exclude={port, dashboard_port or 0})))
    argv = [_ray_bin(), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--num-cpus", str(num_cpus), "--object-store-memory", str(object_store_mb * 1024 * 1024),
            "--disable-usage-stats", "--temp-dir", temp_dir]
    if dashboard_port:
        argv += ["--include-dashboard=true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port)]
    else:
        argv += ["--include-dashboard=false"]
    for flag, p in ports.items():
        argv += [flag, str(p)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.setdefault(AUTH_MODE_ENV, "disabled")  # not whatever a stray ~/.ray/auth_token implies (module doc)
    env.update(loopback_env())  # every listener on 127.0.0.1 (see the module docstring)
    apply_quiet_ray_env(env)  # Ray's observability work nothing reads; the caller's value wins
    env.update(env_extra or {})
    # gcs_server / raylet catch SIGTERM but take far too long to act on it: after a
    # short grace the whole group gets SIGKILL (what `ray stop --force` does, by pid here).
    proc = spawn("ray", argv, Path(log_dir) / "ray.log", marker=f"--temp-dir {temp_dir}", env=env, grace_s=3.0)
    handle = RayHandle(proc, port, temp_dir, num_cpus)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise DevStackError(f"ray head exited during start; log {proc.log_path}:\n{proc.log_tail()}")
        try:
            if _ready(temp_dir) and (not dashboard_port or _dashboard_up(dashboard_port)):
                return handle
        except OSError:
            pass
        time.sleep(0.2)
    handle.stop(5.0)
    raise DevStackError(f"ray head on port {port} not ready after {timeout_s:.0f}s; log {proc.log_path}")
