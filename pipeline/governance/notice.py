"""Camera notices (purpose, scope, operator contact: what the signage must say) for the sink.

The registry topic is the source of truth; the sink refreshes its copy at most every
``refresh_s`` and only when it meets a camera it does not know yet or the copy is old, so
a camera added with a notice is stamped on its first segment. A registry that cannot be
read keeps the last copy (a manifest without notice is still a stored segment).
"""

from __future__ import annotations

import logging
import time
from typing import Any

logger = logging.getLogger(__name__)


class RegistryNotices:
    """``notices(camera_id) -> {purpose, scope, contact}`` (empty when the camera has none)."""

    def __init__(self, config: Any, refresh_s: float = 60.0, unknown_refresh_s: float = 5.0) -> None:
        self.cfg = config
        self.refresh_s = refresh_s
        self.unknown_refresh_s = unknown_refresh_s
        self._notices: dict[str, dict[str, str]] = {c.camera_id: dict(c.notice or {})
                                                    for c in getattr(config.ingest, "cameras", ())}
        self._read_at = float("-inf")

    def _refresh(self) -> None:
        from pipeline.ingest.registry import read_registry

        self._read_at = time.monotonic()
        try:
            cams = read_registry(self.cfg, timeout_s=5.0)
        except Exception as exc:  # noqa: BLE001 - keep the last copy
            logger.warning("camera registry unreadable, keeping %d notices: %s", len(self._notices), exc)
            return
        self._notices.update({cid: dict(c.notice or {}) for cid, c in cams.items()})

    def __call__(self, camera_id: str) -> dict[str, str]:
        age = time.monotonic() - self._read_at
        if age >= self.refresh_s or (camera_id not in self._notices and age >= self.unknown_refresh_s):
            self._refresh()
        return self._notices.get(camera_id, {})
