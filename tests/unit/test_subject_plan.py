"""A subject export masks through the camera's policy plan (issue 21: one plan from one policy)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from operators.subject import SUBJECT_CLASSES
from pipeline.governance.export import subject_plan_redactor
from schemas.policy import parse_policy

BOOTH = {"name": "booth", "polygon": [[0, 0], [0.25, 0], [0.25, 0.25], [0, 0.25]], "normalized": True}
DOOR = {"name": "door", "polygon": [[0.75, 0.75], [1, 0.75], [1, 1], [0.75, 1]], "normalized": True}


class _Gov:
    def __init__(self, zones: tuple[dict[str, Any], ...]) -> None:
        self._zones = zones

    def camera(self, camera_id: str) -> Any:
        return SimpleNamespace(camera_id=camera_id, zones=self._zones)


@pytest.fixture(autouse=True)
def _models(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.shared import MODELS

    monkeypatch.setenv("VEILSTREAM_MODEL_DIR", str(MODELS))


def test_the_policy_thresholds_padding_style_and_zones_reach_the_subject_masker() -> None:
    pol = parse_policy({"policy_id": "lobby", "classes": ["face"], "style": "blur", "strength": 0.7,
                        "thresholds": {"face": 0.33, "person": 0.41}, "padding": {"face": 0.45},
                        "zones": [BOOTH]})
    red = subject_plan_redactor(_Gov((DOOR,)), "cam-1", pol)  # type: ignore[arg-type]
    c = red.config
    assert (c.style, c.strength, c.face_threshold, c.person_threshold, c.face_padding) == ("blur", 0.7, 0.33, 0.41,
                                                                                            0.45)
    # what following the subject needs, whatever the stream masks for this camera
    assert tuple(c.classes) == SUBJECT_CLASSES and c.detect_every == 1
    mask = red.zones.mask(100, 100)
    assert mask[10, 10] and mask[90, 90] and not mask[50, 50]  # the policy's zone and the camera's own


def test_a_policy_without_zones_gives_a_masker_without_zones() -> None:
    pol = parse_policy({"policy_id": "street", "classes": ["face", "plate"]})
    assert subject_plan_redactor(_Gov(()), "cam-2", pol).zones is None  # type: ignore[arg-type]
