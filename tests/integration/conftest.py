"""Session fixtures for the real local stack: tansu broker, moto S3 server, Ray head.

Each is started once per session on free 127.0.0.1 ports, logs under the session's tmp
dir, and is stopped by PID at the end (only what these fixtures started). A missing tool
fails the test with the install command; it is never silently skipped.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
def iam_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator:
    """A moto S3 server of this test's own in IAM mode: the first ``SETUP_CALLS`` requests (the
    test module's constant: the :func:`iam_user` calls, 3 each) need no signature, every later one
    must be signed by an IAM user and is checked against that user's policies."""
    from pipeline.devstack.s3 import start_s3

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", str(request.module.SETUP_CALLS))
    handle = _start(start_s3, tmp_path / "s3-iam")
    yield handle
    handle.stop()


@pytest.fixture
def iam_user(iam_s3: Any) -> Callable[[str, dict[str, Any]], tuple[str, str]]:
    """``iam_user(name, document)``: creates the IAM user ``name`` on :func:`iam_s3` with
    ``document`` as its inline policy (3 setup calls) and returns its access key id and secret."""
    import boto3

    iam = boto3.client("iam", endpoint_url=iam_s3.url, region_name="us-east-1", aws_access_key_id="setup",
                       aws_secret_access_key="setup")

    def make(name: str, doc: dict[str, Any]) -> tuple[str, str]:
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(doc))
        k = iam.create_access_key(UserName=name)["AccessKey"]
        return k["AccessKeyId"], k["SecretAccessKey"]
    return make


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name unique to this test, valid as a Kafka topic, consumer group and S3 bucket."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"
