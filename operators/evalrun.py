"""``veilstream eval``: the command's entry, on top of the evaluation modules.

Imports go one way: :mod:`operators.evaluation` (data sets, scoring, reports) is the core;
:mod:`operators.evalcache` (cached detections), :mod:`operators.evalsweep` (threshold and
geometry sweeps) and :mod:`operators.evalvideo` (moving-camera clips) build on it; this
module picks one of them from the command's arguments. Nothing imports this module but the
CLI, which does so only when ``eval`` runs (it loads the detectors' runtimes).
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from . import evalcache, ovsession
from .evaldata import default_eval_dir
from .evalsweep import run_sweep
from .evaluation import DATASETS, load_items, report_json, report_table, subset
from .evalvideo import run_video_eval
from .redactor import RedactionConfig, Redactor
from .types import InputError


def _parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def eval_config(args: Any) -> RedactionConfig:
    """The RedactionConfig ``veilstream eval`` measures: the product defaults for images
    (detect every frame), with the command's detection options and ``--set`` overrides."""
    kw: dict[str, Any] = {"classes": tuple(args.classes), "style": args.style, "detect_every": 1,
                          "providers": tuple(args.providers) if args.providers else None,
                          "model_dir": args.model_dir}
    if getattr(args, "face_model", None):
        kw["face_model"] = args.face_model
    if getattr(args, "face_max_side", None) is not None:
        kw["face_max_side"] = args.face_max_side or None
    if getattr(args, "precision", None) is not None:
        kw["precision"] = args.precision
    names = {f.name for f in fields(RedactionConfig)}
    for item in getattr(args, "overrides", None) or []:
        key, sep, value = str(item).partition("=")
        if not sep or key.strip() not in names:
            raise InputError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(names))}")
        kw[key.strip()] = _parse_value(value)
    return RedactionConfig(**kw).validate()


def dataset_names(spec: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of data set names, checked."""
    names = DATASETS if spec == "all" else tuple(str(spec).split(","))
    for n in names:
        if n not in DATASETS:
            raise InputError(f"unknown data set {n!r}; expected one of {', '.join(DATASETS)} or all")
    return names


def run_eval(args: Any) -> int:
    """CLI entry for ``veilstream eval``."""
    # Scores must not depend on timing: OpenVINO's static-shape compiles run in the calling
    # thread, so which compiled model serves a detection call is fixed by the call count.
    before = ovsession.synchronous_compiles()
    ovsession.set_synchronous_compiles(True)
    try:
        return _run_eval(args)
    finally:
        ovsession.set_synchronous_compiles(before)


def _run_eval(args: Any) -> int:
    eval_dir = Path(args.eval_dir) if args.eval_dir else default_eval_dir()
    if not eval_dir.is_dir():
        raise InputError(f"eval data folder {str(eval_dir)!r} not found; pass --eval-dir or set VEILSTREAM_EVAL_DIR")
    names = dataset_names(args.dataset)
    cfg = eval_config(args)
    limit = getattr(args, "limit", None)
    progress = sys.stderr.isatty()
    if getattr(args, "as_video", False):
        return run_video_eval(args, cfg, names, eval_dir, limit)
    if getattr(args, "sweep", False):
        return run_sweep(args, cfg, names, eval_dir, limit)
    cache_root = None if getattr(args, "no_cache", False) else Path(args.cache_dir or "out/eval_cache")
    comps = evalcache.components(cfg)
    th = evalcache.thresholds(cfg)
    reports = []
    for n in names:
        items = subset(load_items(n, eval_dir), limit)
        cache = evalcache.DetectionCache(cache_root, n, items, progress=progress)
        cached = cache.get(comps)
        reports.append(evalcache.score_setting(n, items, cache, cached, cfg, th,
                                               person_class="person" in cfg.classes))
    settings = {"classes": list(cfg.classes), "style": cfg.style, "face_padding": cfg.face_padding,
                "face_model": cfg.face_model, "face_max_side": cfg.face_max_side, "limit": limit,
                "thresholds": {k: v for k, v in th.items() if k in comps},
                "models": Redactor(cfg).model_ids if cache_root is None else None}
    print(report_table(reports))
    doc = report_json(reports, settings)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(doc, indent=2))
    else:
        print(json.dumps({k: v for k, v in doc.items()}))
    return 0
