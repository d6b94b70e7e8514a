"""Streaming subcommands of ``veilstream``: config check, ingest, process, sink, up, down, run."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError, UsageError, VeilStreamError

from .cliconfig import CONFIG_ENV as CONFIG_ENV
from .cliconfig import config_arg as _config_arg
from .cliconfig import load_cli_config as load_cli_config

logger = logging.getLogger(__name__)

def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the config and build the process stage's masking plan (no Ray, no Kafka)."""
    from pipeline.process.plan import build_plan

    cfg = load_cli_config(args)
    plan = build_plan(cfg)  # policies valid, the default policy exists, thresholds reconciled
    n = len(plan.policies)
    pols = f", {n} polic{'y' if n == 1 else 'ies'}: {plan.describe()}"
    print(f"config ok: {args.config or 'default'} (kafka {cfg.kafka.bootstrap_servers}, "
          f"{len(cfg.ingest.cameras)} camera(s){pols})")
    return 0


def _policies_from(paths: list[Path]) -> dict[str, Any]:
    from schemas.policy import load_policies, load_policy

    out: dict[str, Any] = {}
    for path in paths:
        found = load_policies(path) if path.is_dir() else {(p := load_policy(path)).policy_id: p}
        for pid, pol in found.items():
            if pid in out:
                raise ConfigError(f"policy {pid!r} given twice ({path})")
            out[pid] = pol
    return out


def cmd_policy_check(args: argparse.Namespace) -> int:
    pols = _policies_from(args.paths)
    if not pols:
        raise ConfigError(f"no policies (*.yaml) in {', '.join(map(str, args.paths))}")
    for pid, p in sorted(pols.items()):
        roles = ", ".join(f"{r.name}:{'+'.join(r.read) or '-'}@{'|'.join(r.cameras)}" for r in p.roles) or "none"
        print(f"policy ok: {pid} v{p.version} classes={','.join(p.classes)} style={p.style} "
              f"on_failure={p.on_failure} retention={p.retention.redacted_days}d {p.retention.mode} "
              f"zones={len(p.zones)} roles={roles}")
    return 0


def cmd_policy_render(args: argparse.Namespace) -> int:
    """IAM-style documents per role (+ the sink's) and the bucket lifecycle, as JSON."""
    import json

    from pipeline.governance import lifecycle_rules
    from pipeline.governance.rules import documents_for

    cfg = load_cli_config(args)
    paths = args.paths or ([Path(cfg.policies_dir)] if cfg.policies_dir else [])
    if not paths:
        raise ConfigError("policies_dir is not set in the config: pass policy files or directories")
    pols = _policies_from(paths)
    os_ = cfg.object_store
    try:
        docs = documents_for(pols, bucket=os_.bucket, audit_bucket=os_.audit_bucket, raw_bucket=os_.raw_bucket)
    except ValueError as exc:
        raise ConfigError(f"roles: {exc}") from None
    from pipeline.console.access import console_document

    docs["veilstream-console"] = console_document(bucket=os_.bucket, audit_bucket=os_.audit_bucket)
    lifecycle = [{"id": r.rule_id, "tag": dict([r.tag]), "expire_days": r.days, "noncurrent_days": r.days}
                 for r in lifecycle_rules(pols.values())]
    if args.output_dir:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        for name, doc in docs.items():
            (args.output_dir / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.output_dir / "lifecycle.json").write_text(json.dumps(lifecycle, indent=2) + "\n")
        print(f"wrote {len(docs)} IAM policy document(s) and lifecycle.json to {args.output_dir}/ "
              f"(apply with: mc admin policy create ALIAS NAME FILE)")
    else:
        print(json.dumps({"iam_policies": docs, "lifecycle": lifecycle}, indent=2))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.ingest.worker import IngestWorker
    from pipeline.stage import stop_on_signals

    cfg = load_cli_config(args)
    return IngestWorker(cfg, stop_on_signals(), worker_id=args.worker_id).run()


