"""Re-applying unchanged BackupPolicies (what `kubectl apply` of the same manifests, or a GitOps sync, does): the
operator writes nothing. The emulator gives every write a new resourceVersion and a MODIFIED event, as an API server
does for a change; here only the re-apply itself changes anything."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.handlers.conftest import Cluster, Operator, eventually, policy_spec

pytestmark = pytest.mark.timeout(120)

POLICIES = 10
HANDLED = "kopf.pgbackup.dev/last-handled-configuration"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def spec(index: int) -> dict[str, Any]:
    body = policy_spec(schedule=f"{index} 2 * * *")
    body["storage"]["s3"]["prefix"] = f"db{index}"
    if index % 2 == 0:
        body["objectives"] = {"rpo": "24h"}
    return body


def settled(cluster: Cluster, name: str) -> bool:
    policy = cluster.policy(name)
    ready = next((c for c in (policy.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
    return HANDLED in (policy["metadata"].get("annotations") or {}) and ready.get("status") == "True"


def operator_writes(emulator: Any, since: int) -> list[str]:
    """The operator's writes after request number `since`: method, path and (Events) the object they are about."""
    writes = []
    for request in list(emulator)[since:]:
        method = str(request.method).upper().rsplit(".", 1)[-1]
        if method in WRITES and str(request.headers.get("User-Agent", "")).startswith(("kopf", "pgbackup-operator")):
            about = ((request.data or {}).get("involvedObject") or {}).get("name", "") \
                if isinstance(request.data, dict) else ""
            writes.append(f"{method} {request.url.path} {about}".rstrip())
    return writes


async def test_reapplying_unchanged_policies_makes_the_operator_write_nothing(
        cluster: Cluster, secrets: None, operator: Operator, emulator: Any) -> None:
    names = [f"db{index}" for index in range(POLICIES)]
    async with operator.running():
        for index, name in enumerate(names):
            await asyncio.to_thread(cluster.create_policy, name, spec(index))
        for name in [*names, "sentinel"]:
            if name == "sentinel":
                await asyncio.to_thread(cluster.create_policy, name, spec(POLICIES))
            await eventually(lambda name=name: settled(cluster, name), what=f"{name} Ready and handled")

        since = len(list(emulator))
        for index, name in enumerate(names):
            await asyncio.to_thread(cluster.patch_policy, name, {"spec": spec(index)}, bump_generation=False)
        # A real change after them, in the same watch stream: once the operator has acted on it, it has seen the
        # re-applied policies too.
        await asyncio.to_thread(cluster.patch_policy, "sentinel", {"spec": {"schedule": "59 3 * * *"}})
        await eventually(lambda: cluster.cronjob("sentinel-backup")["spec"]["schedule"] == "59 3 * * *",
                         what="the sentinel's CronJob updated")
        await eventually(lambda: settled(cluster, "sentinel") and
                         cluster.policy("sentinel")["status"]["observedGeneration"] == 2, what="sentinel handled")
        writes = [write for write in operator_writes(emulator, since) if "sentinel" not in write]
    assert writes == []
