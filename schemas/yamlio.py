"""The one YAML reader of config, policy, zones and camera files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

__all__ = ["read_yaml", "yaml_error"]


def yaml_error(exc: yaml.YAMLError) -> str:
    """``invalid YAML at line L, column C: why`` for a ``yaml.safe_load`` error (1-based)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"invalid YAML{where}: {why}"


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """The parsed document of a YAML file (``yaml.safe_load``).

    Args:
        path: the file.
        what: what the file is, for messages (``"config file"``, ``"policy file"``).

    Raises:
        ConfigError: ``<what> 'path' not found``, ``... cannot read: why`` or
            ``... invalid YAML at line L, column C: why``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(p)!r} not found") from None
    except OSError as exc:
        raise ConfigError(f"{what} {str(p)!r}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # found by the fuzzer (tests/fuzz/regressions/config-non-utf8.bin)
        raise ConfigError(f"{what} {str(p)!r}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {str(p)!r}: {yaml_error(exc)}") from None
