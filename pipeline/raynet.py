"""Keep a local Ray on the loopback interface.

Ray has no authentication: whoever reaches its GCS or raylet ports can run code on the
node. ``ray start --node-ip-address 127.0.0.1`` is not enough to keep them local: Ray
replaces a loopback node address by the machine's routable address
(``ray._private.services.resolve_ip_for_localhost``), and its C++ servers (GCS, raylet,
object manager) then listen on every interface; they listen on 127.0.0.1 only when the
node address stays 127.0.0.1. Ray keeps it so when clusters are disabled
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS and Windows), so:

* the local stack's head runs with :data:`LOOPBACK_ENV` (``pipeline.devstack.raylocal``);
* a driver of a loopback address (or of an in-process local Ray) calls
  :func:`keep_ray_on_loopback` before ``ray.init``: it resolves the address the same way
  (else it would dial the routable address, where nothing listens now).

A cluster address (KubeRay's head Service, ``auto``) is left alone: there the
NetworkPolicies of the chart decide who reaches Ray's ports.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from urllib.parse import urlsplit

__all__ = ["LOOPBACK_ENV", "is_loopback_address", "keep_ray_on_loopback", "loopback_env"]

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for multi-node clusters; ``0`` keeps a node's address (and listeners) on loopback."""


def loopback_env() -> dict[str, str]:
    """Environment of a Ray head (and of its job drivers) that must stay on 127.0.0.1."""
    return {LOOPBACK_ENV: "0"}


def is_loopback_address(address: str | None) -> bool:
    """True for ``127.x.x.x:P``, ``localhost:P``, ``[::1]:P`` (with or without a scheme)."""
    if not address:
        return False
    text = address if "://" in address else f"ray://{address}"
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only "localhost" is known to be loopback without resolving it
        return False


def keep_ray_on_loopback(address: str | None) -> bool:
    """Before ``ray.init(address=...)`` in this process: for a loopback ``address`` or
    ``None`` (an in-process local Ray), make Ray keep 127.0.0.1 as this node's address,
    so the driver dials the loopback head and a Ray it starts listens on loopback only.
    Returns whether it did; any other address is left alone."""
    if address is not None and not is_loopback_address(address):
        return False
    os.environ[LOOPBACK_ENV] = "0"
    consts = sys.modules.get("ray._private.ray_constants")
    if consts is not None:  # ray already imported: it read the variable at import time
        consts.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]
    return True
