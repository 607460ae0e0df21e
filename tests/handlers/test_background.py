"""The operator-wide background loop (objectives and WAL state for every policy) with the real operator against
kmock: no finalizer on BackupPolicies, and no API traffic while nothing changes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec
from tests.handlers.rbac_check import rbac_key
from tests.handlers.test_wal import Streamer, streamer  # noqa: F401  (streamer: a fixture)

pytestmark = pytest.mark.timeout(90)

POLICIES = 5
OLD_FINALIZER = "pgbackup.dev/kopf-finalizer"
HANDLED = "kopf.pgbackup.dev/last-handled-configuration"


@pytest.fixture()
def fast_objectives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGBACKUP_OBJECTIVES_INTERVAL_SECONDS", "0.1")


def busy_spec(prefix: str = "orders") -> dict[str, Any]:
    """Everything the background loop looks after: WAL state and objectives (each policy in its own prefix)."""
    spec = policy_spec(wal={"enabled": True}, objectives={"rpo": "24h"})
    spec["storage"]["s3"]["prefix"] = prefix
    return spec


def settled(cluster: Cluster, name: str) -> bool:
    policy = cluster.policy(name)
    conditions = {c["type"]: c for c in (policy.get("status") or {}).get("conditions") or []}
    return (HANDLED in (policy["metadata"].get("annotations") or {})
            and conditions.get("Ready", {}).get("status") == "True"
            and conditions.get("WALArchiving", {}).get("reason") == "Streaming"
            and "ObjectivesMet" in conditions)


def from_operator(request: Any) -> bool:
    agent = request.headers.get("User-Agent", "")
    return agent.startswith(("kopf", "pgbackup-operator"))


def policy_requests(emulator: Any, since: int) -> list[tuple[str, str, str]]:
    """(verb, group, resource) of the operator's requests on BackupPolicies after request number `since`."""
    keys = [rbac_key(request) for request in list(emulator)[since:] if from_operator(request)]
    return [key for key in keys if key is not None and key[2].startswith("backuppolicies") and key[0] != "watch"]


async def test_a_backup_policy_carries_no_finalizer(cluster: Cluster, secrets: None, streamer: Streamer,
                                                    fast_objectives: None, operator: Operator) -> None:
    """Without a finalizer, deleting a namespace never waits for the operator (e.g. after it was uninstalled)."""
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", busy_spec())
        await eventually(lambda: settled(cluster, "orders"), what="Ready, WALArchiving and ObjectivesMet")
        seen = streamer.requests
        await eventually(lambda: streamer.requests >= seen + 3, what="three more WAL polls")
        metadata = (await asyncio.to_thread(cluster.policy, "orders"))["metadata"]
    assert not metadata.get("finalizers")


async def test_the_finalizer_older_versions_added_is_removed(cluster: Cluster, secrets: None, streamer: Streamer,
                                                             fast_objectives: None, operator: Operator) -> None:
    body = {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "orders", "namespace": NAMESPACE, "uid": "00000000-0000-0000-0000-0000000000aa",
                         "generation": 1, "resourceVersion": "1", "finalizers": [OLD_FINALIZER]},
            "spec": busy_spec()}
    await asyncio.to_thread(cluster.custom.create_namespaced_custom_object, "pgbackup.dev", "v1alpha1", NAMESPACE,
                            "backuppolicies", body)
    async with operator.running():
        metadata = await eventually(lambda: (m := cluster.policy("orders")["metadata"]) and
                                    OLD_FINALIZER not in (m.get("finalizers") or []) and m,
                                    what="the old finalizer removed")
    assert not metadata.get("finalizers")


async def test_idle_policies_cost_no_patch_and_no_get_per_policy(cluster: Cluster, secrets: None, streamer: Streamer,
                                                                  fast_objectives: None, operator: Operator,
                                                                  emulator: Any) -> None:
    names = [f"db{i}" for i in range(POLICIES)]
    async with operator.running():
        for name in names:
            await asyncio.to_thread(cluster.create_policy, name, busy_spec(name))
        for name in names:
            await eventually(lambda name=name: settled(cluster, name), what=f"{name} settled")
        # Writes already on their way land first (the emulator may deliver older versions of an object again,
        # which kopf handles once more); then a window of five rounds of the loop over all policies must be quiet.
        idle: list[tuple[str, str, str]] | None = None
        deadline = time.monotonic() + 45
        while idle != [] and time.monotonic() < deadline:
            since, seen = len(list(emulator)), streamer.requests
            await eventually(lambda seen=seen: streamer.requests >= seen + 5 * POLICIES, what="five rounds of polls")
            idle = policy_requests(emulator, since)
        conditions = [await asyncio.to_thread(cluster.condition, name, "ObjectivesMet") for name in names]
    assert idle == []  # no GET of a policy, no PATCH of a policy or its status
    assert all(c is not None and c["reason"] == "ObjectivesMet" for c in conditions)  # WAL point within the RPO


async def test_a_new_policy_is_evaluated_at_once_not_at_the_next_walk(
        cluster: Cluster, secrets: None, operator: Operator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walks run hourly here: ObjectivesMet of a policy created after the first walk comes from the visit its
    creation triggers (kopf adds the body to the index only after the index handler returned)."""
    monkeypatch.setenv("PGBACKUP_OBJECTIVES_INTERVAL_SECONDS", "3600")
    spec = policy_spec(objectives={"rpo": "24h"})
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", spec)
        condition = await eventually(lambda: cluster.condition("orders", "ObjectivesMet"), timeout=20,
                                     what="ObjectivesMet without waiting for the next walk")
    assert (condition["status"], condition["reason"]) == ("False", "NoRecoveryPoint")
