"""Leaked faces_wider_hard faces per half of the set (even / odd image index, session 8's split)
from ``veilstream eval all --json-out`` reports, one line per report, plus every other set's
leaks and masked area (docs/performance.md "Session 9: detection per 720p frame").

    .venv/bin/python load_tests/leaks_by_half.py REPORT.json [REPORT.json ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPLIT_SET = "faces_wider_hard"


def by_half(report: dict[str, Any], order: dict[str, int]) -> dict[str, Any]:
    """The split set's face leaks (all, >= 20 px wide) per half, and the other sets' figures."""
    sets = {d["dataset"]: d for d in report["datasets"]}
    leaks = [lk for lk in sets[SPLIT_SET]["leaks"] if lk["cls"] == "face"]

    def count(half: int | None) -> tuple[int, int]:
        got = [lk for lk in leaks if half is None or order[lk["image"]] % 2 == half]
        return len(got), sum(1 for lk in got if lk["box"][2] - lk["box"][0] >= 20)

    return {"all": count(None), "even": count(0), "odd": count(1), "area": sets[SPLIT_SET]["masked_area_share"],
            "others": {name: ([c["leaked"] for c in d["classes"] if c["cls"] in ("face", "plate")][0],
                              d["masked_area_share"]) for name, d in sets.items() if name != SPLIT_SET}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path)
    args = ap.parse_args()
    from operators.evaldata import default_eval_dir

    labels = json.loads((default_eval_dir() / SPLIT_SET / "labels.json").read_text())
    order = {im["file"]: i for i, im in enumerate(labels["images"])}
    for path in args.reports:
        r = by_half(json.loads(path.read_text()), order)
        print(f"{path.stem:<24} {SPLIT_SET} leaked {r['all'][0]} (>= 20 px {r['all'][1]}), even {r['even'][0]} "
              f"({r['even'][1]}), odd {r['odd'][0]} ({r['odd'][1]}), masked {100 * r['area']:.2f} %; "
              + ", ".join(f"{k} {n} leaked {100 * a:.2f} %" for k, (n, a) in r["others"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
