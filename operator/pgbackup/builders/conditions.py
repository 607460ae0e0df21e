"""Kubernetes-style conditions as plain wire dicts (type, status, reason, message, lastTransitionTime,
observedGeneration): lastTransitionTime changes only when the status does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]

READY = "Ready"
LAST_BACKUP_SUCCEEDED = "LastBackupSucceeded"


def set_condition(
    conditions: list[dict[str, Any]],
    type: str,
    status: Status,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with condition `type` set; other conditions and their order are kept."""
    previous = find_condition(conditions, type)
    transition = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
    condition: dict[str, Any] = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or now,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    result = [dict(c) for c in conditions if c.get("type") != type]
    index = next((i for i, c in enumerate(conditions) if c.get("type") == type), len(result))
    result.insert(index, condition)
    return result


def find_condition(conditions: list[dict[str, Any]], type: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type), None)


@dataclass(frozen=True)
class Check:
    """One thing Ready depends on; `ok` False makes Ready False with this reason and message."""

    ok: bool
    reason: str
    message: str


def summarise_ready(checks: list[Check], ok_reason: str, ok_message: str) -> tuple[Status, str, str]:
    """Ready is True when every check passes; otherwise False with the first failing check's reason,
    and a message listing every failure so a user fixes them all in one go."""
    failed = [check for check in checks if not check.ok]
    if not failed:
        return "True", ok_reason, ok_message
    return "False", failed[0].reason, "; ".join(check.message for check in failed)
