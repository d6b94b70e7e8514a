"""JSON Schemas for config, policies and wire messages, and the Python that applies them.

The ``*.schema.json`` files next to this module are the single source of truth: the
same files validate the YAML config, the Helm ``pipeline:`` values block, policies and
every Kafka message header. This module loads them (package resources, no network),
fills their ``default`` values, and turns every validation error into one readable
line with a dotted path (``process.detect_every: expected integer >= 1, got 'x'``).

Imports: stdlib, yaml and jsonschema only (errors live in :mod:`schemas.errors`), so
``import schemas`` never loads numpy or anything of ``operators``.

Typed views live in :mod:`schemas.config` (``parse_config``, ``load_config``) and
:mod:`schemas.messages` (``encode_chunk``, ``decode_chunk_captured``, ...).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from .errors import SchemaError

__all__ = [
    "SCHEMA_NAMES",
    "SCHEMA_VERSION",
    "SchemaError",
    "fill_defaults",
    "load_schema",
    "problems",
]

SCHEMA_VERSION = 1
"""The one wire/config layout version this code reads and writes."""

SCHEMA_NAMES = ("camera", "chunk_captured", "chunk_redacted", "config", "dlq_record", "policy")

_BASE_URI = "https://veilstream.dev/schemas/"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed ``<name>.schema.json`` (cached; callers must not mutate it)."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@functools.cache
def _registry() -> Registry:
    return Registry().with_resources(
        (_BASE_URI + f"{n}.schema.json", Resource.from_contents(load_schema(n))) for n in SCHEMA_NAMES
    )


def _ecma_pattern(pattern: str) -> re.Pattern[str]:
    """JSON Schema patterns are ECMA-262 regexes, where ``$`` (without the m flag) is the
    end of the input. Python's ``$`` also matches before a final newline, so ``"cam\\n"``
    would pass ``^[a-z]+$``: translate a closing ``$`` to ``\\Z``."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return _compiled(pattern)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _pattern_keyword(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string") and not _ecma_pattern(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_StrictValidator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern_keyword})


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return _StrictValidator(load_schema(name), registry=_registry())


# ---------------------------------------------------------------- defaults


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Follow ``$ref`` (local ``#/...`` or ``<name>.schema.json#/...``); returns (schema, its root)."""
    seen = 0
    while "$ref" in schema and seen < 16:
        seen += 1
        ref = str(schema["$ref"])
        doc, _, pointer = ref.partition("#")
        if doc:
            root = load_schema(doc.rsplit("/", 1)[-1].removesuffix(".schema.json"))
        target: Any = root
        for part in [p for p in pointer.split("/") if p]:
            target = target[part]
        merged = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **merged}
    return schema, root


