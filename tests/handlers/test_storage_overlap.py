"""Two BackupPolicies writing to the same location: the later one is Ready=False StorageOverlap, naming the
other, and gets no CronJob; moving either one clears it by itself (real operator against kmock)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec

pytestmark = pytest.mark.timeout(60)


def create(cluster: Cluster, name: str, spec: dict[str, Any], created: str) -> None:
    body = {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1,
                         "resourceVersion": "1", "creationTimestamp": created},
            "spec": spec}
    cluster.custom.create_namespaced_custom_object("pgbackup.dev", "v1alpha1", NAMESPACE, "backuppolicies", body)


def shared(prefix: str | None) -> dict[str, Any]:
    spec = policy_spec()
    if prefix is not None:
        spec["storage"]["s3"]["prefix"] = prefix
    return spec


def ready(cluster: Cluster, name: str, status: str) -> Any:
    condition = cluster.condition(name, "Ready")
    return condition if condition and condition["status"] == status else None


async def test_the_later_policy_on_a_shared_location_is_not_ready_until_one_moves(
        cluster: Cluster, secrets: None, operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(create, cluster, "orders-a", shared("team/orders"), "2026-11-01T10:00:00Z")
        await eventually(lambda: ready(cluster, "orders-a", "True"), what="orders-a Ready=True")
        await asyncio.to_thread(create, cluster, "orders-b", shared("team/orders"), "2026-11-02T10:00:00Z")

        overlap = await eventually(lambda: ready(cluster, "orders-b", "False"), what="orders-b Ready=False")
        assert overlap["reason"] == "StorageOverlap"
        assert "BackupPolicy shop/orders-a" in overlap["message"]
        assert "s3://minio.minio.svc:9000/backups/team/orders" in overlap["message"]
        assert (await asyncio.to_thread(cluster.condition, "orders-a", "Ready"))["status"] == "True"
        assert not await asyncio.to_thread(lambda: [j for j in cluster.batch.list_namespaced_cron_job(
            NAMESPACE).items if j.metadata.name == "orders-b-backup"])

        # The earlier policy moves to its own (default) prefix: the later one recovers by itself.
        await asyncio.to_thread(cluster.patch_policy, "orders-a", {"spec": {"storage": {"s3": {"prefix": None}}}})
        await eventually(lambda: ready(cluster, "orders-b", "True"), what="orders-b Ready=True")
        await eventually(lambda: cluster.cronjob("orders-b-backup"), what="orders-b's CronJob")


async def test_fixing_the_later_policy_clears_the_overlap(cluster: Cluster, secrets: None,
                                                          operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(create, cluster, "orders-a", shared(""), "2026-11-01T10:00:00Z")
        await asyncio.to_thread(create, cluster, "orders-b", shared(""), "2026-11-02T10:00:00Z")
        overlap = await eventually(lambda: ready(cluster, "orders-b", "False"), what="orders-b Ready=False")
        assert overlap["reason"] == "StorageOverlap" and "shop/orders-a" in overlap["message"]

        await asyncio.to_thread(cluster.patch_policy, "orders-b", {"spec": {"storage": {"s3": {"prefix": "b"}}}})
        await eventually(lambda: ready(cluster, "orders-b", "True"), what="orders-b Ready=True")
        assert (await asyncio.to_thread(cluster.condition, "orders-a", "Ready"))["status"] == "True"