def cmd_process(args: argparse.Namespace) -> int:
    from pipeline.process.worker import ProcessWorker
    from pipeline.stage import stop_on_signals

    if args.submit:  # production: a Ray job through the head's Jobs API (no Ray Client)
        from pipeline.process.submit import run_submitter

        if args.config is None:
            raise ConfigError("process --submit: pass --config FILE (it is uploaded with the job)")
        return run_submitter(args.config, args.submit, stop_on_signals(), name=args.job_name,
                             revision=args.job_revision)
    cfg = load_cli_config(args)
    if cfg.ray.consumers > 0:  # production: this is a Ray job; consumer actors own the partitions
        from pipeline.process.consumers import supervise

        return supervise(cfg, stop_on_signals())
    return ProcessWorker(cfg, stop_on_signals()).run()


def cmd_sink(args: argparse.Namespace) -> int:
    from pipeline.sinkapp import main as sink_main
    from pipeline.stage import stop_on_signals

    cfg = load_cli_config(args)
    return int(sink_main(cfg, stop_on_signals()) or 0)


def cmd_up(args: argparse.Namespace) -> int:
    from pipeline.devstack.stack import up

    state = up(state_dir=args.state_dir)
    print(f"local stack up: kafka {state.bootstrap}, s3 {state.s3_endpoint}; config {state.config_path}")
    print("stop it with: veilstream down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from pipeline.devstack.stack import down

    stopped = down(state_dir=args.state_dir)
    print(f"local stack down: stopped {stopped} process(es)")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download a redacted segment and check it against its manifest's sha256."""
    import hashlib
    import json

    from pipeline.objectstore import MinioSegmentStore

    cfg = load_cli_config(args)
    store = MinioSegmentStore.from_config(cfg.object_store)
    if args.list is not None:
        for key in store.list_objects(args.list):
            print(key)
        return 0
    if not args.key:
        raise ConfigError("fetch: give a segment KEY (list them with --list camera=)")
    if args.output is None:
        raise ConfigError("fetch: -o/--output FILE is required")
    data = store.get_object(args.key)
    man_key = args.key[:-4] + ".json" if args.key.endswith(".mp4") else None
    note = ""
    if man_key:
        try:
            man = json.loads(store.get_object(man_key))
        except Exception:  # noqa: BLE001 - a segment without manifest is reported, not hidden
            note = " (no manifest found: integrity not checked)"
        else:
            digest = hashlib.sha256(data).hexdigest()
            if digest != man.get("sha256"):
                from schemas.errors import InputError

                raise InputError(f"{args.key}: sha256 {digest} does not match its manifest ({man.get('sha256')})")
            note = f" (sha256 matches manifest; {man.get('frames')} frames, masks {man.get('masks_per_class')})"
    Path(args.output).write_bytes(data)
    print(f"{args.key} -> {args.output}, {len(data)} bytes{note}")
    return 0


_KIND_OF_SCHEME = {"rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http", "file": "file"}


def camera_kind_of(url: str) -> str:
    """The ``kind`` a camera URL implies: ``rtsp(s)://`` -> rtsp, ``http(s)://`` -> http,
    ``file://`` or a path (no scheme) -> file. Any other scheme is a ``UsageError`` asking
    for ``--kind`` (the URL is shown without credentials)."""
    from schemas.safety import redact_url

    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url)
    if m is None or "://" not in url or len(m.group(1)) == 1:  # a path (C:\... too)
        return "file"
    kind = _KIND_OF_SCHEME.get(m.group(1).lower())
    if kind is None:
        raise UsageError(f"cameras add: cannot tell the kind of {redact_url(url)[:200]!r} from its scheme "
                         f"{m.group(1)!r}: expected rtsp(s)://, http(s)://, file:// or a file path, or pass "
                         "--kind rtsp|http|file")
    return kind


