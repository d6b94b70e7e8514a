"""The core fault scenarios on the real local stack, in ``make test`` (time budget ~3 min on
2 vCPU). ``make test-faults`` runs every scenario of :mod:`tests.faults.harness`.

Each scenario must end with every chunk accounted for (bucket, DLQ with a reason, or a
counted drop) and no face found by an independent detector (YuNet) in the stored frames.
"""

from __future__ import annotations

import os

import pytest

from tests.faults.harness import CORE, SCENARIOS, run_scenarios, table

pytestmark = pytest.mark.integration


def test_core_fault_scenarios_leak_nothing_and_lose_nothing(tmp_path, capsys):
    names = os.environ.get("VEILSTREAM_FAULTS", ",".join(CORE)).split(",")
    names = list(SCENARIOS) if names == ["all"] else names
    lines: list[str] = []
    results = run_scenarios(names, tmp_path, out=lines.append)
    with capsys.disabled():
        print("\n" + table(results))
    bad = [r for r in results if not r.ok]
    assert not bad, "\n".join(lines)
    assert all(r.frames_scanned > 0 for r in results if r.out), "nothing scanned"
