"""Small helpers the kopf handlers share."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

KEPT_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion")


def plain(value: Any) -> Any:
    """kopf hands out read-only views; pydantic and comparisons want plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return copy.copy(value)


def trimmed(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator remembers of an object between watch events (the background walks' index, the metrics'):
    apiVersion, kind, identifying metadata, spec and status as plain copies; not annotations (kopf's
    last-handled-configuration repeats the spec), labels or managedFields, which would make every remembered policy
    several times larger."""
    meta = body.get("metadata") or {}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {key: meta.get(key) for key in KEPT_METADATA},
            "spec": plain(body.get("spec") or {}), "status": plain(body.get("status") or {})}
