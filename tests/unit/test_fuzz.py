"""Hostile bytes into every parser (issue 12): hypothesis properties, the regression inputs
the fuzzer found, and a bounded coverage-guided atheris run of each target (``make fuzz``
runs them for longer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.safety import ID_PATTERN, camera_id_problem, redact_url, scrub_secrets
from tests.fuzz import targets

ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)


@FAST
@given(st.binary(max_size=600))
def test_message_parser_only_raises_schema_error(data: bytes) -> None:
    targets.message(data)


@FAST
@given(st.dictionaries(st.sampled_from(["camera_id", "chunk_seq", "pts_ms", "fps", "width", "height", "codec",
                                        "captured_at_ms", "payload_size", "schema_version", "policy_id",
                                        "dropped_frames", "extra"]), json_values, max_size=4))
def test_meta_mutations_are_refused_or_valid(patch: dict[str, object]) -> None:
    targets.meta_mutation(json.dumps(patch, default=str).encode())


@FAST
@given(st.binary(max_size=400))
def test_jpeg_chunk_decoder_only_raises_codec_error(data: bytes) -> None:
    targets.jpeg_payload(data)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_h264_chunk_decoder_only_raises_codec_error(data: bytes) -> None:
    targets.h264_payload(data)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_config_and_policy_loaders_only_raise_config_error(data: bytes) -> None:
    targets.config(data)
    targets.policy(data)


@FAST
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v, default=str).encode()))
def test_camera_registry_reader_never_yields_credentials(data: bytes) -> None:
    targets.camera_record(data)


@FAST
@given(st.text(max_size=80))
def test_camera_id_validator_is_a_full_match(cid: str) -> None:
    import re

    assert (camera_id_problem(cid) is None) == (re.fullmatch(ID_PATTERN, cid) is not None)
    if camera_id_problem(cid) is None:
        assert "/" not in cid and "\n" not in cid and not cid.startswith(".")


userinfo_chars = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs"), blacklist_characters="@'\"<>"),
                         min_size=6, max_size=20)


@FAST
@given(user=st.text("abcdefghij", min_size=1, max_size=8), password=userinfo_chars,
       host=st.sampled_from(["10.0.0.5", "cam.local:554", "[::1]"]), path=st.sampled_from(["", "/live", "/a/b?x=1"]))
@example(user="a", password="\u2028secret", host="10.0.0.5", path="")  # Unicode separators are \s in re
@example(user="a", password="pass\u00a0word", host="[::1]", path="/live")
def test_no_password_survives_redaction(user: str, password: str, host: str, path: str) -> None:
    url = f"rtsp://{user}:{password}@{host}{path}"
    assert password not in redact_url(url)
    text = f"Invalid data found when processing input: '{url}' returned -5"
    assert password not in scrub_secrets(text, [f"{user}:{password}"])


@pytest.mark.parametrize("path", sorted((targets.REGRESSIONS).glob("*")), ids=lambda p: p.name)
def test_fuzzer_regressions(path: Path) -> None:
    target = path.name.split("-", 1)[0]  # <target>-<what>.bin
    targets.TARGETS[target](path.read_bytes())


def test_regression_inputs_exist() -> None:
    assert any(targets.REGRESSIONS.glob("config-*")), "the crash atheris found must stay a regression case"


def test_atheris_bounded_run(tmp_path: Path) -> None:
    """A short coverage-guided run over every target in one process (``make fuzz`` runs
    each target for minutes)."""
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.targets", "all", "-max_total_time=10", "-runs=3000",
                           "-max_len=1024", f"-artifact_prefix={tmp_path}/"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    crashes = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("timeout-*"))
    assert proc.returncode == 0 and not crashes, proc.stderr[-3000:]
    assert "Done" in proc.stderr
