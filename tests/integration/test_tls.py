"""TLS to Kafka and to the object store, on the real local servers (issue 12).

* Object store: moto's server serves HTTPS itself (``-c``/``-k``).
* Kafka: tansu 0.6.0 lists ``--cert`` and ``--key`` but declares them mutually exclusive
  (``error: the argument '--cert <CERT>' cannot be used with '--key <KEY>'``), and with only
  one of them it still listens in plaintext, so its own TLS listener cannot be used. The
  test puts a TLS terminator (Python ``ssl``, like an Envoy/stunnel sidecar) in front of
  the real broker, advertised as the broker's address, so librdkafka's TLS with the
  pipeline's settings is exercised end to end against the real broker.

A throwaway CA signs a certificate for 127.0.0.1; the pipeline's own clients
(``kafka_settings`` from ``kafka.security``, the sink's ``MinioSegmentStore`` with
``object_store.secure``/``ca_file``) must connect through it, and a client that does not
trust the CA (or speaks plaintext) must get nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import time
from pathlib import Path

import pytest

from pipeline.devstack import free_port, spawn, wait_until

pytestmark = pytest.mark.integration


def _certs(d: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "veil test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, cert_pem, key_pem = d / "ca.pem", d / "server.pem", d / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


class TlsTerminator:
    """Accept TLS on ``port``, forward the plaintext bytes to ``backend`` (both ways)."""

    def __init__(self, port: int, backend: int, cert: Path, key: Path) -> None:
        import socket
        import ssl
        import threading

        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.backend = backend
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.5)
        self.stop = threading.Event()
        self.handshakes_failed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import ssl
        import threading

        while not self.stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            try:
                raw.settimeout(5)
                conn = self.ctx.wrap_socket(raw, server_side=True)
                conn.settimeout(None)
            except (ssl.SSLError, OSError):
                self.handshakes_failed += 1
                raw.close()
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.backend))
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: object, b: object) -> None:
        try:
            while data := a.recv(65536):  # type: ignore[attr-defined]
                b.sendall(data)  # type: ignore[attr-defined]
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()  # type: ignore[attr-defined]
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_tansu_cannot_configure_its_own_tls_listener(tmp_path: Path) -> None:
    """The limitation the Kafka test works around, pinned: if a tansu upgrade fixes it, this
    fails and the sidecar can go."""
    import subprocess

    from pipeline.devstack.broker import tansu_binary

    _ca, cert, key = _certs(tmp_path)
    url = f"tcp://127.0.0.1:{free_port()}"
    out = subprocess.run([tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                          "--storage-engine", "memory://tansu/", "--cluster-id", "x", "--cert", str(cert), "--key",
                          str(key)], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and "cannot be used with" in out.stderr


def test_kafka_over_tls_with_the_pipelines_client_settings(tmp_path: Path) -> None:
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipeline.devstack.broker import tansu_binary
    from pipeline.kafka import kafka_settings
    from schemas.config import parse_config

    ca, cert, key = _certs(tmp_path)
    port, backend = free_port(), free_port()
    listen, advertised = f"tcp://127.0.0.1:{backend}", f"tcp://127.0.0.1:{port}"
    proc = spawn("broker-tls", [tansu_binary(), "broker", "--listener-url", listen, "--advertised-listener-url",
                                advertised, "--storage-engine", "memory://tansu/", "--cluster-id", "veiltls"],
                 tmp_path / "broker.log", marker=f"--listener-url {listen}")
    import socket

    def backend_up() -> bool:
        with socket.create_connection(("127.0.0.1", backend), timeout=1):
            return True

    assert wait_until(backend_up, 20), proc.log_tail()
    tls_front = TlsTerminator(port, backend, cert, key)
    try:
        cfg = parse_config({"kafka": {"bootstrap_servers": f"127.0.0.1:{port}",
                                      "security": {"protocol": "SSL", "ca_file": str(ca)}}})
        tls = {"bootstrap.servers": cfg.kafka.bootstrap_servers, **kafka_settings(cfg.kafka)}
        assert tls["security.protocol"] == "SSL" and tls["ssl.ca.location"] == str(ca)
        admin = AdminClient(tls)
        assert wait_until(lambda: admin.list_topics(timeout=2) is not None, 20), proc.log_tail()
        for fut in admin.create_topics([NewTopic("t", 1, 1)]).values():
            fut.result(15)
        p = Producer(tls)
        p.produce("t", b"over tls", key=b"cam-1")
        assert p.flush(15) == 0
        c = Consumer({**tls, "group.id": "g", "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
        c.subscribe(["t"])
        got, deadline = None, time.monotonic() + 40
        while got is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got = m.value()
        c.close()
        assert got == b"over tls"
        # plaintext against the TLS listener gets no metadata at all
        plain = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers, "socket.timeout.ms": 2000})
        with pytest.raises(KafkaException):
            plain.list_topics(timeout=3)
        # a client that does not trust our CA is refused too
        other = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers, "security.protocol": "SSL"})
        with pytest.raises(KafkaException):
            other.list_topics(timeout=3)
        assert tls_front.handshakes_failed >= 1
    finally:
        tls_front.close()
        proc.stop(5)


def test_object_store_over_tls_with_the_sinks_store(tmp_path: Path) -> None:
    import sys

    from pipeline.objectstore import MinioSegmentStore

    ca, cert, key = _certs(tmp_path)
    port = free_port()
    script = Path(sys.executable).with_name("moto_server")
    proc = spawn("s3-tls", [str(script), "-H", "127.0.0.1", "-p", str(port), "-c", str(cert), "-k", str(key)],
                 tmp_path / "s3.log", marker=f"-p {port}")
    (tmp_path / "ak").write_text("testing")
    (tmp_path / "sk").write_text("testing")
    try:
        cfg = {"endpoint": f"127.0.0.1:{port}", "bucket": "tls-bucket", "secure": True, "ca_file": str(ca),
               "access_key_file": str(tmp_path / "ak"), "secret_key_file": str(tmp_path / "sk"),
               "region": "us-east-1"}
        store = MinioSegmentStore.from_config(cfg)
        assert wait_until(lambda: store.ensure_bucket() is None, 30), proc.log_tail()
        store.put_object("camera=c/x.mp4", b"segment", "video/mp4", {}, {"camera": "c"})
        assert store.get_object("camera=c/x.mp4") == b"segment"
        # the same server through a client that does not trust the CA: refused
        untrusted = MinioSegmentStore.from_config({**cfg, "ca_file": None})
        with pytest.raises(Exception, match="(?i)certificate|ssl"):
            untrusted.get_object("camera=c/x.mp4")
    finally:
        proc.stop(5)
