"""Map requests seen by the emulator to RBAC (verb, group, resource) and check them against OPERATOR_RULES."""

from __future__ import annotations

from typing import Any

from pgbackup.rbac import OPERATOR_RULES

_VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "UPDATE": "patch", "DELETE": "delete"}


def rbac_verb(request: Any) -> str | None:
    if str(request.method).upper().endswith("PUT"):
        return "update"
    action = getattr(request.action, "name", None)
    return _VERBS.get(action) if action else None


def rbac_key(request: Any) -> tuple[str, str, str] | None:
    """(verb, group, resource[/subresource]) of a resource request; None for discovery (/api, /apis, /version)."""
    resource = request.resource
    if resource is None or not resource.plural or rbac_verb(request) is None:
        return None
    plural = f"{resource.plural}/{request.subresource}" if request.subresource else resource.plural
    return rbac_verb(request), resource.group or "", plural


def allowed(verb: str, group: str, resource: str) -> bool:
    return any(rule.api_group == group and resource in rule.resources and verb in rule.verbs
               for rule in OPERATOR_RULES)


def denied_requests(requests: list[Any]) -> list[tuple[str, str, str]]:
    keys = {key for request in requests if (key := rbac_key(request)) is not None}
    return sorted(key for key in keys if not allowed(*key))
