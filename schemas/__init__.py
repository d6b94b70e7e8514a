"""JSON Schemas for config, policies and wire messages, and the Python that applies them.

The ``*.schema.json`` files next to this module are the single source of truth: the
same files validate the YAML config, the Helm ``pipeline:`` values block, policies and
every Kafka message header. This module loads them (package resources, no network),
fills their ``default`` values, and turns every validation error into one readable
line with a dotted path (``process.detect_every: expected integer >= 1, got 'x'``).

Imports: stdlib, yaml and jsonschema only (errors live in :mod:`schemas.errors`), so
``import schemas`` never loads numpy or anything of ``operators``. jsonschema (and its
``referencing``) is imported at the first validation, not with the package: ``schemas.errors``
and ``schemas.safety`` are on every command's start path (``veilstream redact`` validates no
schema; the import cost ~45 ms on the 2-vCPU machine).

Typed views live in :mod:`schemas.config` (``parse_config``, ``load_config``) and
:mod:`schemas.messages` (``encode_chunk``, ``decode_chunk_captured``, ...).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import SchemaError

if TYPE_CHECKING:
    import jsonschema
    from referencing import Registry

__all__ = [
    "SCHEMA_NAMES",
    "SCHEMA_VERSION",
    "SchemaError",
    "fill_defaults",
    "load_schema",
    "problems",
    "problems_reference",
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
    from referencing import Registry, Resource

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
        import jsonschema

        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@functools.cache
def _strict_validator() -> Any:
    """Draft 2020-12 with ECMA-262 patterns (built at the first validation: see the module doc)."""
    import jsonschema

    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _pattern_keyword})


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    validator: jsonschema.Draft202012Validator = _strict_validator()(load_schema(name), registry=_registry())
    return validator


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
    (empty when valid). NaN and infinite numbers are problems wherever they appear.

    A valid instance is accepted by a checker compiled from the schema (:func:`_fast_check`,
    13 us instead of jsonschema's 255 us on a ChunkRedacted); anything it does not accept, and
    anything it is not sure of, goes to :func:`problems_reference`, so the answer and every
    error line are exactly jsonschema's."""
    if _fast_check(name)(instance):
        return []
    return problems_reference(name, instance)


def problems_reference(name: str, instance: Any) -> list[str]:
    """:func:`problems` through jsonschema alone (the reference the fast path is tested against)."""
    errors = sorted(_validator(name).iter_errors(instance),
                    key=lambda e: [str(p) for p in e.absolute_path])
    out: list[str] = []
    for err in errors:
        for msg in _messages(err):
            if msg not in out:
                out.append(msg)
    _non_finite(instance, [], "", out)
    return out


# ---------------------------------------------------------------- fast path
#
# jsonschema walks its validator objects for every keyword of every message (~0.3 ms for a
# chunk's veil-meta, at encode and again at decode: ~0.8 ms a frame over ingest, the process
# driver and the sink). The checker below is the same schema compiled once into plain Python
# closures, used only to *accept*: it answers True only where jsonschema would find no error
# and no NaN or infinity is anywhere (``_non_finite``: every float it accepts is finite,
# every value no keyword looks at is walked by ``_finite``),
# and False both for "invalid" and for anything it does not model exactly (a keyword it does
# not know, a float where an integer is asked for, a tuple, a NaN...). False sends the instance
# to jsonschema, so every reject, and every error line, is jsonschema's own. The unit tests
# (tests/unit/test_schema_fast_path.py) hold it to that on mutations of real messages.

_Check = Callable[[Any], bool]

_KINDS: dict[type, str] = {int: "integer", float: "float", bool: "boolean", str: "string", list: "array",
                           dict: "object", type(None): "null"}
_TYPE_KINDS = {"integer": {"integer"}, "number": {"integer", "float"}, "string": {"string"},
               "boolean": {"boolean"}, "array": {"array"}, "object": {"object"}, "null": {"null"}}
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description", "default", "examples",
                          "deprecated", "readOnly", "writeOnly"})
