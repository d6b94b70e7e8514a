"""``veilstream eval --sweep``'s points: the defaults are on the curve they were chosen on."""

from __future__ import annotations

from dataclasses import replace

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
