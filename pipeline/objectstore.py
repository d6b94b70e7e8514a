"""Object storage behind a small protocol: one MinIO/S3 adapter, one in-memory fake (tests).

Keys are built elsewhere (:mod:`pipeline.objectkeys`) as a pure function of the data, so a
replay calls ``put_object`` with the same key and overwrites instead of duplicating.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.errors import VeilStreamError

logger = logging.getLogger(__name__)


_MIN_PART = 5 * 1024 * 1024
_MAX_SINGLE_PUT = 5 * 1024 * 1024 * 1024


class ObjectStoreError(VeilStreamError):
    pass


@dataclass(frozen=True, slots=True)
class PutResult:
    etag: str
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``stat_object`` returns. ``metadata`` holds user metadata without ``x-amz-meta-``."""

    key: str
    size: int
    etag: str
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetentionSpec:
    """Object-lock retention of one object: S3 mode and retain-until (UTC)."""

    mode: str  # GOVERNANCE | COMPLIANCE
    until: dt.datetime


class ObjectStore(Protocol):
    """Where segments and manifests go. All methods are blocking and durable on return."""

    def ensure_bucket(self) -> None: ...

    def put_object(self, key: str, data: bytes, content_type: str, metadata: dict[str, str],
                   tags: dict[str, str], retention: RetentionSpec | None = None) -> PutResult:
        """``retention`` is applied where the bucket has object lock, ignored otherwise."""
        ...

    def set_lifecycle(self, rules: Sequence[Any]) -> None:
        """Replace the bucket's lifecycle with ``pipeline.governance.LifecycleRule`` s."""
        ...

    def get_object(self, key: str) -> bytes: ...

    def stat_object(self, key: str) -> ObjectInfo | None:
        """``None`` when the key does not exist."""
        ...

    def get_tags(self, key: str) -> dict[str, str]: ...

    def list_objects(self, prefix: str = "") -> Iterator[str]: ...


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _cfg(cfg: Any, name: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


class MinioSegmentStore:
    """``ObjectStore`` on MinIO (or any S3) through the ``minio`` client.

    Credentials are read from the environment variables *named* in the config when the
    client is first needed, never at import or construction, and never logged.
    """

    def __init__(self, endpoint: str, bucket: str, *, access_key_env: str = "VEIL_S3_ACCESS_KEY",
                 secret_key_env: str = "VEIL_S3_SECRET_KEY", secure: bool = False,
                 region: str | None = None, object_lock: bool = False, access_key_file: str | None = None,
                 secret_key_file: str | None = None, ca_file: str | None = None,
                 credentials: str = "keys") -> None:
        # accept "http://host:port" as well as "host:port": the scheme decides ``secure``
        if "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
            secure = scheme == "https"
        self.endpoint = endpoint.rstrip("/")
        self.bucket = bucket
        self.access_key_env = access_key_env
        self.secret_key_env = secret_key_env
        self.secure = secure
        self.region = region or None
        self.object_lock = object_lock
        self.access_key_file = access_key_file
        self.secret_key_file = secret_key_file
        self.ca_file = ca_file
        self.credentials = credentials
        self._client: Any = None

    @classmethod
    def from_config(cls, cfg: Any) -> MinioSegmentStore:
        """Build from the config's ``object_store`` section (dataclass or mapping)."""
        bucket = _cfg(cfg, "bucket") or _cfg(cfg, "redacted_bucket")
        if not bucket:
            raise ObjectStoreError("object_store.bucket is not set")
        return cls(
            str(_cfg(cfg, "endpoint")), str(bucket),
            access_key_env=_cfg(cfg, "access_key_env", "VEIL_S3_ACCESS_KEY"),
            secret_key_env=_cfg(cfg, "secret_key_env", "VEIL_S3_SECRET_KEY"),
            secure=bool(_cfg(cfg, "secure", False)), region=_cfg(cfg, "region"),
            object_lock=bool(_cfg(cfg, "object_lock", False)),
            access_key_file=_cfg(cfg, "access_key_file"), secret_key_file=_cfg(cfg, "secret_key_file"),
            ca_file=_cfg(cfg, "ca_file"), credentials=str(_cfg(cfg, "credentials", "keys") or "keys"),
        )

    def _secret(self, path: str | None, env: str) -> str | None:
        if path:  # a mounted Secret file wins over the env var (Kubernetes rotates files)
            try:
                with open(path, encoding="utf-8") as f:
                    return f.read().strip() or None
            except OSError as exc:
                raise ObjectStoreError(f"cannot read object store credential file {path}: {exc.strerror}") from None
        return os.environ.get(env)

    @property
    def client(self) -> Any:
        if self._client is None:
            from minio import Minio

            kw: dict[str, Any] = {"secure": self.secure, "region": self.region}
            if self.ca_file:  # an object store with its own CA (a private MinIO)
                kw["http_client"] = self._http_client(self.ca_file)
            if self.credentials == "web_identity":
                # no static keys: short-lived credentials from the pod's identity (IRSA's
                # AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, EKS Pod Identity, or instance metadata)
                from minio.credentials.providers import IamAwsProvider

                self._client = Minio(self.endpoint, credentials=IamAwsProvider(), **kw)
                return self._client
            access = self._secret(self.access_key_file, self.access_key_env)
            secret = self._secret(self.secret_key_file, self.secret_key_env)
            if not access or not secret:
                raise ObjectStoreError(
                    f"object store credentials missing: set ${self.access_key_env} and ${self.secret_key_env}")
            self._client = Minio(self.endpoint, access_key=access, secret_key=secret, **kw)
        return self._client

    @staticmethod
    def _http_client(ca_file: str) -> Any:
        import urllib3

        if not os.path.isfile(ca_file):
            raise ObjectStoreError(f"object_store.ca_file: {ca_file} does not exist (mount the CA bundle there)")
        return urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED", ca_certs=ca_file, timeout=urllib3.Timeout(connect=10.0, read=300.0),
            retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))

    def ensure_bucket(self) -> None:
        c = self.client
        if not c.bucket_exists(self.bucket):
            try:
                c.make_bucket(self.bucket, location=self.region, object_lock=self.object_lock)
                logger.info("bucket created bucket=%s object_lock=%s", self.bucket, self.object_lock)
                return
            except Exception as exc:  # noqa: BLE001 - a concurrent sink created it first
                if not c.bucket_exists(self.bucket):
                    raise ObjectStoreError(f"cannot create bucket {self.bucket}: {exc}") from exc
        if self.object_lock and not self._has_object_lock():
            # S3 enables object lock only when a bucket is created: retention on every PUT
            # would fail, so say so once, at start, instead of at every segment
            raise ObjectStoreError(
                f"object_store.object_lock is true but bucket {self.bucket} exists without object lock "
                "(it can only be enabled when a bucket is created): use a new bucket or set "
                "object_store.object_lock: false")

    def _has_object_lock(self) -> bool:
        from minio.error import S3Error

        try:
            self.client.get_object_lock_config(self.bucket)
            return True
        except S3Error as exc:
            if exc.code in ("ObjectLockConfigurationNotFoundError", "InvalidRequest", "NoSuchObjectLockConfiguration"):
                return False
            raise

    def set_lifecycle(self, rules: Sequence[Any]) -> None:
        """One rule per policy: expire objects tagged ``policy-id=<id>`` after its days, and
        versions superseded by a replay after the same days. Empty ``rules`` leaves the
        bucket's lifecycle alone (an operator may manage it by hand)."""
        if not rules:
            return
        from minio.commonconfig import ENABLED, Filter, Tag
        from minio.lifecycleconfig import (
            Expiration,
            LifecycleConfig,
            NoncurrentVersionExpiration,
            Rule,
        )

        cfg = LifecycleConfig([
            Rule(ENABLED, rule_filter=Filter(tag=Tag(*r.tag)), rule_id=r.rule_id,
                 expiration=Expiration(days=r.days),
                 noncurrent_version_expiration=NoncurrentVersionExpiration(noncurrent_days=r.days))
            for r in rules])
        self.client.set_bucket_lifecycle(self.bucket, cfg)
        logger.info("bucket lifecycle set bucket=%s rules=%s", self.bucket,
                    ",".join(f"{r.policy_id}:{r.days}d" for r in rules))

    def put_object(self, key: str, data: bytes, content_type: str, metadata: dict[str, str],
                   tags: dict[str, str], retention: RetentionSpec | None = None) -> PutResult:
        from minio.commonconfig import Tags
        from minio.retention import Retention

        t = Tags(for_object=True)
        for k, v in tags.items():
            t[k] = v
        # The checksum makes S3 verify the body; object-lock buckets of the local S3 server
        # require it (MinIO accepts it). minio-py passes unknown keys of ``metadata`` through
        # as headers and prefixes the rest with x-amz-meta-.
        headers: dict[str, str] = {f"x-amz-meta-{k}": v for k, v in metadata.items()}
        headers["x-amz-checksum-sha256"] = sha256_b64(data)
        lock = None
        if retention is not None and self.object_lock:
            lock = Retention(retention.mode, retention.until)
            headers["x-amz-sdk-checksum-algorithm"] = "SHA256"  # S3 wants it with a retention PUT
        if len(data) > _MAX_SINGLE_PUT:
            raise ObjectStoreError(f"object too large for one PUT key={key} size={len(data)}")
        # part_size >= length keeps it one PUT: the checksum header covers the whole body
        r = self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                                   metadata=headers, tags=t if tags else None, retention=lock,
                                   part_size=max(len(data), _MIN_PART))
        return PutResult(etag=str(r.etag or "").strip('"'), version_id=r.version_id)

    def get_object(self, key: str) -> bytes:
        resp = self.client.get_object(self.bucket, key)
        try:
            return bytes(resp.read())
        finally:
            resp.close()
            resp.release_conn()

    def stat_object(self, key: str) -> ObjectInfo | None:
        from minio.error import S3Error

        try:
            st = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise
        meta: dict[str, str] = {}
        for k, v in (st.metadata or {}).items():
            lk = k.lower()
            if lk.startswith("x-amz-meta-"):
                meta[lk[len("x-amz-meta-"):]] = v
        return ObjectInfo(key=key, size=int(st.size or 0), etag=str(st.etag or "").strip('"'),
                          content_type=str(st.content_type or ""), metadata=meta, version_id=st.version_id)

    def get_tags(self, key: str) -> dict[str, str]:
        t = self.client.get_object_tags(self.bucket, key)
        return dict(t or {})

    def get_retention(self, key: str) -> RetentionSpec | None:
        """Read from the object's headers (GET ``?retention`` is broken on the local S3
        server; the headers are what MinIO and S3 return too)."""
        st = self.client.stat_object(self.bucket, key)
        h = {k.lower(): v for k, v in (st.metadata or {}).items()}
        mode, until = h.get("x-amz-object-lock-mode"), h.get("x-amz-object-lock-retain-until-date")
        if not mode or not until:
            return None
        return RetentionSpec(mode, dt.datetime.fromisoformat(until.replace("Z", "+00:00")))

    def list_objects(self, prefix: str = "") -> Iterator[str]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if not obj.is_dir:
                yield obj.object_name


def audit_store_for(config: Any) -> MinioSegmentStore:
    """The audit bucket (chain records, access events): under object lock when the config
    asks for it. An audit bucket created earlier without object lock still works, with a
    warning: its records are then only as safe as its access policy."""
    audit = MinioSegmentStore.from_config(config.object_store)
    audit.bucket = config.object_store.audit_bucket
    try:
        audit.ensure_bucket()
    except ObjectStoreError as exc:
        if not audit.object_lock or "without object lock" not in str(exc):
            raise
        logger.warning("audit bucket %s has no object lock: chain records and audit events are not WORM there",
                       audit.bucket)
        audit.object_lock = False
    return audit
