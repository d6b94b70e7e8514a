"""The compiled accept-only checker in front of jsonschema (``schemas.problems``'s fast path):
on real messages and on thousands of mutations of them it never accepts what jsonschema
rejects, and ``problems`` returns exactly jsonschema's lines (``problems_reference``)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from schemas import _fast_check, fill_defaults, problems, problems_reference
from schemas.config import CameraConfig, config_to_dict, parse_camera, parse_config
from schemas.messages import (
    HEADER_META,
    ChunkCaptured,
    ChunkRedacted,
    DlqRecord,
    _meta_of,
    encode_chunk,
    encode_dlq,
)

ZONES = ({"name": "door", "polygon": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.9]], "normalized": True},
         {"name": "window", "polygon": [[0, 0], [40, 0], [40, 30], [0, 30]]})
MODELS = tuple({"id": m, "version": "1", "sha256": "ab" * 32, "precision": "fp32"}
               for m in ("centerface", "yunet", "yolox_nano", "ppocr_det", "ppocr_det@bf16"))


def _captured(**kw: Any) -> ChunkCaptured:
    base: dict[str, Any] = dict(camera_id="cam-001", chunk_seq=7, pts_ms=(1000, 3000), fps=0.5, width=320,
                                height=180, codec="h264", captured_at_ms=1_700_000_000_000, payload=b"\0\0\0\1x")
    return ChunkCaptured(**{**base, **kw})


def _redacted(**kw: Any) -> ChunkRedacted:
    base: dict[str, Any] = dict(camera_id="cam-001", chunk_seq=7, pts_ms=(1000, 3000), fps=0.5, width=320,
                                height=180, codec="h264", captured_at_ms=1_700_000_000_000, payload=b"\0\0\0\1x",
                                masks_per_class={"face": 1, "plate": 0, "person": 2, "text": 0},
                                fail_closed_frames=(1,), models=MODELS, policy_id="default", policy_version=1)
    return ChunkRedacted(**{**base, **kw})


def _decoded(headers: list[tuple[str, bytes]]) -> Any:
    """The meta as a consumer sees it (after the JSON round trip)."""
    return json.loads(dict(headers)[HEADER_META])


def real_messages() -> list[tuple[str, Any]]:
    """``(schema, instance)`` of valid messages as the pipeline builds (encode) and reads (decode) them."""
    out: list[tuple[str, Any]] = []
    for msg in (_captured(), _captured(policy_id="subway.v2", zones=ZONES, dropped_frames=3),
                _captured(pts_ms=(), codec="jpeg", fps=25.0, chunk_seq=0)):
        out += [("chunk_captured", _meta_of(msg)), ("chunk_captured", _decoded(encode_chunk(msg)[1]))]
    for msg in (_redacted(), _redacted(policy_version="2026-12-05", fail_closed_frames=(), masks_per_class={},
                                       models=({"id": "x", "sha256": None, "score": 0.5},), dropped_frames=2)):
        out += [("chunk_redacted", _meta_of(msg)), ("chunk_redacted", _decoded(encode_chunk(msg)[1]))]
    rec = DlqRecord(reason="invalid_message", source_topic="veil.chunks.raw", source_partition=3, source_offset=17,
                    headers={"veil-type": "ChunkCaptured"}, error="bad", at_ms=1_700_000_000_000, payload_size=5)
    out.append(("dlq_record", _decoded(encode_dlq(rec, b"12345")[1])))
    cam: CameraConfig = parse_camera({"camera_id": "c1", "url": "rtsp://h/s", "kind": "rtsp", "fps": 2,
                                      "zones": [dict(z) for z in ZONES]})
    out.append(("camera", config_to_dict(cam)))
    # the config and policy schemas go through problems() too (parse_config, load_policy)
    cfg = parse_config({"ingest": {"cameras": [{"camera_id": "c1", "url": "/v.mp4", "zones": [dict(ZONES[0])]}]}})
    out.append(("config", config_to_dict(cfg)))
    policy = {"policy_id": "subway", "classes": ["face", "plate"], "retention": {"redacted_days": 30, "raw_days": 0},
              "roles": {"analyst": {"read": ["redacted"]}, "investigator": {"read": ["raw", "redacted"]}}}
    out += [("policy", policy), ("policy", fill_defaults("policy", policy))]
    return out


BAD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 1.0, 0.5, -0.5, 1e20, 2 ** 70, 253402214399999, 253402214400000,
    float("nan"), float("inf"), float("-inf"), "", "x", "cam-001", "cam\n", "-cam", "a" * 64, "a" * 65, "h264",
    "é", [], [0], [1, 1], [1.0], [True], [-1], ["a"], [None], [[1, 2], [3, 4], [5, 6]], {}, {"id": "m"},
    {"a": 1}, {"face": -1}, {"face": 1.5}, (1, 2), "x" * 4001,
]


def _paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*here, i))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


def mutate(instance: Any, rng: random.Random) -> Any:
    """One to three random edits: a key removed or added, a value replaced, an item
    duplicated, appended or removed, a string grown by a character that breaks a pattern."""
    out = copy.deepcopy(instance)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(out))
        node = _get(out, path)
        op = rng.random()
        if isinstance(node, dict) and op < 0.3:
            if node and rng.random() < 0.5:
                del node[rng.choice(list(node))]
            else:
                node[rng.choice(["extra", "id", "zones", "policy_id", "name", "face", "1"])] = rng.choice(BAD_VALUES)
        elif isinstance(node, list) and op < 0.3:
            r = rng.random()
            if node and r < 0.3:
                node.append(copy.deepcopy(node[0]))
            elif node and r < 0.5:
                node.pop(rng.randrange(len(node)))
            else:
                node.append(rng.choice(BAD_VALUES))
        elif path:
            parent = _get(out, path[:-1])
            if isinstance(node, str) and op < 0.5:
                at = rng.choice([0, len(node) // 2, len(node)])  # the ends matter: ``$`` vs a final newline
                parent[path[-1]] = node[:at] + rng.choice(["", "\n", ".", " ", "/", "_", "é", "Z"]) + node[at:] \
                    if rng.random() < 0.8 else node * 20
            elif isinstance(node, int | float) and not isinstance(node, bool) and op < 0.5:
                parent[path[-1]] = rng.choice([node + 1, node - 1, -node, float(node), node * 10 ** 6, 0])
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(BAD_VALUES))
    return out


def mismatches(name: str, instances: list[Any], fast: Any) -> list[str]:
    """Where ``fast`` (the accept-only checker) accepts an instance jsonschema rejects."""
    bad = []
    for inst in instances:
        ref = problems_reference(name, inst)
        if fast(inst) and ref:
            bad.append(f"{name}: accepted {inst!r} but jsonschema says {ref}")
    return bad


def test_every_real_message_takes_the_fast_path() -> None:
    for name, inst in real_messages():
        assert problems_reference(name, inst) == [], (name, inst)
        assert problems(name, inst) == []
        if name in ("config", "policy"):
            continue  # read once at start-up: they may grow keywords the fast path leaves to jsonschema
        assert _fast_check(name)(inst), f"{name} falls back to jsonschema: {inst!r}"
        assert problems(name, inst) == []


@pytest.mark.parametrize(("name", "count"), [("chunk_captured", 1500), ("chunk_redacted", 1500),
                                             ("dlq_record", 1500), ("camera", 1500), ("config", 400),
                                             ("policy", 1000)])
def test_mutations_accept_and_reject_like_jsonschema(name: str, count: int) -> None:
    rng = random.Random(f"h6-{name}")
    seeds = [inst for n, inst in real_messages() if n == name]
    mutants = [mutate(rng.choice(seeds), rng) for _ in range(count)]
    assert mismatches(name, mutants, _fast_check(name)) == []
    accepted = rejected = 0
    for inst in mutants:
        ref = problems_reference(name, inst)
        assert problems(name, inst) == ref, inst
        accepted += not ref
        rejected += bool(ref)
    # both sides are exercised: mutants that stay valid (a value moved within its range) and ones that break
    assert accepted > count // 20 and rejected > count // 3, (accepted, rejected)


def test_the_comparison_catches_a_fast_path_that_accepts_too_much() -> None:
    rng = random.Random(0)
    seeds = [inst for n, inst in real_messages() if n == "chunk_redacted"]
    mutants = [mutate(rng.choice(seeds), rng) for _ in range(200)]
    assert mismatches("chunk_redacted", mutants, lambda _inst: True)


@pytest.mark.parametrize(("name", "edit", "line"), [
    ("chunk_captured", {"camera_id": "cam\n"}, "camera_id: expected string matching /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, got 'cam\\n'"),
    ("chunk_captured", {"fps": float("nan")}, "fps: expected a finite number, got nan"),
    ("chunk_captured", {"width": True}, "width: expected integer >= 1 and <= 65535, got true"),
    ("chunk_redacted", {"fail_closed_frames": [1, 1]}, "fail_closed_frames: expected a list without duplicates, got [1, 1]"),
    ("chunk_redacted", {"extra": 1}, "extra: unknown key; expected one of"),
])
def test_edge_cases_fall_back_to_jsonschema_lines(name: str, edit: dict[str, Any], line: str) -> None:
    inst = {**next(i for n, i in real_messages() if n == name), **edit}
    assert not (_fast_check(name)(inst))
    got = problems(name, inst)
    assert got == problems_reference(name, inst)
    assert any(g.startswith(line) for g in got), got


def test_integral_float_and_numpy_values_are_left_to_jsonschema() -> None:
    """1.0 is an integer to JSON Schema: the fast path does not decide it, jsonschema accepts it."""
    import numpy as np

    inst = {**_meta_of(_captured()), "width": 320.0}
    assert not _fast_check("chunk_captured")(inst)
    assert problems("chunk_captured", inst) == problems_reference("chunk_captured", inst) == []
    inst = {**_meta_of(_captured()), "fps": np.float64("nan")}
    assert problems("chunk_captured", inst) == problems_reference("chunk_captured", inst) != []


@pytest.mark.parametrize(("schema", "instance", "accepted"), [
    ({}, [], True),
    ({}, {"a": [1, "x", None]}, True),
    (True, float("nan"), False),
    ({}, [float("inf")], False),
    ({"type": "object"}, {"a": {"b": float("nan")}}, False),
    ({"type": "array"}, [[float("-inf")]], False),
    ({"type": "array", "items": {"type": "number"}}, [1.5, float("nan")], False),
    ({"type": "object", "properties": {"a": {"type": "integer"}}}, {"a": 1, "b": [float("nan")]}, False),
    ({"type": "object", "properties": {"a": {"type": "integer"}}}, {"a": 1, "b": [0.5]}, True),
    ({"enum": [1, "x"]}, True, False),
    ({"description": "any value"}, (1, 2), True),
    ({"not": {"type": "string"}}, 1, False),  # a keyword it does not compile: always jsonschema's call
])
def test_values_no_keyword_looks_at_are_walked_for_nan(schema: Any, instance: Any, accepted: bool) -> None:
    """No schema on the wire has an untyped node today; a NaN under one must still fall back
    (``problems`` reports it on top of jsonschema's errors)."""
    from schemas import _Compiler

    assert _Compiler().compile(schema, "config")(instance) is accepted


def test_a_nested_id_is_left_to_jsonschema() -> None:
    from schemas import _Compiler

    nested = {"type": "object", "properties": {"a": {"$id": "https://example.com/a.json", "$ref": "#/$defs/x"}}}
    assert _Compiler().compile(nested, "config")({"a": 1}) is False
