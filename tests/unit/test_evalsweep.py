"""``veilstream eval --sweep``'s points: the defaults are on the curve they were chosen on."""

from __future__ import annotations

from dataclasses import replace

import pytest

from operators import evalcache
from operators.evalsweep import _settings
from operators.redactor import RedactionConfig


def test_face_sweep_holds_the_default_point_and_the_large_weak_box_family():
    cfg = replace(RedactionConfig(), classes=("face",))
    comps = evalcache.components(cfg)
    th0 = {k: v for k, v in evalcache.thresholds(cfg).items() if k in comps}
    pts = _settings("face", th0, cfg, set(comps))
    # the thresholds family has the defaults (CenterFace 0.05, YuNet 0.35 in the union) as a point
    assert th0["centerface"] == 0.05 and th0["yunet"] == 0.35
    assert any(th == th0 and c == cfg for p, (th, c) in pts if p.get("family") != "geometry")
    geo = [c for p, (th, c) in pts if p.get("family") == "geometry"]
    assert {c.face_large_px for c in geo} >= {None, 48.0, 64.0, 96.0}
    assert {c.face_large_min_score for c in geo} >= {0.1, 0.15, 0.3}
    assert cfg in geo  # the defaults among the geometry points too


def _res(even, ge20, area, *, odd=(40, 10, 0.2), coco=(0, 0.07), traffic=5):
    return {"faces_wider_hard/even": {"images": 120, "leaked": even, "leaked_ge20": ge20, "targets": 2507,
                                      "masked_area": area},
            "faces_wider_hard/odd": {"images": 120, "leaked": odd[0], "leaked_ge20": odd[1], "targets": 2590,
                                     "masked_area": odd[2]},
            "coco_val2017/all": {"images": 40, "leaked": coco[0], "targets": 40, "masked_area": coco[1]},
            "plates_traffic/all": {"images": 200, "leaked": traffic, "leaked_ge40": 0, "targets": 396,
                                   "masked_area": 0.1}}


def test_curve_halves_split_by_image_index():
    from operators.evalsweep import half

    items = list("abcde")
    assert half(items, "even") == [0, 2, 4] and half(items, "odd") == [1, 3] and half(items, "all") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="half: expected all, even or odd"):
        half(items, "first")


def test_curve_rule_takes_the_least_even_half_area_whose_leaks_do_not_rise():
    from operators.evalsweep import choose, full_set

    base = _res(42, 14, 0.191)
    pts = [({"head_padding": 0.0}, _res(42, 14, 0.189)),
           ({"face_shape": "rect", "face_padding": 0.1}, _res(49, 16, 0.180)),   # more even-half leaks
           ({"head_padding": 0.05}, _res(42, 15, 0.185)),                        # one more face >= 20 px
           ({"loose_text_max_height": 0.33}, _res(42, 14, 0.185)),               # a key never chosen
           ({"_ellipse_min_padding": 0.0}, _res(41, 14, 0.170)),                 # an experiment
           ({"head_min_score": 0.9}, _res(42, 14, 0.186, traffic=6)),            # another set leaks more
           ({"head_min_score": 0.5}, _res(42, 14, 0.187, odd=(47, 11, 0.2)))]    # the held-out half is not read
    assert choose(base, pts) == 6
    assert choose(base, pts[:1]) == 0
    assert choose(base, pts[1:5]) == -1  # nothing qualifies: the base stays
    assert choose(base, [({"head_padding": 0.0}, _res(42, 14, 0.186, coco=(0, 0.101)))]) == -1  # coco over 10 %
    f = full_set(_res(42, 14, 0.19, odd=(47, 11, 0.21)))
    assert (f["leaked"], f["leaked_ge20"], f["targets"]) == (89, 25, 5097) and f["masked_area"] == pytest.approx(0.2)


def test_curve_knobs_are_config_fields_and_walk_from_the_defaults():
    from dataclasses import fields

    from operators.evalsweep import CURVE_KNOBS, NOT_CHOSEN

    names = {f.name for f in fields(RedactionConfig)} | set(NOT_CHOSEN)
    cfg = RedactionConfig()
    for knob, points in CURVE_KNOBS:
        assert all(set(p) <= names for p in points), knob
        # every knob moves the defaults somewhere (a point equal to them is skipped by run_curve)
        assert any(replace(cfg, **{k: v for k, v in p.items() if hasattr(cfg, k)}) != cfg or set(p) & set(NOT_CHOSEN)
                   for p in points), knob
    # the head fallback's grid holds today's defaults and the ones before session 9
    head = dict(CURVE_KNOBS)["head fallback"]
    assert {"head_min_score": cfg.head_min_score, "head_padding": cfg.head_padding} in head
    assert {"head_min_score": 0.2, "head_padding": 0.1} in head
