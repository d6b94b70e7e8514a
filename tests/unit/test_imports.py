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


# --- The import graph: no cycles, nothing imports upward (issue 21) -------------------------
#
# Built from the source with `ast`, so an import inside a function counts as much as one at
# the top of a module: a function-level import hides a cycle from Python, not from this test.
# `from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg`. The
# parent packages Python also runs on `import a.b.c` are not edges: a package's
# `__init__` importing its own submodules is the normal pattern, not a loop.
#
# Layers, lowest first; a module may import its own layer or a lower one, never a higher one:
#   schemas/    < operators/ < pipeline/      (STYLE.md "Imports go one way")
# and inside pipeline/ (a module belongs to the longest prefix listed):
PIPELINE_LAYERS: tuple[tuple[str, ...], ...] = (
    # 0 base: clients and skeletons every stage shares; they know no stage
    ("pipeline", "pipeline.kafka", "pipeline.metrics", "pipeline.offsets", "pipeline.topics",
     "pipeline.stage", "pipeline.runtime", "pipeline.raynet", "pipeline.objectstore",
     "pipeline.objectkeys", "pipeline.cliconfig", "pipeline.install_check"),
    # 1 the stages and the domains beside them; they import the base and each other (no loops)
    ("pipeline.ingest", "pipeline.process", "pipeline.sink", "pipeline.governance",
     "pipeline.sizing", "pipeline.redact_file"),
    # 2 what assembles stages into something that runs: the local stack, the console,
    #   the in-process runner, the deployed sink with its governance plug-ins
    ("pipeline.devstack", "pipeline.console", "pipeline.runner", "pipeline.sinkapp"),
    # 3 entry points: the CLI and its command modules, the demo; nothing imports these
    ("pipeline.cli", "pipeline.commands", "pipeline.ops", "pipeline.demo"),
)

ALLOWED_EDGES: dict[tuple[str, str], str] = {}
"""Edges the rules below tolerate, each with its reason. An entry whose edge is gone fails
the test too, so the list only shrinks."""

PACKAGES = ("schemas", "operators", "pipeline")
PACKAGE_ORDER = {name: i for i, name in enumerate(PACKAGES)}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _import_graph() -> dict[str, dict[str, int]]:
    """Module -> {imported project module: first line}, every import in the file counted."""
    import ast

    modules = _modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                found = known(target)
                if found is not None and found != mod:
                    edges.setdefault(found, node.lineno)
        graph[mod] = edges
    return graph


def _layer(mod: str) -> int:
    best, layer = "", -1
    for i, names in enumerate(PIPELINE_LAYERS):
        for name in names:
            if (mod == name or mod.startswith(name + ".")) and len(name) > len(best):
                best, layer = name, i
    return layer


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _checked_graph() -> dict[str, dict[str, int]]:
    graph = _import_graph()
    stale = [edge for edge in ALLOWED_EDGES if edge[1] not in graph.get(edge[0], {})]
    assert stale == [], f"allowed edges that no longer exist (remove them from ALLOWED_EDGES): {stale}"
    return {m: {t: n for t, n in out.items() if (m, t) not in ALLOWED_EDGES} for m, out in graph.items()}


def test_no_import_cycles_among_modules():
    graph = _checked_graph()
    problems = []
    for comp in _cycles(graph):
        inside = [f"{m}:{graph[m][t]} -> {t}" for m in comp for t in sorted(graph[m]) if t in comp]
        problems.append(f"cycle {comp}: " + "; ".join(inside))
    assert problems == [], "\n".join(problems)


def _unit(mod: str) -> str:
    """The entry of PIPELINE_LAYERS a pipeline module belongs to (a sub-package or a module)."""
    names = [n for layer in PIPELINE_LAYERS for n in layer if mod == n or mod.startswith(n + ".")]
    return max(names, key=len) if names else mod


def test_no_import_cycles_among_pipeline_packages():
    """Sub-packages may depend on each other one way only (issue 21: the sink and governance
    imported each other, module by module without a loop, package by package in one)."""
    graph = _checked_graph()
    units: dict[str, dict[str, str]] = {}  # unit -> {imported unit: one module-level example}
    for mod, out in sorted(graph.items()):
        if mod.startswith("pipeline."):
            edges = units.setdefault(_unit(mod), {})
            for target, line in sorted(out.items()):
                if target.startswith("pipeline.") and _unit(target) != _unit(mod):
                    edges.setdefault(_unit(target), f"{mod}:{line} -> {target}")
    for out in list(units.values()):
        for target in out:
            units.setdefault(target, {})
    problems = []
    for comp in _cycles({u: {t: 0 for t in out} for u, out in units.items()}):
        inside = [f"{u} -> {t} ({units[u][t]})" for u in comp for t in sorted(units[u]) if t in comp]
        problems.append(f"cycle {comp}: " + "; ".join(inside))
    assert problems == [], "\n".join(problems)


def _upward(graph: dict[str, dict[str, int]]) -> list[str]:
    out = []
    for mod, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            a, b = mod.split(".")[0], target.split(".")[0]
            if PACKAGE_ORDER[a] < PACKAGE_ORDER[b] or (a == b == "pipeline" and _layer(mod) < _layer(target)):
                out.append(f"{mod}:{line} imports {target}")
    return out


def test_imports_go_one_way():
    graph = _checked_graph()
    unplaced = sorted(m for m in graph if m.startswith("pipeline") and _layer(m) < 0)
    assert unplaced == [], f"pipeline modules with no layer in PIPELINE_LAYERS: {unplaced}"
    upward = _upward(graph)
    assert upward == [], "imports going upward:\n" + "\n".join(upward)


def test_the_import_graph_sees_hidden_and_relative_imports(tmp_path, monkeypatch):
    """The checks above can fail: a loop hidden in a function, through a relative import,
    and an upward import are all found on a throw-away package tree."""
    pkg = tmp_path / "pipeline"
    (pkg / "sink").mkdir(parents=True)
    (tmp_path / "schemas").mkdir()
    (tmp_path / "operators").mkdir()
    (tmp_path / "schemas" / "__init__.py").write_text("")
    (tmp_path / "operators" / "__init__.py").write_text("def f():\n    import pipeline.kafka\n")
    (pkg / "__init__.py").write_text("")
    (pkg / "kafka.py").write_text("def f():\n    from .sink import worker\n")
    (pkg / "sink" / "__init__.py").write_text("from . import worker\n")
    (pkg / "sink" / "worker.py").write_text("from ..kafka import f\n")
    (pkg / "cli.py").write_text("from pipeline.sink import worker\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = _import_graph()
    assert graph["pipeline.sink"] == {"pipeline.sink.worker": 1}
    assert graph["pipeline.cli"] == {"pipeline.sink.worker": 1}
    assert _cycles(graph) == [["pipeline.kafka", "pipeline.sink.worker"]]
    assert _upward(graph) == ["operators:2 imports pipeline.kafka", "pipeline.kafka:2 imports pipeline.sink.worker"]
    assert _layer("pipeline.kafka") < _layer("pipeline.sink.worker") < _layer("pipeline.cli")
