"""Session fixtures for the real local stack: tansu broker, moto S3 server, Ray head.

Each is started once per session on free 127.0.0.1 ports, logs under the session's tmp
dir, and is stopped by PID at the end (only what these fixtures started). A missing tool
fails the test with the install command; it is never silently skipped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from pipeline.devstack import DevStackError


@pytest.fixture(scope="session")
def devstack_logs(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("devstack-logs")


def _start(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except DevStackError as exc:
        pytest.fail(f"local stack component did not start: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def broker(devstack_logs) -> Iterator:
    """A tansu broker; ``broker.bootstrap`` is ``127.0.0.1:PORT``."""
    from pipeline.devstack.broker import start_broker

    handle = _start(start_broker, devstack_logs)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def s3(devstack_logs) -> Iterator:
    """A moto S3 server; ``s3.endpoint`` for ``minio.Minio(..., secure=False)``, ``s3.client()``."""
    from pipeline.devstack.s3 import start_s3

    handle = _start(start_s3, devstack_logs)
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def ray_local(devstack_logs) -> Iterator:
    """A Ray head process; connect with ``ray.init(address=ray_local.address)``."""
    from pipeline.devstack.raylocal import start_ray_head

    handle = _start(start_ray_head, devstack_logs, num_cpus=2, object_store_mb=256)
    yield handle
    handle.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name unique to this test, valid as a Kafka topic, consumer group and S3 bucket."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"
