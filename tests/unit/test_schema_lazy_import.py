"""jsonschema (and ``referencing``) load at the first schema validation, not with ``schemas``:
``veilstream redact`` validates no schema and never imports them; validation is unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from operators.video import sample_video

CHECK = """
import sys
{imports}
print(sorted(m for m in ("jsonschema", "referencing") if m in sys.modules))
"""


def _loaded(imports: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHECK.format(imports=imports)], capture_output=True, text=True,
                         timeout=120, check=True)
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))
    return loaded


def test_the_redact_path_imports_no_jsonschema():
    assert _loaded("import schemas, schemas.errors, schemas.safety, pipeline.cli, pipeline.redact_file, "
                   "operators.redactor, operators.detectors") == []


def test_the_first_validation_imports_it_and_validates_as_before():
    code = ("from schemas import problems\n"
            "p = problems('policy', {'policy_id': 'x', 'classes': ['face'], 'bogus': 1})\n"
            "assert p and any('bogus' in line for line in p), p\n"
            "assert problems('dlq_record', {}) != []\n")
    assert _loaded(code) == ["jsonschema", "referencing"]


RUN = """
import atexit, sys
atexit.register(lambda: print("LOADED", sorted(m for m in ("jsonschema", "referencing") if m in sys.modules)))
from pipeline.cli import main
sys.exit(main())
"""


def test_a_whole_redact_run_never_imports_jsonschema(tmp_path: Path):
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-c", RUN, "redact", str(sample_video("carphone_pristine.mp4")),
                           "-o", str(out), "--quiet", "--detect-every", "8"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.stat().st_size > 0
    assert "LOADED []" in proc.stdout.splitlines()
