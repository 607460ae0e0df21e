"""The operator lists and watches only the Jobs it made (a server-side label selector), so the Jobs of everything
else in the cluster never reach it: its memory and work do not grow with them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import kmock as kmocklib
import pytest

from pgbackup.builders.names import LABEL_MANAGED_BY, MANAGER
from tests.handlers.conftest import NAMESPACE, Cluster, Emulator, Operator, eventually
from tests.handlers.test_jobs import backup_summary, finish_job, ready_policy

pytestmark = pytest.mark.timeout(60)

OWN_JOBS = f"{LABEL_MANAGED_BY}={MANAGER}"
UNRELATED_JOBS = 40


def _matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors (`k=v,k2=v2`), which is all the operator uses."""
    terms = [term.split("=", 1) for term in selector.split(",") if term]
    return all(labels.get(key) == value for key, value in terms)


def _labels(item: Any) -> dict[str, str]:
    return ((item or {}).get("metadata") or {}).get("labels") or {}


class SelectingEmulator(Emulator):
    """The emulator plus what the API server does with `?labelSelector=`: only matching objects are sent."""

    async def _serve_list(self, request: Any) -> Any:
        payload = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            payload["items"] = [item for item in payload["items"] if _matches(selector, _labels(item))]
        return payload

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        selector = request.params.get("labelSelector")
        async for event in super()._serve_watch(request):
            if not selector or not isinstance(event, dict) or _matches(selector, _labels(event.get("object"))):
                yield event


@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": SelectingEmulator}


def unrelated_job(cluster: Cluster, number: int) -> None:
    """Somebody else's finished Job (a CI run, another operator's work)."""
    cluster.batch.create_namespaced_job(NAMESPACE, {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"ci-build-{number}", "namespace": NAMESPACE, "labels": {"app": "ci"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "build", "image": "busybox"}]}}},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }, _preload_content=False)


async def test_only_the_operators_own_jobs_are_listed_and_watched(cluster: Cluster, secrets: None,
                                                                  operator: Operator, emulator: Any) -> None:
    for number in range(UNRELATED_JOBS):
        await asyncio.to_thread(unrelated_job, cluster, number)
    first_request = len(list(emulator))
    async with operator.running():
        cronjob = await ready_policy(cluster)
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000000", "Complete", None,
                                backup_summary("20261123T020000Z"))
        await eventually(lambda: cluster.batch.read_namespaced_job("orders-backup-29000000", NAMESPACE)
                         .metadata.annotations.get("pgbackup.dev/recorded"), what="the backup recorded")

    requests = list(emulator)[first_request:]
    job_reads = [r for r in requests if r.resource is not None and r.resource.plural == "jobs"
                 and r.action in (kmocklib.action.LIST, kmocklib.action.WATCH)]
    assert job_reads, "the operator never listed or watched Jobs"
    assert [r.params.get("labelSelector") for r in job_reads] == [OWN_JOBS] * len(job_reads), \
        "a Job list/watch without the server-side selector receives every Job in the cluster"
    touched = [r for r in requests if r.resource is not None and r.resource.plural == "jobs"
               and (r.name or "").startswith("ci-build-")]
    assert not touched