def cmd_cameras(args: argparse.Namespace) -> int:
    """Manage the camera registry (the compacted cameras topic ingest workers shard)."""
    from pipeline.ingest.registry import publish_cameras, read_registry
    from schemas.config import CameraConfig, parse_camera
    from schemas.safety import redact_url
    from schemas.yamlio import read_yaml

    if args.cameras_command is None:
        raise ConfigError("cameras: expected a subcommand: list, add, import, remove")
    cfg = load_cli_config(args)
    if args.cameras_command == "list":
        # an unreachable broker: RegistryUnavailableError, one line naming it, exit 1
        registry = read_registry(cfg, timeout_s=args.timeout)
        for rcam in registry.values():
            state = "enabled" if rcam.enabled else "disabled"
            # a record written before credentials were refused may still hold them: never print them
            creds = f"\tcredentials_env={rcam.credentials_env}" if rcam.credentials_env else ""
            notice = "".join(f"\t{k}={v}" for k, v in sorted((rcam.notice or {}).items()))  # the signage text
            print(f"{rcam.camera_id}\t{rcam.kind}\t{state}\tpolicy={rcam.policy_id}\t{redact_url(rcam.url)}{creds}{notice}")
        print(f"{len(registry)} camera(s) in {cfg.kafka.topics.cameras}", file=sys.stderr)
        return 0
    if args.cameras_command == "add":
        rec: dict[str, Any] = {"camera_id": args.camera_id, "url": args.url,
                               "kind": args.kind or camera_kind_of(args.url)}
        for key in ("policy_id", "fps", "codec", "credentials_env"):
            if getattr(args, key) is not None:
                rec[key] = getattr(args, key)
        if args.loop:
            rec["loop"] = True
        if args.realtime:
            rec["realtime"] = True
        if args.disabled:
            rec["enabled"] = False
        notice_text = {k: getattr(args, k) for k in ("purpose", "scope", "contact") if getattr(args, k)}
        if notice_text:
            rec["notice"] = notice_text
        cams: list[CameraConfig] = [parse_camera(rec)]
    elif args.cameras_command == "import":
        doc = read_yaml(args.file, "cameras file")
        items = doc.get("cameras") if isinstance(doc, dict) else doc
        if not isinstance(items, list):
            raise ConfigError(f"cameras file {str(args.file)!r}: expected a list of cameras (or cameras: [...])")
        cams = []
        problems: list[str] = []
        for i, item in enumerate(items):
            try:
                if isinstance(item, dict) and "kind" not in item and isinstance(item.get("url"), str):
                    item = {**item, "kind": camera_kind_of(item["url"])}  # as `cameras add` does
                cams.append(parse_camera(item if isinstance(item, dict) else {}))
            except (ConfigError, UsageError) as exc:
                problems.append(f"cameras[{i}]: {str(exc).replace('cameras add: ', '', 1)}")
        if problems:
            raise ConfigError("; ".join(problems))
    elif args.cameras_command == "remove":
        from pipeline.governance.context import record_camera_change

        record_camera_change(cfg, "camera_remove", args.camera_ids, actor=args.actor)
        n = publish_cameras(cfg, [], remove=args.camera_ids)
        print(f"removed {n} camera(s) from {cfg.kafka.topics.cameras}; their ingest workers stop them")
        return 0
    else:
        raise ConfigError("cameras: expected a subcommand: list, add, import, remove")
    if cfg.policies_dir:  # a camera naming no written policy would only fill the DLQ
        from schemas.policy import load_policies

        known = load_policies(cfg.policies_dir)
        missing = sorted({c.policy_id for c in cams} - set(known))
        if missing:
            raise ConfigError(f"policy_id: {', '.join(map(repr, missing))} not in policies_dir {cfg.policies_dir} "
                              f"(found: {', '.join(sorted(known)) or 'none'}); write <policy_id>.yaml there first")
    from pipeline.governance.context import record_camera_change

    record_camera_change(cfg, "camera_add", [c.camera_id for c in cams], actor=args.actor,
                         details={c.camera_id: {"policy_id": c.policy_id, "notice": dict(c.notice or {})} for c in cams})
    n = publish_cameras(cfg, cams)
    print(f"published {n} camera record(s) to {cfg.kafka.topics.cameras}; ingest workers pick them up")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.runner import run_local

    return run_local(cameras=args.cameras, seconds=args.seconds, state_dir=args.state_dir,
                     config_path=args.config, keep_up=args.keep_up, segment_seconds=args.segment_seconds,
                     download_dir=args.download_dir)


def add_config(sub: Any) -> None:
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    c = csub.add_parser("check", help="validate a pipeline config and report every problem at once")
    _config_arg(c)
    c.set_defaults(func=cmd_config_check)


