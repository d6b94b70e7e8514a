"""The one error hierarchy of VeilStream (stdlib only, so every layer can import it).

``operators.types`` re-exports these names for the operators' callers; ``schemas`` and
``pipeline`` import them from here. Every error raised on purpose derives from
:class:`VeilStreamError`, and the CLI turns it into one line and an exit code.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "InputError",
    "ModelNotFoundError",
    "ProviderError",
    "SchemaError",
    "UsageError",
    "VeilStreamError",
]


class VeilStreamError(Exception):
    """Root of every error VeilStream raises on purpose (clear message, no traceback)."""


class ModelNotFoundError(VeilStreamError):
    """A model file is missing; the message says how to get it."""


class ProviderError(VeilStreamError):
    """A requested onnxruntime execution provider is not available."""


class ConfigError(VeilStreamError):
    """Invalid configuration, policy or zones document (every problem in one message)."""


class InputError(VeilStreamError):
    """Unreadable or invalid input data (a file, a payload)."""


class SchemaError(VeilStreamError):
    """A message (or document) does not conform to its schema; the text says why."""


class UsageError(VeilStreamError):
    """Invalid command-line arguments."""
