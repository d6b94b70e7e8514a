"""Governance subcommands: raw-sink, vault, subject, case, share, share-open, hold, verify, audit.

Thin: each parses arguments, builds a :class:`~pipeline.governance.context.Governance` and
calls the API in :mod:`.export`, :mod:`.shares`, :mod:`.holds` and :mod:`.verify` (the console calls the same functions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from schemas.errors import UsageError

from .audit import ACTOR_ENV


def _config_arg(p: argparse.ArgumentParser) -> None:
    from pipeline.cliconfig import CONFIG_ENV

    p.add_argument("--config", type=Path, default=os.environ.get(CONFIG_ENV),
                   help=f"pipeline config YAML (default ${CONFIG_ENV}, or .veilstream/config.yaml)")


def _actor_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", default=None, help=f"who acts, recorded in the audit event (default ${ACTOR_ENV}, "
                                                 "else the OS user)")


def _interval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera", required=True, help="camera id")
    p.add_argument("--from", dest="t_from", required=True, help="start, ISO 8601 (2026-11-23T10:15:00Z) or epoch ms")
    p.add_argument("--to", dest="t_to", required=True, help="end, ISO 8601 or epoch ms")


def _gov(args: argparse.Namespace) -> Any:
    from pipeline.cliconfig import load_cli_config

    from .context import Governance

    return Governance.from_config(load_cli_config(args), actor=args.actor)


def cmd_raw_sink(args: argparse.Namespace) -> int:
    from pipeline.cliconfig import load_cli_config
    from pipeline.stage import stop_on_signals

    from .rawsink import run_raw_sink

    return run_raw_sink(load_cli_config(args), stop_on_signals())


def cmd_vault_keygen(args: argparse.Namespace) -> int:
    from .vault import make_key_file

    kid = make_key_file(args.file)
    print(f"master key written to {args.file} (mode 0600), key id {kid}; set raw_vault.key_file to it")
    return 0


def cmd_subject_export(args: argparse.Namespace) -> int:
    from .export import parse_subject, subject_export
    from .timeparse import parse_time

    subject = parse_subject(args.subject)
    gov = _gov(args)
    res = subject_export(gov, args.camera, parse_time(args.t_from), parse_time(args.t_to), subject,
                         case_id=args.case, output=args.output)
    r = res.report
    lost = r["track_lost_from_frame"]
    print(f"subject export -> {res.output} ({r['frames']} frames, subject visible in {r['subject_visible_frames']}, "
          f"masks {r['masks_per_class']}"
          + (f", track lost from frame {lost}: subject masked from there" if lost is not None else "")
          + f"); report {Path(res.output).with_suffix('.json')}; audit event {res.event_id}")
    return 0


def cmd_case_export(args: argparse.Namespace) -> int:
    from .export import case_export
    from .timeparse import parse_time

    gov = _gov(args)
    res = case_export(gov, args.camera, parse_time(args.t_from), parse_time(args.t_to), case_id=args.case,
                      legal_basis=args.legal_basis, official=args.official, output=args.output)
    print(f"case export (UNMASKED) -> {res.output} ({res.report['frames']} frames from "
          f"{len(res.report['raw_objects'])} raw object(s)); recorded as audit event {res.event_id}")
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    from .shares import share
    from .timeparse import iso, parse_duration

    gov = _gov(args)
    link = share(gov, args.key, ttl_s=parse_duration(args.ttl), case_id=args.case)
    print(link.url)
    print(f"valid until {iso(link.expires_at_ms)} for case {link.case_id}; recorded as audit event {link.event_id}",
          file=sys.stderr)
    return 0


def cmd_share_open(args: argparse.Namespace) -> int:
    from .shares import open_share

    n = open_share(args.url, args.output)
    print(f"{n} bytes -> {args.output}")
    return 0


ROLE_ENV = "VEILSTREAM_ROLE"


def cmd_hold(args: argparse.Namespace) -> int:
    from .holds import HOLD_ROLES, hold
    from .timeparse import parse_time

    if args.hold_command not in ("add", "remove"):
        raise UsageError("hold: expected add or remove")
    if not args.role:
        raise UsageError(f"hold {args.hold_command}: --role is required ({' or '.join(HOLD_ROLES)}; default "
                         f"${ROLE_ENV}): a case's hold is lifted only by the role that placed it")
    gov = _gov(args)
    res = hold(gov, args.camera, parse_time(args.t_from), parse_time(args.t_to), case_id=args.case,
               enable=args.hold_command == "add", role=args.role)
    if res.enabled:
        also = f"; {len(res.still_held)} of them also held for other cases" if res.still_held else ""
        print(f"legal hold set on {len(res.keys)} object(s) (segments, manifests, raw) for case {args.case} "
              f"(role {res.role}){also}; audit event {res.event_id}")
        return 0
    others = sorted({c for cs in res.still_held.values() for c in cs})
    print(f"legal hold of case {args.case} lifted from {len(res.keys)} object(s): {len(res.released)} released, "
          f"{len(res.still_held)} still held"
          + (f" for case(s) {', '.join(others[:10])}" if others else "")
          + (f"; {len(res.not_held)} object(s) of the interval not held by case {args.case}, left as they were"
             if res.not_held else "")
          + f"; audit event {res.event_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .verify import verify

    gov = _gov(args)
    rep = verify(gov, args.camera, args.date)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        for f in rep.findings:
            print(f.line())
        state = "OK" if rep.ok else f"FAILED ({len(rep.findings)} finding(s))"
        print(f"verify {args.camera} {args.date}: {state}: {rep.records} chain record(s), {rep.manifests} manifest(s), "
              f"{rep.segments_checked} segment(s) re-hashed")
    return 0 if rep.ok else 1


def cmd_audit(args: argparse.Namespace) -> int:
    from .context import audit_events

    gov = _gov(args)
    for ev in audit_events(gov, args.date):
        if args.json:
            print(json.dumps(ev, sort_keys=True))
        else:
            print(f"{ev['at']}\t{ev['action']}\t{ev['actor']}\tcase={ev.get('case_id') or '-'}\t"
                  f"camera={ev.get('camera_id') or '-'}\tobjects={len(ev.get('object_keys') or [])}")
    return 0


def add_raw_sink(sub: Any) -> None:
    p = sub.add_parser("raw-sink", help="write raw chunks of cameras whose policy keeps them to the encrypted vault")
    _config_arg(p)
    p.set_defaults(func=cmd_raw_sink)


def add_vault(sub: Any) -> None:
    p = sub.add_parser("vault", help="raw vault tools")
    vsub = p.add_subparsers(dest="vault_command", metavar="SUBCOMMAND")
    c = vsub.add_parser("keygen", help="create a local master key file (32 random bytes, hex, mode 0600)")
    c.add_argument("file", type=Path)
    c.set_defaults(func=cmd_vault_keygen)


def add_subject(sub: Any) -> None:
    p = sub.add_parser("subject", help="data-subject requests: export a person's own footage, others masked")
    ssub = p.add_subparsers(dest="subject_command", metavar="SUBCOMMAND")
    c = ssub.add_parser("export", help="render an interval from the raw vault with everyone but the subject masked")
    _config_arg(c)
    _actor_arg(c)
    _interval_args(c)
    c.add_argument("--subject", required=True, metavar="X,Y,W,H@T",
                   help="the subject's box (pixels) at time T (ISO 8601 or epoch ms) inside the interval")
    c.add_argument("--case", required=True, help="the request's reference")
    c.add_argument("-o", "--output", type=Path, required=True, help="output .mp4 (report: same name, .json)")
    c.set_defaults(func=cmd_subject_export)


def add_case(sub: Any) -> None:
    p = sub.add_parser("case", help="investigations: unmasked exports from the raw vault, recorded")
    csub = p.add_subparsers(dest="case_command", metavar="SUBCOMMAND")
    c = csub.add_parser("export", help="UNMASKED footage of an interval, for a documented request")
    _config_arg(c)
    _actor_arg(c)
    _interval_args(c)
    c.add_argument("--case", required=True, help="case id")
    c.add_argument("--legal-basis", required=True, help="the legal basis of the request (recorded)")
    c.add_argument("--official", required=True, help="the requesting official (name, office; recorded)")
    c.add_argument("-o", "--output", type=Path, required=True, help="output .mp4 (report: same name, .json)")
    c.set_defaults(func=cmd_case_export)


def add_share(sub: Any) -> None:
    p = sub.add_parser("share", help="a short-lived link to one redacted segment (never raw), recorded")
    _config_arg(p)
    _actor_arg(p)
    p.add_argument("key", help="redacted segment key camera=<id>/date=.../<start>_<end>.mp4")
    p.add_argument("--ttl", default="15m", help="validity, e.g. 15m, 1h (default 15m, at most 7d)")
    p.add_argument("--case", required=True, help="case or request id")
    p.set_defaults(func=cmd_share)
    p = sub.add_parser("share-open", help="download what a share link points to (refuses an expired link)")
    p.add_argument("url")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(func=cmd_share_open)


def add_hold(sub: Any) -> None:
    p = sub.add_parser("hold", help="legal hold on every segment, manifest and raw object of an interval")
    hsub = p.add_subparsers(dest="hold_command", metavar="add|remove")
    for name, text in (("add", "place the case's legal hold (storage then refuses deletion)"),
                       ("remove", "lift the case's legal hold (what other cases hold stays held)")):
        c = hsub.add_parser(name, help=text)
        _config_arg(c)
        _actor_arg(c)
        _interval_args(c)
        c.add_argument("--case", required=True, help="case id (a hold belongs to its case: lifting it for one "
                                                     "case never releases another case's hold)")
        c.add_argument("--role", default=os.environ.get(ROLE_ENV), choices=("investigator", "privacy-officer"),
                       help=f"the acting role, recorded (default ${ROLE_ENV}); only the role that placed a "
                            "case's hold may lift it")
        c.set_defaults(func=cmd_hold)


def add_verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="re-hash a camera-day's segments and manifest chain; name any tampering")
    _config_arg(p)
    _actor_arg(p)
    p.add_argument("--camera", required=True)
    p.add_argument("--date", required=True, help="YYYY-MM-DD (UTC)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)


def add_audit(sub: Any) -> None:
    p = sub.add_parser("audit", help="list recorded access events (exports, shares, holds, ...)")
    asub = p.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    c = asub.add_parser("list", help="events of a day (default: all)")
    _config_arg(c)
    _actor_arg(c)
    c.add_argument("--date", default=None, help="YYYY-MM-DD")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_audit)


COMMANDS = (add_raw_sink, add_vault, add_subject, add_case, add_share, add_hold, add_verify, add_audit)
"""The governance subcommands (listed in :data:`pipeline.cli.COMMANDS`)."""