def add_policy(sub: Any) -> None:
    p = sub.add_parser("policy", help="de-identification policies: check them, render storage policies")
    psub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    c = psub.add_parser("check", help="validate policy files or directories, every problem at once")
    c.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="<policy_id>.yaml files or directories")
    c.set_defaults(func=cmd_policy_check)
    c = psub.add_parser("render", help="IAM-style JSON per role (and for the sink) plus bucket lifecycle rules")
    _config_arg(c)
    c.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="policies (default: the config's policies_dir)")
    c.add_argument("-o", "--output-dir", type=Path, default=None, help="write <name>.json files here")
    c.set_defaults(func=cmd_policy_render)


def add_ingest(sub: Any) -> None:
    p = sub.add_parser("ingest", help="read cameras and produce chunks to Kafka")
    _config_arg(p)
    p.add_argument("--worker-id", default=os.environ.get("HOSTNAME", ""), help="name of this worker in logs")
    p.set_defaults(func=cmd_ingest)


def add_process(sub: Any) -> None:
    p = sub.add_parser("process", help="redact chunks on Ray (raw topic -> redacted topic)")
    _config_arg(p)
    p.add_argument("--submit", metavar="URL", default=None,
                   help="run the stage as a Ray job through this dashboard (http://<head-svc>:8265); "
                        "this process only submits, watches and on SIGTERM stops it")
    p.add_argument("--job-name", default="veilstream-process",
                   help="submission id prefix with --submit (the config's hash is appended)")
    p.add_argument("--job-revision", default=None,
                   help="with --submit: the submitter's revision (the chart passes its pod-template-hash), part of "
                        "the submission id, so a rolling upgrade's new pod runs a second job beside the old one")
    p.set_defaults(func=cmd_process)


def add_sink(sub: Any) -> None:
    p = sub.add_parser("sink", help="write redacted segments to object storage")
    _config_arg(p)
    p.set_defaults(func=cmd_sink)


