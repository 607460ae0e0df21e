"""What the operator remembers of each watched object between watch events: one trimmed copy per object version.

The background walks' kopf index (daemons.py) and the metrics (metrics.py) both need the newest body of every
policy; each used to keep its own copy, which at 1,000 policies was several MiB of the operator's memory. Both now
take the copy from here: whichever handler sees a version first trims it, the other gets the same object.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pgbackup.handlers.common import trimmed

Key = tuple[str, str]  # (namespace, name)


class Remembered:
    """The newest trimmed body of each object of one kind, keyed by namespace and name. Thread-safe: written by
    kopf's handlers in the event loop, read by metric scrapes in the HTTP server's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[Key, dict[str, Any]] = {}

    @staticmethod
    def _identity(body: Mapping[str, Any]) -> tuple[Key, Any]:
        meta = body.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(meta.get("name") or "")), meta.get("resourceVersion")

    def keep(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The trimmed copy of this version of the object, made once (an object without a resourceVersion, as in
        tests, is trimmed anew each time)."""
        key, version = self._identity(body)
        with self._lock:
            kept = self._bodies.get(key)
            if kept is None or version is None or kept["metadata"].get("resourceVersion") != version:
                kept = self._bodies[key] = trimmed(body)
            return kept

    def apply(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event: DELETED forgets the object, anything else keeps its newest version."""
        if event_type == "DELETED":
            key, _ = self._identity(body)
            with self._lock:
                self._bodies.pop(key, None)
        else:
            self.keep(body)

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._bodies.values())

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()


policies = Remembered()
restore_requests = Remembered()
