"""The console's bridge to the evidence commands of :mod:`pipeline.governance` (subject
export, case export, legal hold, verify). Each call names the governance function it
needs; a build without it answers with one clear line instead of pretending.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from schemas.errors import VeilStreamError


class NotAvailableError(VeilStreamError):
    """The governance function behind a console action is not in this build."""


def governance_fn(name: str, what: str) -> Callable[..., Any]:
    """``pipeline.governance.<name>`` or :class:`NotAvailableError` naming ``what``."""
    try:
        mod = importlib.import_module("pipeline.governance")
    except ImportError as exc:  # pragma: no cover - the package is part of the project
        raise NotAvailableError(f"{what} is not available: {exc}") from None
    fn = getattr(mod, name, None)
    if fn is None:
        raise NotAvailableError(f"{what} is not available in this build (pipeline.governance.{name} is missing)")
    return fn  # type: ignore[no-any-return]
