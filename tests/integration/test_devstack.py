"""The local stack itself: broker, S3 server, Ray head, and `up` / `down`."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_produce_consume_with_headers(broker, unique_name):
    from confluent_kafka import Consumer, KafkaError, Producer

    from pipeline.devstack.broker import create_topics

    topic = unique_name
    create_topics(broker.bootstrap, {topic: 2}, config={"max.message.bytes": str(4 * 1024 * 1024)})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                         "message.max.bytes": 4 * 1024 * 1024})
    big = bytes(range(256)) * 8192  # 2 MiB: over the 1 MB default, under the limits we set
    acks = []
    for i, value in enumerate([b"hello", big]):
        producer.produce(topic, value=value, key=b"cam-1", headers=[("veil-meta", b'{"i": %d}' % i)],
                         on_delivery=lambda err, msg: acks.append(err))
    assert producer.flush(15) == 0
    assert acks == [None, None]

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_name,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                         "fetch.max.bytes": 8 * 1024 * 1024, "max.partition.fetch.bytes": 8 * 1024 * 1024})
    try:
        consumer.subscribe([topic])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
            consumer.commit(message=msg, asynchronous=False)
        assert [m.value() for m in got] == [b"hello", big]  # same key -> same partition, in order
        assert [dict(m.headers())["veil-meta"] for m in got] == [b'{"i": 0}', b'{"i": 1}']
        assert all(m.key() == b"cam-1" for m in got)
        tp = consumer.committed(consumer.assignment(), timeout=10)
        assert sum(max(p.offset, 0) for p in tp) == 2
    finally:
        consumer.close()


def test_compacted_topic_created(broker, unique_name):
    from confluent_kafka.admin import AdminClient

    from pipeline.devstack.broker import create_topics

    create_topics(broker.bootstrap, {unique_name: 3}, per_topic={unique_name: {"cleanup.policy": "compact"}})
    create_topics(broker.bootstrap, {unique_name: 3})  # existing: left alone, no error
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert len(md.topics[unique_name].partitions) == 3


def test_bucket_put_get(s3, unique_name):
    client = s3.client()
    client.make_bucket(unique_name)
    assert client.bucket_exists(unique_name)
    data = b"segment bytes" * 1000
    client.put_object(unique_name, "camera=c1/x.mp4", io.BytesIO(data), len(data), content_type="video/mp4",
                      metadata={"x-amz-meta-camera": "c1"})
    resp = client.get_object(unique_name, "camera=c1/x.mp4")
    try:
        assert resp.read() == data
    finally:
        resp.close()
        resp.release_conn()
    assert [o.object_name for o in client.list_objects(unique_name, prefix="camera=", recursive=True)] == [
        "camera=c1/x.mp4"]


def test_ray_head_runs_tasks(ray_local):
    code = ("import ray; from pipeline.raynet import keep_ray_on_loopback; "
            f"keep_ray_on_loopback({ray_local.address!r}); ray.init(address={ray_local.address!r}, log_to_driver=False); "
            "print(ray.get(ray.remote(lambda x: x * 2).remote(21))); ray.shutdown()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "42"


def test_a_stray_ray_token_file_does_not_lock_the_stack_out(tmp_path, monkeypatch):
    """Ray 2.59+ turns token auth on for ``ray start`` when ``~/.ray/auth_token`` exists (a
    plain ``ray.init()`` anywhere on the machine writes it), but a driver's
    ``ray.init(address=...)`` sends no token: the stack's workers were refused. The head's
    auth mode is explicit now."""
    from pipeline.devstack.raylocal import start_ray_head

    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("a" * 64)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    head = start_ray_head(tmp_path / "logs", num_cpus=1, object_store_mb=128)
    try:
        code = ("import ray; from pipeline.raynet import keep_ray_on_loopback; "
                f"keep_ray_on_loopback({head.address!r}); ray.init(address={head.address!r}, log_to_driver=False); "
                "print(ray.get(ray.remote(lambda x: x + 1).remote(41))); ray.shutdown()")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    finally:
        head.stop()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "42"


def _process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += children.get(pid, [])
    return out


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(local address, port) of every TCP socket in LISTEN that one of ``pids`` holds
    (read from /proc: no ss or psutil needed)."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
    out = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A = LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # per-word host order
            out.append((str(ipaddress.ip_address(raw if width == 16 else raw[:4])), int(hexport, 16)))
    return out


def test_the_local_ray_head_listens_on_loopback_only(ray_local):
    """Ray has no authentication: the local head's GCS, raylet, object manager and agents must
    not be reachable from the network (before: GCS, raylet and agents on 0.0.0.0 / the
    machine's address, because `ray start` swaps --node-ip-address 127.0.0.1 for it)."""
    sockets = _listening(_process_tree(ray_local.pid))
    assert len(sockets) >= 3, sockets  # GCS, raylet, agents at least
    def loopback(a: str) -> bool:
        ip = ipaddress.ip_address(a)
        return bool((getattr(ip, "ipv4_mapped", None) or ip).is_loopback)

    exposed = [(a, p) for a, p in sockets if not loopback(a)]
    assert exposed == [], exposed


def test_a_second_local_node_joins_the_loopback_head_on_loopback(ray_local, tmp_path):
    """What the fault harness does for node loss: a second `ray start --address` on this machine."""
    from pipeline.devstack import free_port, spawn
    from pipeline.devstack.raylocal import loopback_node_argv

    agent = free_port()
    argv = [*loopback_node_argv(), "start", "--address", ray_local.address, "--block", "--node-ip-address",
            "127.0.0.1", "--num-cpus", "0", "--resources", '{"second_node": 1}', "--object-store-memory",
            str(80 * 1024 * 1024), "--disable-usage-stats", "--dashboard-agent-listen-port", str(agent)]
    for flag in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--metrics-export-port"):
        argv += [flag, str(free_port())]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    node = spawn("ray-node2", argv, tmp_path / "node2.log", marker=f"--dashboard-agent-listen-port {agent}",
                 env=env, grace_s=3.0)
    try:
        code = ("import time, ray; from pipeline.raynet import keep_ray_on_loopback; "
                f"keep_ray_on_loopback({ray_local.address!r}); ray.init(address={ray_local.address!r}, "
                "log_to_driver=False); "
                "ok = lambda: any(n['Alive'] and n['Resources'].get('second_node') for n in ray.nodes()); "
                "t = time.time()\nwhile not ok() and time.time() - t < 60: time.sleep(0.5)\n"
                "print(ok(), sorted({n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']}))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "True ['127.0.0.1']", (out.stdout, node.log_tail())
        sockets = _listening(_process_tree(node.pid))
        assert sockets and all(a in ("127.0.0.1", "::ffff:7f00:1") for a, _ in sockets), sockets
    finally:
        node.stop()  # grace_s=3.0: a raylet ignores SIGTERM, a 10 s grace was 10 s of waiting


def test_up_down_leaves_nothing_behind(tmp_path):
    from pipeline.devstack import cmdline, pid_alive
    from pipeline.devstack.stack import StackState, down, up
    from schemas.config import load_config

    state = up(state_dir=tmp_path / "state", ray=True, num_cpus=1, partitions=2)
    try:
        pids = [p["pid"] for p in state.processes]
        assert len(pids) == 3 and all(pid_alive(p) for p in pids)
        cfg = load_config(state.config_path)  # the generated worker config is valid
        assert cfg.kafka.bootstrap_servers == state.bootstrap
        assert cfg.object_store.endpoint == state.s3_endpoint
        assert cfg.ray.address == state.ray_address
        from pipeline.process.plan import build_plan

        assert cfg.object_store.object_lock and build_plan(cfg).default.policy_id == "default"  # the policy is there
        assert StackState.load(tmp_path / "state") == state
        assert up(state_dir=tmp_path / "state").processes == state.processes  # idempotent
        from pipeline.devstack import _descendants

        family = [d for p in pids for d in _descendants(p)]
    finally:
        stopped = down(state_dir=tmp_path / "state")
    assert stopped == 3
    assert not any(pid_alive(p) for p in pids + family), [cmdline(p) for p in pids + family if pid_alive(p)]
    assert StackState.load(tmp_path / "state") is None
    assert down(state_dir=tmp_path / "state") == 0  # nothing left to stop


def test_up_with_memory_broker_storage_leaves_the_s3_server_out_of_the_brokers_work(tmp_path):
    from pipeline.devstack import DevStackError
    from pipeline.devstack.stack import BROKER_BUCKET, down, up

    with pytest.raises(DevStackError, match="broker storage 'disk': expected one of s3, memory"):
        up(state_dir=tmp_path / "bad", ray=False, broker_storage="disk")
    assert not (tmp_path / "bad").exists()  # refused before anything started
    state = up(state_dir=tmp_path / "state", ray=False, partitions=2, broker_storage="memory")
    try:
        assert state.broker_storage == "memory://tansu/"
        from minio import Minio

        s3 = Minio(state.s3_endpoint, access_key=(tmp_path / "state" / "s3-access-key").read_text(),
                   secret_key=(tmp_path / "state" / "s3-secret-key").read_text(), secure=False)
        assert not s3.bucket_exists(BROKER_BUCKET)
        from pipeline.kafka import admin_client

        assert "veil.chunks.raw" in admin_client(state.bootstrap).list_topics(timeout=10).topics
    finally:
        down(state_dir=tmp_path / "state")


def test_stop_refuses_a_recycled_pid(tmp_path):
    from pipeline.devstack import pid_alive, spawn, stop_pid

    proc = spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log",
                 marker="time.sleep(60)")
    try:
        assert not stop_pid(proc.pid, marker="tansu broker")  # not the command we recorded
        assert pid_alive(proc.pid)
    finally:
        assert proc.stop(5)
    assert not pid_alive(proc.pid)


def test_broker_restart_keeps_topics_registry_and_offsets_and_down_stops_the_new_one(tmp_path):
    """Issue 12 item 7: on memory storage a broker restart wiped topics, the camera registry
    and committed offsets, and `down` left a restarted broker running."""
    import os
    import signal

    from confluent_kafka import Consumer, Producer, TopicPartition

    from pipeline.devstack import pid_alive, wait_until
    from pipeline.devstack.stack import StackState, down, restart_broker, up
    from pipeline.ingest.registry import publish_cameras, read_registry
    from schemas.config import load_config, parse_camera

    sdir = tmp_path / "state"
    state = up(state_dir=sdir, ray=False, partitions=2)
    try:
        assert state.broker_storage.startswith("s3://")
        cfg = load_config(state.config_path)
        publish_cameras(cfg, [parse_camera({"camera_id": "lobby", "url": "/x.mp4"})])
        p = Producer({"bootstrap.servers": state.bootstrap})
        for i in range(6):
            p.produce(cfg.kafka.topics.raw, key=b"k", value=b"v%d" % i)
        assert p.flush(15) == 0
        c = Consumer({"bootstrap.servers": state.bootstrap, "group.id": "g-restart", "enable.auto.commit": False})
        parts = [TopicPartition(cfg.kafka.topics.raw, i, 3) for i in range(2)]
        c.commit(offsets=parts, asynchronous=False)
        c.close()

        broker = next(pr for pr in state.managed() if pr.name == "broker")
        os.kill(broker.pid, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(broker.pid), 10)
        revived = up(state_dir=sdir, ray=False, partitions=2)  # half-dead: the broker comes back in place
        new = next(pr for pr in revived.managed() if pr.name == "broker")
        assert new.pid != broker.pid and revived.bootstrap == state.bootstrap
        assert set(read_registry(cfg)) == {"lobby"}
        c = Consumer({"bootstrap.servers": state.bootstrap, "group.id": "g-restart", "enable.auto.commit": False})
        committed = c.committed([TopicPartition(cfg.kafka.topics.raw, i) for i in range(2)], timeout=15)
        c.close()
        assert [tp.offset for tp in committed] == [3, 3]

        # `run --cameras 1` after a run with 3: the earlier run's simulated cameras are retired,
        # a camera somebody registered is not
        from pipeline.runner import camera_records, retire_stale_cameras

        publish_cameras(cfg, [parse_camera(r) for r in camera_records(3)])
        seen = read_registry(cfg)
        assert set(seen) == {"lobby", "cam-001", "cam-002", "cam-003"}, seen
        assert retire_stale_cameras(cfg, {"cam-001"}) == ["cam-002", "cam-003"]
        assert set(read_registry(cfg)) == {"lobby", "cam-001"}

        # a broker restarted by hand (a new pid `stack.json` never saw) is still stopped by down
        restart_broker(sdir)
        stray = next(pr for pr in StackState.load(sdir).managed() if pr.name == "broker")
        state_file = sdir / "stack.json"
        text = state_file.read_text().replace(str(stray.pid), str(new.pid))  # forget the new pid
        state_file.write_text(text)
    finally:
        down(state_dir=sdir)
    assert not pid_alive(stray.pid)
