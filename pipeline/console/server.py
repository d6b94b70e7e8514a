"""``veilstream console --config cfg.yaml [--host H] [--port P]``: build the services from the
pipeline config and serve the app with uvicorn.

S3 credentials: the console reads footage for a user with the credentials of the role
that grants the read (``console.s3_credentials.<role>``: the least that role needs, i.e.
that role's documents from ``veilstream policy render``); a role without an entry, and the
camera list / status view, use ``object_store``'s credentials. In production give those
the status-only document (list the bucket, read ``*.json`` manifests, write the audit
bucket) and one entry per role.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Mapping
from typing import Any

from schemas.errors import ConfigError

from .access import AccessControl, Buckets
from .app import Services, create_app
from .audit import AuditLog
from .auth import LocalUsers, build_oauth, load_users, read_secret
from .catalog import Catalog
from .jobs import JobManager

logger = logging.getLogger(__name__)


def _store(cfg: Any, bucket: str, creds: Mapping[str, Any] | None = None, object_lock: bool | None = None) -> Any:
    from pipeline.sink.objectstore import MinioSegmentStore

    os_ = cfg.object_store
    c = dict(creds or {})
    return MinioSegmentStore(
        os_.endpoint, bucket, secure=os_.secure, region=os_.region,
        object_lock=os_.object_lock if object_lock is None else object_lock,
        access_key_env=c.get("access_key_env", os_.access_key_env),
        secret_key_env=c.get("secret_key_env", os_.secret_key_env),
        access_key_file=c.get("access_key_file", None if creds else os_.access_key_file),
        secret_key_file=c.get("secret_key_file", None if creds else os_.secret_key_file))


class _AuditStore:
    """The audit bucket: created on first use (object lock like the redacted bucket), never
    the 'exists without lock' refusal of the sink's store (governance may own its setup)."""

    def __init__(self, store: Any) -> None:
        self.s = store

    def ensure_bucket(self) -> None:
        c = self.s.client
        if not c.bucket_exists(self.s.bucket):
            try:
                c.make_bucket(self.s.bucket, location=self.s.region, object_lock=self.s.object_lock)
            except Exception:  # noqa: BLE001 - a concurrent writer created it first
                if not c.bucket_exists(self.s.bucket):
                    raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.s, name)


def build_services(cfg: Any, *, registry: Any = "kafka", governance: Mapping[str, Any] | None = None) -> Services:
    """Services for :func:`create_app` from a :class:`schemas.config.PipelineConfig`."""
    from schemas.policy import load_policies

    con = cfg.console
    if not cfg.policies_dir:
        raise ConfigError("the console needs policies_dir: roles come from the policies' role documents")
    policies = load_policies(cfg.policies_dir)
    buckets = Buckets(cfg.object_store.bucket, cfg.object_store.audit_bucket, cfg.object_store.raw_bucket)
    if registry == "kafka":
        from pipeline.ingest.registry import read_registry

        def registry() -> Any:
            return read_registry(cfg, timeout_s=5.0)
    status_store = _store(cfg, buckets.redacted)
    catalog = Catalog(status_store, registry,
                      streaming_within_s=2 * cfg.sink.segment_seconds + cfg.sink.idle_flush_s + 30)
    access = AccessControl(policies, buckets, camera_policy=catalog.policy_of)
    audit = AuditLog(_AuditStore(_store(cfg, buckets.audit)), publish=_kafka_publisher(cfg))
    users = LocalUsers(load_users(con.users_file)) if con.users_file else None
    oauth = build_oauth(con.oidc)
    if users is None and oauth is None:
        raise ConfigError("console: nobody can sign in: set console.users_file or console.oidc.issuer")
    secret = read_secret(con.session_secret_file, con.session_secret_env)
    if not secret:
        logger.warning("console: no session secret configured (console.session_secret_file or $%s): "
                       "a random one is used, sessions end when the console restarts", con.session_secret_env)
        secret = secrets.token_urlsafe(32)
    stores: dict[str, Any] = {}
    lock = threading.Lock()

    def store_for(role: str) -> Any:
        with lock:
            if role not in stores:
                creds = (con.s3_credentials or {}).get(role)
                stores[role] = _store(cfg, buckets.redacted, creds) if creds else status_store
            return stores[role]

    return Services(access=access, catalog=catalog, audit=audit, jobs=JobManager(con.work_dir), users=users,
                    stores=store_for, oauth=oauth, oidc=con.oidc, share_ttl_s=con.share_ttl_s,
                    public_url=con.public_url, secret_key=secret, governance=dict(governance or {}))


def _kafka_publisher(cfg: Any) -> Any:
    """Audit events also go to ``veil.audit`` (keyed by camera); delivery is awaited briefly,
    the audit bucket holds the durable copy either way."""
    import json

    from pipeline.kafka import ChunkProducer, Delivery, kafka_settings

    state: dict[str, Any] = {}

    def done(d: Delivery) -> None:
        if d.error:
            logger.warning("audit event not delivered to %s: %s", cfg.kafka.topics.audit, d.error)

    def publish(ev: Mapping[str, Any]) -> None:
        if "p" not in state:
            state["p"] = ChunkProducer(cfg.kafka.bootstrap_servers, client_id="veil-console",
                                       extra=kafka_settings(cfg.kafka))
        # asynchronous: a slow broker never delays a page; the bucket copy is already durable
        state["p"].produce(cfg.kafka.topics.audit, json.dumps(ev, sort_keys=True).encode("utf-8"),
                           str(ev.get("camera_id") or ""), [("kind", b"AccessEvent")], on_done=done)

    return publish


def build_app(cfg: Any, **kw: Any) -> Any:
    svc = build_services(cfg, **kw)
    return create_app(svc, secure_cookies=cfg.console.secure_cookies,
                      session_max_age_s=cfg.console.session_max_age_s)


def serve(cfg: Any, host: str | None = None, port: int | None = None) -> int:
    import uvicorn

    app = build_app(cfg)
    h, p = host or cfg.console.host, port if port is not None else cfg.console.port
    logger.info("console listening on http://%s:%d", h, p)
    uvicorn.run(app, host=h, port=p, log_level="warning", proxy_headers=True, server_header=False)
    return 0
