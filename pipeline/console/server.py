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
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError

from .access import AccessControl, Buckets
from .app import Services, create_app
from .audit import AuditLog
from .auth import LocalUsers, build_oauth, read_secret
from .catalog import Catalog
from .jobs import JobManager
from .links import LinkRegistry
from .sessions import SessionStore

logger = logging.getLogger(__name__)


def _store(cfg: Any, bucket: str, creds: Mapping[str, Any] | None = None, object_lock: bool | None = None) -> Any:
    from pipeline.objectstore import MinioSegmentStore

    os_ = cfg.object_store
    c = dict(creds or {})
    return MinioSegmentStore(
        os_.endpoint, bucket, secure=os_.secure, region=os_.region,
        object_lock=os_.object_lock if object_lock is None else object_lock,
        access_key_env=c.get("access_key_env", os_.access_key_env),
        secret_key_env=c.get("secret_key_env", os_.secret_key_env),
        access_key_file=c.get("access_key_file", None if creds else os_.access_key_file),
        secret_key_file=c.get("secret_key_file", None if creds else os_.secret_key_file))


def build_services(cfg: Any, *, registry: Any = "kafka", governance: Mapping[str, Any] | None = None,
                   kafka: bool = True) -> Services:
    """Services for :func:`create_app` from a :class:`schemas.config.PipelineConfig`.

    ``registry``: ``"kafka"`` (the ``veil.cameras`` topic) or a function returning the
    records; ``governance``: replacement functions (tests), else the real governance API;
    ``kafka=False``: audit events go to the audit bucket only.
    """
    from schemas.policy import load_policies

    con = cfg.console
    if not cfg.policies_dir:
        raise ConfigError("the console needs policies_dir: roles come from the policies' role documents")
    policies = load_policies(cfg.policies_dir)
    # the console's own settings first: a bad one is reported before any storage is touched
    users = LocalUsers.from_file(con.users_file) if con.users_file else None  # re-read within 30 s of a change
    oauth = build_oauth(con.oidc)
    if users is None and oauth is None:
        raise ConfigError("console: nobody can sign in: set console.users_file or console.oidc.issuer")
    buckets = Buckets(cfg.object_store.bucket, cfg.object_store.audit_bucket, cfg.object_store.raw_bucket)
    if registry == "kafka":
        from pipeline.ingest.registry import read_registry

        def registry() -> Any:
            return read_registry(cfg, timeout_s=5.0)
    status_store = _store(cfg, buckets.redacted)
    catalog = Catalog(status_store, registry,
                      streaming_within_s=2 * cfg.sink.segment_seconds + cfg.sink.idle_flush_s + 30)
    access = AccessControl(policies, buckets, camera_policy=catalog.policy_of)
    gov_fns: dict[str, Any] = {}
    if governance is None:
        from pipeline.governance.context import Governance

        from .exports import GovernanceBridge

        gov = Governance.from_config(cfg, actor="console", kafka=kafka)
        gov.registry = lambda: catalog.registry()[0]  # the console's cached copy of the registry
        gov_fns = GovernanceBridge(gov).functions()
        audit = AuditLog(gov.audit_store, gov.audit)
    else:
        gov_fns = dict(governance)
        from pipeline.objectstore import audit_store_for

        audit = AuditLog(audit_store_for(cfg))
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

    # sessions are server-side (sign-out and removed users end them); kept beside the jobs in
    # console.work_dir so they survive a restart, in memory without one
    if not con.work_dir:
        logger.info("console: no console.work_dir: sessions are kept in memory, a restart signs everybody out")
    sessions = SessionStore(Path(con.work_dir) / "sessions.json" if con.work_dir else None, con.session_max_age_s)
    # links handed out (released exports, shared segments), revocable; `veilstream console
    # --revoke-link` edits the same file
    links = LinkRegistry(Path(con.work_dir) / "links.json" if con.work_dir else None)
    return Services(access=access, catalog=catalog, audit=audit, jobs=JobManager(con.work_dir), users=users,
                    stores=store_for, oauth=oauth, oidc=con.oidc, share_ttl_s=con.share_ttl_s,
                    public_url=con.public_url, secret_key=secret, governance=gov_fns, sessions=sessions,
                    links=links)


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
