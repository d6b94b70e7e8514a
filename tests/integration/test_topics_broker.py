"""`veilstream topics apply` against the real local broker (tansu), through the CLI.

What tansu does (measured here, so the report never claims more than the broker said):
CreateTopics with configs works and DescribeConfigs then reports them; a topic created
without configs reports none (so every wanted key is drift: "not set on the topic");
IncrementalAlterConfigs works; CreatePartitions is unsupported (the drift stays, with the
broker's reason, and the command exits 1).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

VEILSTREAM = [sys.executable, "-m", "pipeline.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VEILSTREAM, *args], capture_output=True, text=True, timeout=120)


def test_topics_apply_creates_checks_and_reports_drift(broker, unique_name, tmp_path: Path):
    from confluent_kafka.admin import AdminClient, NewTopic

    topics = {r: f"{unique_name}-{r}" for r in ("raw", "redacted", "dlq", "cameras", "audit")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": broker.bootstrap, "topics": topics,
                                              "partitions": 3,
                                              "provisioning": {"partitions": {"cameras": 2}}}}))
    # A client auto-created the registry before provisioning ran: delete policy, one partition.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for fut in admin.create_topics([NewTopic(topics["cameras"], 1, 1)]).values():
        fut.result(15)

    check = run_cli("topics", "check", "--config", str(path))
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"drift {topics['raw']} exists: want yes, have no (NOT fixed)" in check.stdout
    assert f"drift {topics['cameras']} cleanup.policy: want compact, have not set on the topic (NOT fixed)" \
        in check.stdout
    assert topics["raw"] not in admin.list_topics(timeout=10).topics  # check creates nothing

    first = run_cli("topics", "apply", "--config", str(path), "--add-partitions")
    out = first.stdout
    for role in ("raw", "redacted", "dlq", "audit"):
        assert f"created {topics[role]} partitions=3 " in out, out
    assert f"drift {topics['cameras']} cleanup.policy: want compact, have not set on the topic (fixed)" in out
    # tansu has no CreatePartitions: the registry keeps one partition and says so
    assert f"drift {topics['cameras']} partitions: want 2, have 1 (NOT fixed: CreatePartitions" in out, out
    assert first.returncode == 1 and "1 difference(s) left" in first.stderr

    md = admin.list_topics(timeout=10)
    assert len(md.topics[topics["raw"]].partitions) == 3
    second = run_cli("topics", "check", "--config", str(path))
    lines = second.stdout.splitlines()
    assert {f"ok {topics[r]}" for r in ("raw", "redacted", "dlq", "audit")} <= set(lines), second.stdout
    assert [ln for ln in lines if ln.startswith("drift")] == [
        f"drift {topics['cameras']} partitions: want 2, have 1 (NOT fixed)"]


def test_topics_apply_unreachable_broker_is_one_line(tmp_path: Path):
    from pipeline.devstack import free_port

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"}}))
    proc = run_cli("topics", "apply", "--config", str(path), "--timeout", "3")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("veilstream: error: cannot list topics:"), proc.stderr