_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _never(instance: Any) -> bool:
    return False


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere (what :func:`_non_finite` reports)."""
    t = type(value)
    if t is float:
        return math.isfinite(value)
    if t is dict:
        return all(_finite(v) for v in value.values())
    if t is list or t is tuple:
        return all(type(v) is int or _finite(v) for v in value)
    return not isinstance(value, float | Mapping | list | tuple)  # a subclass (numpy.float64): ask jsonschema


def _scalar_key(value: Any) -> tuple[type, Any] | None:
    """``(type, value)`` of a JSON scalar, so ``True`` never equals ``1`` (as in jsonschema); None otherwise."""
    return (type(value), value) if type(value) in (int, float, bool, str, type(None)) else None


class _Compiler:
    def __init__(self) -> None:
        self._refs: dict[tuple[str, str], _Check] = {}

    def ref(self, ref: str, doc: str) -> _Check:
        where, _, pointer = ref.partition("#")
        if where:
            where = where.removeprefix(_BASE_URI)
            base = where.removesuffix(".schema.json")
            if "/" in where or base == where or base not in SCHEMA_NAMES:
                return _never
            doc = base
        key = (doc, pointer)
        if key not in self._refs:
            target: Any = load_schema(doc)
            for part in [p for p in pointer.split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, Mapping) or part not in target:
                    return _never
                target = target[part]
            cell: list[_Check] = [_never]
            self._refs[key] = lambda x: cell[0](x)  # a recursive $ref finds this while it compiles
            cell[0] = self.compile(target, doc)
        return self._refs[key]

    def compile(self, schema: Any, doc: str) -> _Check:  # noqa: C901 - one branch per keyword
        if schema is True:
            return _finite
        if not isinstance(schema, Mapping) or set(schema) - _SUPPORTED - _ANNOTATIONS:
            return _never
        if "$id" in schema and schema is not load_schema(doc):
            return _never  # a nested $id would move the base of its $refs: leave that to jsonschema
        checks: list[_Check] = []
        if "$ref" in schema:
            if not isinstance(schema["$ref"], str):
                return _never
            checks.append(self.ref(schema["$ref"], doc))
        if "type" in schema:
            names = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
            if not isinstance(names, list) or any(n not in _TYPE_KINDS for n in names):
                return _never
            kinds = frozenset().union(*(_TYPE_KINDS[n] for n in names))
            checks.append(_types(kinds))
        for word in ("const", "enum"):
            if word in schema:
                values = [schema["const"]] if word == "const" else schema["enum"]
                keys: set[tuple[type, Any] | None] = (
                    {_scalar_key(v) for v in values} if isinstance(values, list) else {None})
                if None in keys:
                    return _never
                checks.append(_member(keys))
        for word in _NUMERIC:
            if word in schema:
                checks.append(_numeric(word, schema[word]))
        if "minLength" in schema or "maxLength" in schema or "pattern" in schema:
            checks.append(_string(schema))
        if "items" in schema and not isinstance(schema["items"], Mapping | bool):
            return _never
        item = self.compile(schema["items"], doc) if "items" in schema else None
        walked_list = item is not None or bool({"minItems", "maxItems", "uniqueItems"} & set(schema))
        if walked_list:
            checks.append(_array(schema, item))
        walked_dict = bool({"properties", "required", "additionalProperties", "propertyNames"} & set(schema))
        if walked_dict:
            if not isinstance(schema.get("properties", {}), Mapping) or not isinstance(schema.get("required", []), list):
                return _never
            props = {k: self.compile(v, doc) for k, v in schema.get("properties", {}).items()}
            extra = schema.get("additionalProperties", True)
            names = self.compile(schema["propertyNames"], doc) if "propertyNames" in schema else None
            checks.append(_object(props, list(schema.get("required", ())),
                                  None if extra is True else self.compile(extra, doc), names))
        # the type check takes floats only when finite, const / enum scalars only: what is left
        # unchecked for NaN is a node without either, or a container its keywords do not walk
        unwalked = not {"$ref", "const", "enum"} & set(schema) and not (walked_list and walked_dict)
        if unwalked and "type" in schema:
            unwalked = ("array" in kinds and not walked_list) or ("object" in kinds and not walked_dict)
        if unwalked:
            checks.append(_unwalked_finite(walked_list, walked_dict))
        if len(checks) == 1:
            return checks[0]
        return _all_of(checks)


_SUPPORTED = frozenset({"$ref", "type", "const", "enum", *_NUMERIC, "minLength", "maxLength", "pattern",
                        "items", "minItems", "maxItems", "uniqueItems", "properties", "required",
                        "additionalProperties", "propertyNames"})


def _all_of(checks: list[_Check]) -> _Check:
    def check(x: Any) -> bool:
        for c in checks:
            if not c(x):
                return False
        return True
    return check


def _unwalked_finite(walked_list: bool, walked_dict: bool) -> _Check:
    """A NaN this node's own keywords do not look at: a float, or inside a container no
    ``items`` / ``properties`` of this node walks (``$ref``'s target checks for itself)."""
    def check(x: Any) -> bool:
        t = type(x)
        if (t is list and walked_list) or (t is dict and walked_dict):
            return True
        return _finite(x)
    return check


def _types(kinds: frozenset[str]) -> _Check:
    if "float" not in kinds:
        return lambda x: _KINDS.get(type(x)) in kinds
    return lambda x: _KINDS.get(type(x)) in kinds and (type(x) is not float or math.isfinite(x))


def _member(keys: set[tuple[type, Any] | None]) -> _Check:
    return lambda x: _scalar_key(x) in keys and _finite(x)


def _numeric(word: str, bound: Any) -> _Check:
    if type(bound) not in (int, float):
        return _never
    compare = {"minimum": operator.ge, "maximum": operator.le,
               "exclusiveMinimum": operator.gt, "exclusiveMaximum": operator.lt}[word]

    def check(x: Any) -> bool:
        t = type(x)
        if t is int or t is float:
            return bool(compare(x, bound))
        return t in _KINDS  # the keyword does not apply to another JSON type; anything else: ask jsonschema
    return check


def _string(schema: Mapping[str, Any]) -> _Check:
    lo, hi, pattern = schema.get("minLength", 0), schema.get("maxLength"), schema.get("pattern")
    if type(lo) is not int or (hi is not None and type(hi) is not int) or (
            pattern is not None and not isinstance(pattern, str)):
        return _never
    search = _ecma_pattern(pattern).search if pattern is not None else None

    def check(x: Any) -> bool:
        if type(x) is not str:
            return type(x) in _KINDS
        n = len(x)
        return n >= lo and (hi is None or n <= hi) and (search is None or search(x) is not None)
    return check


def _array(schema: Mapping[str, Any], item: _Check | None) -> _Check:
    lo, hi, unique = schema.get("minItems", 0), schema.get("maxItems"), schema.get("uniqueItems", False)
    if type(lo) is not int or (hi is not None and type(hi) is not int) or type(unique) is not bool:
        return _never

    def check(x: Any) -> bool:
        if type(x) is not list:
            return type(x) in _KINDS
        n = len(x)
        if n < lo or (hi is not None and n > hi):
            return False
        if unique and n > 1 and not (all(type(v) is int or type(v) is str for v in x) and len(set(x)) == n):
            return False  # duplicates, or items whose equality jsonschema decides its own way
        return all(_finite(v) for v in x) if item is None else all(item(v) for v in x)
    return check


def _object(props: dict[str, _Check], required: list[str], extra: _Check | None, names: _Check | None) -> _Check:
    if any(type(k) is not str for k in required):
        return _never

    def check(x: Any) -> bool:
        if type(x) is not dict:
            return type(x) in _KINDS
        for k in required:
            if k not in x:
                return False
        if names is not None and not all(names(k) for k in x):
            return False
        for k, v in x.items():
            sub = props.get(k)
            if sub is not None:
                if not sub(v):
                    return False
            elif type(k) is not str or not (_finite(v) if extra is None else extra(v)):
                return False
        return True
    return check


@functools.cache
def _fast_check(name: str) -> _Check:
    """Schema ``name`` compiled to an accept-only checker (see the comment above)."""
    return _Compiler().compile(load_schema(name), name)