def _fill(instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    schema, root = _resolve(schema, root)
    if isinstance(instance, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        for key, sub in props.items():
            if key not in instance:
                sub_r, _ = _resolve(sub, root)
                if "default" in sub_r:
                    instance[key] = copy.deepcopy(sub_r["default"])
            if key in instance:
                instance[key] = _fill(instance[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for key in instance:
                if key not in props:
                    instance[key] = _fill(instance[key], extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        return [_fill(item, schema["items"], root) for item in instance]
    return instance


def fill_defaults(name: str, instance: Any) -> Any:
    """A deep copy of ``instance`` with every missing property that has a ``default``
    in schema ``name`` filled in (recursively, through ``$ref``). Values of the wrong
    type are left alone for validation to report."""
    root = load_schema(name)
    return _fill(copy.deepcopy(instance), root, root)


# ---------------------------------------------------------------- errors


_TYPE_WORDS = {
    "integer": "integer",
    "number": "number",
    "string": "string",
    "boolean": "boolean (true/false)",
    "array": "list",
    "object": "mapping",
    "null": "null",
}


def _show(value: Any, limit: int = 60) -> str:
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, Mapping):
        text = "a mapping"
    elif isinstance(value, list | tuple):
        text = json.dumps(value, default=str) if len(str(value)) <= limit else f"a list of {len(value)}"
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(schema: Mapping[str, Any]) -> str:
    """What a (resolved) schema accepts, in words: ``integer >= 1``, ``one of 'a', 'b'``."""
    if "const" in schema:
        return f"exactly {_show(schema['const'])}"
    if "enum" in schema:
        return "one of " + ", ".join(_show(v) for v in schema["enum"])
    types = schema.get("type")
    names = [types] if isinstance(types, str) else list(types or [])
    words = " or ".join(_TYPE_WORDS.get(t, t) for t in names) or "a value"
    cons = []
    if "minimum" in schema:
        cons.append(f">= {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        cons.append(f"> {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        cons.append(f"<= {schema['maximum']}")
    if "exclusiveMaximum" in schema:
        cons.append(f"< {schema['exclusiveMaximum']}")
    if schema.get("minLength") == 1:
        cons.append("non-empty")
    elif "minLength" in schema:
        cons.append(f"of at least {schema['minLength']} characters")
    if "maxLength" in schema:
        cons.append(f"of at most {schema['maxLength']} characters")
    if "pattern" in schema:
        cons.append(f"matching /{schema['pattern']}/")
    if "minItems" in schema:
        cons.append(f"with at least {schema['minItems']} items")
    if "maxItems" in schema:
        cons.append(f"with at most {schema['maxItems']} items")
    if schema.get("uniqueItems"):
        cons.append("without duplicates")
    return f"{words} {' and '.join(cons)}" if cons else words


def dotted(path: Iterable[Any]) -> str:
    """``('ingest', 'cameras', 0, 'kind')`` -> ``ingest.cameras[0].kind``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _messages(err: jsonschema.ValidationError) -> list[str]:
    path = list(err.absolute_path)
    here = dotted(path)
    kw = err.validator
    if kw == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = list(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        hint = f"; expected one of {', '.join(allowed)}" if allowed else ""
        return [f"{dotted([*path, k])}: unknown key{hint}" for k in extra]
    if kw == "required" and isinstance(err.instance, Mapping):
        return [f"{dotted([*path, k])}: required" for k in err.validator_value if k not in err.instance]
    if kw == "propertyNames":
        return [f"{here}: key {_show(err.instance)} is not allowed: {err.message}"]
    schema = err.schema if isinstance(err.schema, Mapping) else {}
    if kw == "uniqueItems":
        return [f"{here}: expected a list without duplicates, got {_show(err.instance)}"]
    if kw in ("minItems", "maxItems"):
        return [f"{here}: expected {describe(schema)}, got {len(err.instance)} item(s)"]
    if kw in ("type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
              "minLength", "maxLength", "pattern"):
        return [f"{here}: expected {describe(schema)}, got {_show(err.instance)}"]
    return [f"{here}: {err.message}"]


def _non_finite(value: Any, path: list[Any], owner: str, out: list[str]) -> None:
    """One line per NaN / infinite number in ``value``: JSON has none, but YAML (``.nan``,
    ``.inf``) and Python's ``json`` (``NaN``, ``Infinity``) produce them, and JSON Schema's
    ``minimum``/``maximum`` let NaN through (every comparison with it is false). ``owner``
    names the nearest list item that has a ``name`` (``zone 'door'``)."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            out.append(f"{dotted(path)}: expected a finite number, got {value}{owner}")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _non_finite(v, [*path, k], owner, out)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            mine = owner
            if isinstance(v, Mapping) and isinstance(v.get("name"), str) and path and isinstance(path[-1], str):
                kind = path[-1][:-1] if path[-1].endswith("s") else path[-1]
                mine = f" ({kind} {v['name'][:60]!r})"
            _non_finite(v, [*path, i], mine, out)


def problems(name: str, instance: Any) -> list[str]:
    """Every way ``instance`` violates schema ``name``, one line each, sorted by path
    (empty when valid). NaN and infinite numbers are problems wherever they appear."""
    errors = sorted(_validator(name).iter_errors(instance),
                    key=lambda e: [str(p) for p in e.absolute_path])
    out: list[str] = []
    for err in errors:
        for msg in _messages(err):
            if msg not in out:
                out.append(msg)
    _non_finite(instance, [], "", out)
    return out
