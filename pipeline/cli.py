"""The ``veilstream`` command line.

Every command prints one clear line and exits non-zero on bad input (2 for invalid
arguments or configuration, 1 for unreadable input or a failed run); tracebacks are
shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from schemas.errors import (
    ConfigError,
    InputError,
    ModelNotFoundError,
    ProviderError,
    UsageError,
    VeilStreamError,
)
from schemas.safety import scrub_secrets

from .cliconfig import config_arg, load_cli_config

logger = logging.getLogger("veilstream")

EXIT_USAGE = 2
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _add_detection_args(p: argparse.ArgumentParser, default_classes: str = "face,plate") -> None:
    p.add_argument("--classes", type=_csv, default=_csv(default_classes),
                   help=f"comma-separated classes to mask: face,plate,person,text (default {default_classes}); "
                        "face includes the head-region fallback for persons whose face is not detected")
    p.add_argument("--style", default="mosaic", help="mask style: mosaic, blur or fill (default mosaic)")
    p.add_argument("--zones", type=Path, help="YAML file of static privacy zones (polygons always masked)")
    p.add_argument("--detect-every", type=int, default=None, metavar="N",
                   help="run detectors on every N-th frame and carry boxes in between (video; default 4; images: every one)")
    p.add_argument("--providers", type=_csv, default=None,
                   help="inference backend: onnxruntime execution providers, e.g. cuda,cpu, or openvino (OpenVINO on "
                        "CPU, every model); default auto: GPU when present, else per model OpenVINO where it is "
                        "faster on CPU, else onnxruntime")
    p.add_argument("--face-model", default=None,
                   help="face detector: centerface+yunet (union, default), centerface or yunet (fastest)")
    p.add_argument("--face-max-side", type=int, default=None, metavar="PX",
                   help="downscale frames whose longer side exceeds PX for face detection "
                        "(default 640; 0 = native)")
    p.add_argument("--model-dir", default=None,
                   help="directory holding model files (default $VEILSTREAM_MODEL_DIR, packages, cache)")
    p.add_argument("--precision", default=None, metavar="{int8,fp32,bf16}",
                   help="detector weights on CPU: int8 (default: int8 copies where they hold quality, today "
                        "the PP-OCRv4 text model only), fp32, or bf16 (OpenVINO sessions on a CPU with native "
                        "bf16: AMX / AVX-512 BF16); the default models and GPU providers run fp32, except the "
                        "full-frame text pass and CenterFace on frames of <= small_frame_side px, which run bf16 "
                        "where the CPU has it (fp32 here turns those off too)")


def _redaction_config(args: argparse.Namespace, detect_every_default: int) -> object:
    from operators.redactor import RedactionConfig

    optional: dict[str, Any] = {}
    if args.face_model:
        optional["face_model"] = args.face_model
    if args.face_max_side is not None:
        optional["face_max_side"] = args.face_max_side or None
    if args.precision is not None:
        optional["precision"] = args.precision
        if args.precision == "fp32":  # fp32 everywhere: also the text pass, whose default is bf16
            optional["text_full_precision"] = "fp32"
            optional["small_frame_centerface_precision"] = "fp32"  # and small frames' CenterFace
    return RedactionConfig(
        classes=tuple(args.classes),
        style=args.style,
        detect_every=args.detect_every if args.detect_every is not None else detect_every_default,
        providers=tuple(args.providers) if args.providers else None,
        model_dir=args.model_dir,
        **optional,
    ).validate()


def _check_output(output: Path, input_is_dir: bool) -> None:
    """Refuse an output that cannot be written before any work is done (one line)."""
    target = output if input_is_dir or output.is_dir() or str(output).endswith(("/", "\\")) else output.parent
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"output {str(output)!r}: {str(probe)!r} is a file, not a directory")
    if not os.access(probe, os.W_OK):
        raise InputError(f"output {str(output)!r}: {str(probe)!r} is not writable")


def _policy_redaction(args: argparse.Namespace, base: Any, zones: Any) -> tuple[Any, Any]:
    """``--policy FILE``: mask as the stream does for a camera under that policy (the plan comes
    from :func:`pipeline.process.plan.plan_from`, the stream's own path): its classes, style,
    strength, thresholds, padding and zones, on this command's detection settings."""
    from schemas.policy import load_policy

    from .process.plan import plan_from

    if tuple(args.classes) != _csv("face,plate") or args.style != "mosaic":
        raise UsageError("--policy sets the classes and the style: drop --classes / --style")
    pp = plan_from(load_policy(args.policy), base)
    own = pp.zone_set("")
    if own is not None and zones is not None:
        raise UsageError("--policy has zones of its own: drop --zones (or add them to the policy)")
    return pp.redaction, (own if own is not None else zones)


def _camera_redaction(args: argparse.Namespace) -> tuple[Any, Any]:
    """``--camera ID``: mask exactly as the stream masks that camera's chunks
    (:func:`pipeline.process.plan.camera_plan`): its record in the config, the policy it is
    routed to (or ``--policy FILE`` in that policy's place), the stream's detection settings
    and thresholds, the policy's and the camera's zones. Only where the models run is this
    machine's (``--providers``, ``--model-dir``)."""
    from dataclasses import replace

    from schemas.policy import load_policy

    from .process.plan import camera_plan

    given = {"--classes": tuple(args.classes) != _csv("face,plate"), "--style": args.style != "mosaic",
             "--zones": args.zones is not None, "--detect-every": args.detect_every is not None,
             "--face-model": bool(args.face_model), "--face-max-side": args.face_max_side is not None,
             "--precision": args.precision is not None, "--keep-subject": bool(args.keep_subject)}
    for flag, on in given.items():
        if on:
            raise UsageError(f"--camera masks as the stream does (config and policy decide): drop {flag}")
    policy = load_policy(args.policy) if args.policy else None
    pp, zones = camera_plan(load_cli_config(args), args.camera, policy=policy, model_dir=args.model_dir)
    red = pp.redaction
    if args.providers:
        red = replace(red, providers=tuple(args.providers)).validate()
    return red, zones


def cmd_redact(args: argparse.Namespace) -> int:
    from operators.zones import load_zones

    src = str(args.input)
    is_url = "://" in src
    if not is_url and not Path(src).exists():
        raise InputError(f"input {src!r} does not exist")
    if args.detect_every is not None and args.detect_every < 1:
        raise UsageError(f"--detect-every: expected an integer >= 1, got {args.detect_every}")
    if args.face_max_side is not None and args.face_max_side != 0 and args.face_max_side < 64:
        raise UsageError(f"--face-max-side: expected 0 (native size) or an integer >= 64, got {args.face_max_side}")
    if args.max_pixels < 4096:
        raise UsageError(f"--max-pixels: expected an integer >= 4096, got {args.max_pixels}")
    is_dir = not is_url and Path(src).is_dir()
    _check_output(args.output, is_dir)
    if getattr(args, "camera", None):
        cfg, zones = _camera_redaction(args)
        return _run_redaction(args, cfg, zones, src, is_dir)
    if args.keep_subject:
        from .governance.subjectfile import redact_file_keep_subject

        if is_dir:
            raise UsageError("--keep-subject: works on a video, not a directory of images")
        rep = redact_file_keep_subject(src, args.output, args.keep_subject, style=args.style,
                                       model_dir=args.model_dir, max_pixels=args.max_pixels)
        print(json.dumps(rep) if args.json else
              f"kept subject in {rep['subject_visible_frames']}/{rep['frames']} frames"
              + (f", track lost from frame {rep['track_lost_from_frame']}" if rep['track_lost_from_frame'] is not None
                 else "") + f"; masks {rep['masks_per_class']} -> {args.output} (report {rep['report']})")
        return 0
    cfg = _redaction_config(args, detect_every_default=1 if is_dir else 4)
    zones = load_zones(args.zones) if args.zones else None
    if getattr(args, "policy", None):
        cfg, zones = _policy_redaction(args, cfg, zones)
    return _run_redaction(args, cfg, zones, src, is_dir)


def _run_redaction(args: argparse.Namespace, cfg: Any, zones: Any, src: str, is_dir: bool) -> int:
    from operators.redactor import Redactor

    from .redact_file import DeferredRedactor, redact_images, redact_video

    progress = not args.quiet and sys.stderr.isatty() or args.progress
    # the process leaves with os._exit (see _exit_now): what it built is never freed
    kept: list[Any] | None = getattr(args, "keep_built", None)
    # A video's detectors are built by redact_video beside its first chunks' decoding.
    # Both run their independent detectors at once (Redactor(parallel=True)): the command owns
    # the machine's cores, unlike a detector actor sharing a node's.
    redactor = Redactor(cfg, zones=zones, parallel=True) if is_dir else DeferredRedactor(cfg, zones, keep=kept)
    if kept is not None:
        kept.append(redactor)
    try:
        if isinstance(redactor, Redactor):
            summary = redact_images(redactor, Path(src), args.output, progress=progress, max_pixels=args.max_pixels)
        else:
            summary = redact_video(redactor, src, args.output, keep_audio=args.keep_audio, progress=progress,
                                   max_pixels=args.max_pixels)
    except OSError as exc:  # the output cannot be written: one line, never a traceback
        raise InputError(f"output {str(args.output)!r}: {exc.strerror or exc}") from None
    print(summary.to_json() if args.json else summary.line())
    if summary.unreadable:
        print(f"veilstream redact: {len(summary.unreadable)} unreadable image(s) skipped: "
              f"{', '.join(summary.unreadable[:5])}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    # Lazy: the runner loads the detectors' runtimes (onnxruntime, OpenVINO, cv2); other
    # commands must not pay for that at start-up.
    from operators.evalrun import run_eval

    return run_eval(args)


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[Any]
else:  # not subscriptable at run time
    Subparsers = argparse._SubParsersAction
"""What a command's ``add_*`` function receives: ``sub.add_parser(name, ...)``."""


def add_redact(sub: Subparsers) -> None:
    p = sub.add_parser("redact", help="redact a video file (or URL) or a directory of images")
    p.add_argument("input", help="video file, URL (rtsp://, http://) or directory of images")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output .mp4 (or directory) for a video; output directory for images")
    _add_detection_args(p)
    p.add_argument("--policy", type=Path, default=None, metavar="FILE",
                   help="mask as the stream does under this policy YAML (classes, style, strength, thresholds, "
                        "padding, zones): the same plan the process stage makes from it")
    p.add_argument("--camera", default=None, metavar="ID",
                   help="mask exactly as the stream masks camera ID of the config (--config): the policy it is "
                        "routed to (or --policy FILE in its place), the stream's detection settings, the policy's "
                        "and the camera's zones")
    config_arg(p)
    p.add_argument("--keep-audio", action="store_true", help="copy the audio track (dropped by default)")
    p.add_argument("--max-pixels", type=int, default=16777216, metavar="N",
                   help="refuse frames/images larger than N pixels before decoding them (default 4096x4096)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    p.add_argument("--keep-subject", default=None, metavar="X,Y,W,H[@FRAME]",
                   help="a data-subject copy: mask every face, plate and person EXCEPT this person (box in pixels "
                        "on FRAME, default 0), tracked forward and backward; writes a JSON report next to OUT")
    p.set_defaults(func=cmd_redact)


def add_eval(sub: Subparsers) -> None:
    p = sub.add_parser("eval", help="measure leak rates on labelled images (see shared/eval/README.md)")
    p.add_argument("dataset", nargs="?", default="all",
                   help="faces_dlib, coco_val2017, plates_eu, plates_traffic, faces_wider_hard or all (default all)")
    p.add_argument("--eval-dir", type=Path, default=None,
                   help="folder holding the data sets (default $VEILSTREAM_EVAL_DIR or ../shared/eval)")
    _add_detection_args(p)
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON report here")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate N images spread evenly over each set (a quick subset)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where raw detections are cached (default out/eval_cache)")
    p.add_argument("--no-cache", action="store_true", help="detect afresh; do not read or write the cache")
    p.add_argument("--sweep", action="store_true",
                   help="sweep thresholds on cached detections: leak rate vs masked area per class "
                        "(JSON + PNG plot under --sweep-out)")
    p.add_argument("--sweep-out", type=Path, default=Path("out/sweep"), help="folder for sweep.json / sweep.png")
    p.add_argument("--sweep-family", dest="sweep_families", action="append", default=None,
                   choices=("thresholds", "geometry", "curve"),
                   help="sweep only this family of points (repeatable; default both): detector thresholds "
                        "and plate padding, or the mask geometry (head fallback gates and shape, face "
                        "padding, plate fallback shrink); 'curve': faces and plates masked together on "
                        "every set, the knobs that own the area walked one at a time, the default picked "
                        "on the even-indexed faces_wider_hard images (curve.json / curve.png)")
    p.add_argument("--as-video", action="store_true",
                   help="turn each image into a moving-camera H.264 clip, redact it with the video "
                        "defaults and score every frame")
    p.add_argument("--video-every", default="4", metavar="N[,N...]",
                   help="--detect-every values for --as-video (default 4; e.g. 1,2,4,8)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a RedactionConfig field (e.g. text_min_side=1280); repeatable")
    p.set_defaults(func=cmd_eval)


def all_commands() -> tuple[Callable[[Subparsers], None], ...]:
    """Every subcommand, in ``--help`` order. A new command is one ``add_<name>(sub)`` function
    (here or in :mod:`pipeline.commands`) listed in its module's ``COMMANDS``; the parser is
    built fresh on every :func:`main` from this list, so nothing accumulates between calls.
    The other modules' commands are imported here, not with this module: ``veilstream redact``
    builds only its own parser (:func:`_own_command`) and never imports them (``pipeline.ops``'
    ``importlib.metadata``, ``pipeline.governance``, ``pipeline.sizing``: ~35-60 ms on the main
    thread before decoding starts)."""
    from . import commands, ops
    from .governance import commands as governance_commands
    from .sizing import cli as sizing_cli

    return (add_redact, add_eval, *commands.COMMANDS, *ops.COMMANDS, *governance_commands.COMMANDS,
            *sizing_cli.COMMANDS)


_OWN_COMMANDS: dict[str, Callable[[Subparsers], None]] = {"redact": add_redact, "eval": add_eval}


def _own_command(argv: Sequence[str]) -> Callable[[Subparsers], None] | None:
    """The registrar of this module's own command that ``argv`` runs, when nothing but the
    top-level ``--debug`` and ``--log-level VALUE`` comes before it (a parser with only that
    command then parses ``argv`` exactly as the full one: the subcommand's own parser does the
    work); ``None`` otherwise (``-h``, an abbreviated option, another command: the full parser)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--debug" or arg.startswith("--log-level="):
            i += 1
        elif arg == "--log-level":
            i += 2
        else:
            return _OWN_COMMANDS.get(arg)
    return None


def __getattr__(name: str) -> Any:
    if name == "COMMANDS":  # the constant this list once was (tests and scripts extend it)
        return all_commands()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser(registrars: Sequence[Callable[[Subparsers], None]] | None = None) -> argparse.ArgumentParser:
    """The ``veilstream`` parser with ``registrars``' subcommands (default: :func:`all_commands`)."""
    parser = _Parser(prog="veilstream", description="De-identify CCTV footage: faces, plates, persons, text.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--log-level", default=os.environ.get("VEILSTREAM_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for register in all_commands() if registrars is None else registrars:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; its exit code. Run as the program (``argv`` None: ``sys.argv``), ``redact``
    leaves the process from here with :func:`_exit_now` instead of returning."""
    state: dict[str, Any] = {}
    rc = _main(argv, state)
    if argv is None and state.get("command") == "redact":
        _exit_now(rc)
    return rc


def _exit_now(rc: int) -> NoReturn:
    """End the process with ``rc`` now, as the interpreter would but without its teardown.

    After ``redact`` the output is written, closed and renamed into place; freeing the
    detectors' sessions (~0.4 s wall) and finalising the interpreter (0.35-0.67 s wall, both
    measured under load) do nothing the process needs. What a normal exit does first is done
    here too: ``threading``'s exit step joins the non-daemon threads (OpenVINO's static compiles
    run on such threads and write the compile cache), then every :mod:`atexit` hook
    runs (:mod:`operators.ovsession`'s compile join, ``logging.shutdown``, any library's), then
    the standard streams are flushed. ``os._exit`` skips only what comes after.
    """
    # threading's own exit step (what the interpreter calls first): stops the idle workers of
    # concurrent.futures pools, then joins every non-daemon thread
    shutdown: Callable[[], None] = getattr(threading, "_shutdown")  # noqa: B009
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say on it
            pass
    os._exit(rc)


def _main(argv: Sequence[str] | None, state: dict[str, Any]) -> int:
    args_in = list(argv if argv is not None else sys.argv[1:])
    own = _own_command(args_in)
    parser = build_parser(None if own is None else (own,))
    debug = "--debug" in args_in
    try:
        args = parser.parse_args(argv)
        state["command"] = args.command
        if argv is None and args.command == "redact":
            args.keep_built = state.setdefault("kept", [])  # alive until _exit_now
        logging.basicConfig(
            level=logging.DEBUG if args.debug else getattr(logging, str(args.log_level).upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except (UsageError, ConfigError, ProviderError) as exc:
        if debug:
            raise
        print(f"veilstream: error: {scrub_secrets(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (ModelNotFoundError, InputError, VeilStreamError) as exc:
        if debug:
            raise
        print(f"veilstream: error: {scrub_secrets(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("veilstream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
