"""`operators` and `schemas` are a library: importing them pulls in no Kafka, Ray or MinIO."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib, json, pkgutil, sys
import operators, schemas
for pkg in (operators, schemas):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
from operators.redactor import Redactor  # noqa
print(json.dumps(sorted(m for m in sys.modules
                        if m.split(".")[0] in {"confluent_kafka", "ray", "minio", "prometheus_client"})))
"""


def test_operators_and_schemas_import_without_infrastructure_clients():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_operators_import_when_infrastructure_clients_are_absent(tmp_path):
    # Shadow the packages with modules that raise on import: operators must not need them.
    for name in ("confluent_kafka", "ray", "minio"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('{name} is not installed here')\n")
    env_path = f"{tmp_path}"
    proc = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r}); " + CHECK],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_schemas_imports_neither_numpy_nor_operators():
    code = ("import sys, schemas, schemas.config, schemas.policy, schemas.messages, schemas.errors, "
            "schemas.yamlio; print(sorted(m for m in sys.modules if m.split('.')[0] in {'numpy', 'operators'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_operators_raise_the_schemas_error_classes():
    from operators import types
    from schemas import errors

    assert types.ConfigError is errors.ConfigError and types.VeilStreamError is errors.VeilStreamError


def test_test_module_basenames_are_unique() -> None:
    """pytest's default import mode refuses two test modules with one basename."""
    import collections
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    names = collections.Counter(p.name for p in root.rglob("test_*.py") if ".venv" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []
