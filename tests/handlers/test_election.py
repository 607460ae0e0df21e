"""Leader election over a coordination.k8s.io Lease: one leader at a time, hand-over on release or expiry."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes.client
import pytest

from pgbackup.handlers.election import LeaseConfig, LeaseElection
from tests.handlers.conftest import NAMESPACE, Cluster
from tests.handlers.rbac_check import denied_requests

pytestmark = pytest.mark.timeout(30)


def candidate(identity: str) -> LeaseElection:
    return LeaseElection(LeaseConfig(namespace=NAMESPACE, identity=identity, lease_seconds=15, renew_every=0.05))


def leases(cluster: Cluster) -> kubernetes.client.CoordinationV1Api:
    return kubernetes.client.CoordinationV1Api(cluster.core.api_client)


def holder(cluster: Cluster) -> str | None:
    response = leases(cluster).read_namespaced_lease("pgbackup-operator-leader", NAMESPACE, _preload_content=False)
    return json.loads(response.data)["spec"].get("holderIdentity")


async def test_only_one_replica_leads_and_the_lease_is_handed_over(cluster: Cluster, emulator: Any) -> None:
    first, second = candidate("replica-a"), candidate("replica-b")
    assert await asyncio.to_thread(first.try_acquire)
    assert not await asyncio.to_thread(second.try_acquire)
    assert await asyncio.to_thread(first.try_acquire)  # renewing
    assert await asyncio.to_thread(holder, cluster) == "replica-a"

    await asyncio.to_thread(first.release)
    assert await asyncio.to_thread(second.try_acquire)
    assert not await asyncio.to_thread(first.try_acquire)
    assert await asyncio.to_thread(holder, cluster) == "replica-b"
    assert not denied_requests([r for r in list(emulator) if r.headers.get("User-Agent") == "pgbackup-operator"])


async def test_an_expired_lease_is_taken_over(cluster: Cluster) -> None:
    first, second = candidate("replica-a"), candidate("replica-b")
    assert await asyncio.to_thread(first.try_acquire)
    stale = (datetime.now(UTC) - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await asyncio.to_thread(leases(cluster).patch_namespaced_lease, "pgbackup-operator-leader", NAMESPACE,
                            {"spec": {"renewTime": stale}}, _content_type="application/merge-patch+json",
                            _preload_content=False)
    assert await asyncio.to_thread(second.try_acquire)
    assert await asyncio.to_thread(holder, cluster) == "replica-b"


async def test_wait_until_leader_returns_false_when_stopped(cluster: Cluster) -> None:
    leader, waiting = candidate("replica-a"), candidate("replica-b")
    assert await asyncio.to_thread(leader.try_acquire)
    stop = threading.Event()
    task = asyncio.create_task(asyncio.to_thread(waiting.wait_until_leader, stop))
    await asyncio.sleep(0.2)
    assert not task.done()
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) is False
