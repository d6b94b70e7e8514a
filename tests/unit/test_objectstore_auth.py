"""Object-store client options for production: a private CA bundle, workload identity (no keys)."""

from __future__ import annotations

import pytest

from pipeline.objectstore import MinioSegmentStore, ObjectStoreError
from schemas.config import parse_config


def store(tmp_path, **object_store):
    cfg = parse_config({"object_store": {"endpoint": "https://minio.internal:9000", **object_store}})
    return MinioSegmentStore.from_config(cfg.object_store)


def test_ca_file_pins_the_tls_trust_to_that_bundle(tmp_path, monkeypatch):
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # never read before a request
    monkeypatch.setenv("VEIL_S3_ACCESS_KEY", "a")
    monkeypatch.setenv("VEIL_S3_SECRET_KEY", "b")
    client = store(tmp_path, ca_file=str(ca)).client
    pool = client._http
    assert pool.connection_pool_kw["ca_certs"] == str(ca) and pool.connection_pool_kw["cert_reqs"] == "CERT_REQUIRED"
    with pytest.raises(ObjectStoreError, match="object_store.ca_file: .*missing.crt does not exist"):
        _ = store(tmp_path, ca_file=str(tmp_path / "missing.crt")).client


def test_web_identity_needs_no_static_keys(tmp_path, monkeypatch):
    from minio.credentials import IamAwsProvider

    monkeypatch.delenv("VEIL_S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("VEIL_S3_SECRET_KEY", raising=False)
    client = store(tmp_path, credentials="web_identity").client
    assert isinstance(client._provider, IamAwsProvider)
    with pytest.raises(ObjectStoreError, match="credentials missing"):
        _ = store(tmp_path).client  # keys (the default) still demand keys