def add_up_down(sub: Any) -> None:
    for name, fn, text in (("up", cmd_up, "start the local stack (broker, S3 server) on free ports"),
                           ("down", cmd_down, "stop exactly what `veilstream up` started")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir", type=Path, default=None, help="where pids/ports/config live (.veilstream)")
        p.set_defaults(func=fn)


def add_cameras(sub: Any) -> None:
    p = sub.add_parser("cameras", help="list, add, import or remove cameras in the registry")
    csub = p.add_subparsers(dest="cameras_command", metavar="SUBCOMMAND")
    c = csub.add_parser("list", help="cameras as ingest workers see them")
    _config_arg(c)
    c.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the broker (default 10)")
    c = csub.add_parser("add", help="add or update one camera")
    _config_arg(c)
    c.add_argument("camera_id")
    c.add_argument("url", help="rtsp://..., http(s)://... or a file path")
    c.add_argument("--kind", default=None, choices=("rtsp", "http", "file"),
                   help="how to read the URL (default: from its scheme: rtsp(s):// -> rtsp, http(s):// -> http, "
                        "file:// or a path -> file)")
    c.add_argument("--policy-id", dest="policy_id", default=None)
    c.add_argument("--fps", type=float, default=None, help="sample to this rate (JPEG chunks)")
    c.add_argument("--codec", default=None, choices=("auto", "h264", "jpeg"))
    c.add_argument("--credentials-env", dest="credentials_env", default=None, metavar="ENV",
                   help="env var holding user:password for the URL (never put them in the URL itself)")
    c.add_argument("--loop", action="store_true", help="files: loop as a simulated camera")
    c.add_argument("--realtime", action="store_true", help="files: pace at the source rate")
    c.add_argument("--disabled", action="store_true", help="register it but do not read it")
    c.add_argument("--purpose", default=None, help="notice: why the camera records (stamped in every manifest)")
    c.add_argument("--scope", default=None, help="notice: where and when it records")
    c.add_argument("--contact", default=None, help="notice: the operator's contact for requests")
    c = csub.add_parser("import", help="add or update the cameras of a YAML file (a list, or cameras: [...])")
    _config_arg(c)
    c.add_argument("file", type=Path)
    c = csub.add_parser("remove", help="remove cameras (tombstones)")
    _config_arg(c)
    c.add_argument("camera_ids", nargs="+")
    p.set_defaults(func=cmd_cameras, cameras_command=None)
    for name, c in csub.choices.items():
        c.set_defaults(func=cmd_cameras, actor=None)
        if name != "list":
            c.add_argument("--actor", default=None, help="who acts, recorded in the audit event "
                                                         "(default $VEILSTREAM_ACTOR, else the OS user)")


def add_fetch(sub: Any) -> None:
    p = sub.add_parser("fetch", help="download a redacted segment (checked against its manifest)")
    _config_arg(p)
    p.add_argument("key", nargs="?", help="object key, e.g. camera=cam-001/date=.../hour=../<start>_<end>.mp4")
    p.add_argument("-o", "--output", type=Path, help="file to write")
    p.add_argument("--list", metavar="PREFIX", default=None, help="list object keys under PREFIX instead")
    p.set_defaults(func=cmd_fetch)


def cmd_console(args: argparse.Namespace) -> int:
    if args.hash_password:
        import getpass

        from pipeline.console.auth import hash_password

        pw = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        if not pw:
            raise VeilStreamError("console --hash-password: empty password")
        print(hash_password(pw))
        return 0
    if args.revoke_link:
        return _revoke_link(args)
    from pipeline.console.server import serve

    return serve(load_cli_config(args), host=args.host, port=args.port)


def _revoke_link(args: argparse.Namespace) -> int:
    """``console --revoke-link ID``: a released export's or shared segment's link stops working
    (the running console re-reads its links file), recorded first as ``share_revoke``."""
    from pipeline.console.links import revoke_from_cli
    from pipeline.governance.context import Governance

    cfg = load_cli_config(args)
    if not cfg.console.work_dir:
        raise VeilStreamError("console --revoke-link: console.work_dir is not set, so the console keeps its links in "
                              "memory: revoke the link in the console (job page, or POST /api/links/ID/revoke)")
    gov = Governance.from_config(cfg, actor=args.actor)
    try:
        link = revoke_from_cli(cfg.console.work_dir, args.revoke_link, gov.actor,
                               lambda action, **kw: gov.record(action, **kw))
    except LookupError as exc:
        raise VeilStreamError(f"console --revoke-link: {exc}") from None
    print(f"link {link.link_id} ({link.kind} {link.target}, case {link.case or '-'}, issued by {link.by}) revoked "
          f"by {link.revoked_by}; it now answers 410")
    return 0


def add_console(sub: Any) -> None:
    p = sub.add_parser("console", help="the web console: cameras, player, subject requests, cases, audit")
    _config_arg(p)
    p.add_argument("--host", default=None, help="listen address (default console.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default console.port, 8080; 0 = any)")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password from stdin, print its argon2 hash for console.users_file, exit")
    p.add_argument("--revoke-link", metavar="LINK_ID", default=None,
                   help="revoke a link the console handed out (released export or shared segment; its link_id is "
                        "in the share audit event), recorded as share_revoke, exit; needs console.work_dir")
    p.add_argument("--actor", default=None, help="with --revoke-link: who revokes, recorded "
                                                 "(default $VEILSTREAM_ACTOR, else the OS user)")
    p.set_defaults(func=cmd_console)


def add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run ingest, process and sink against the local stack")
    p.add_argument("--cameras", type=int, default=3, help="simulated cameras (sample videos looped)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long to stream (0 = until Ctrl-C)")
    p.add_argument("--state-dir", type=Path, default=None)
    p.add_argument("--config", type=Path, default=None, help="use this config instead of the local stack's")
    p.add_argument("--keep-up", action="store_true", help="leave the local stack running afterwards")
    p.add_argument("--segment-seconds", type=float, default=None,
                   help="segment length in the bucket (default: the config's, 60)")
    p.add_argument("--download-dir", type=Path, default=None,
                   help="download one redacted segment per camera here at the end")
    p.set_defaults(func=cmd_run)


COMMANDS = (add_config, add_policy, add_ingest, add_process, add_sink, add_up_down, add_cameras, add_fetch, add_run,
            add_console)
"""The streaming subcommands, in ``--help`` order (see :data:`pipeline.cli.COMMANDS`)."""

