"""Recording is level-triggered: a finished Job whose recording failed (an API error) or whose event was missed is
still recorded, by the operator's periodic reconcile, and nothing is recorded twice."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import kmock as kmocklib
import kubernetes.client
import pytest

from pgbackup.api import BackupPolicyStatus, JobSummary
from pgbackup.api.restore import RestoreResult
from pgbackup.handlers import kube
from pgbackup.handlers.once import forget, run_once
from tests.handlers import test_restore as restores
from tests.handlers.conftest import NAMESPACE, Cluster, Emulator, Operator, eventually
from tests.handlers.test_jobs import backup_summary, finish_job, ready_policy
from tests.handlers.test_verification import BACKUP_ID, VERIFY_JOB, age_secret, finish_verify_job, record_backup, \
    verify_jobs

__all__ = ["age_secret"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(90)

INTERVAL = "0.3"


@pytest.fixture(autouse=True)
def fast_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGBACKUP_RECORDING_INTERVAL_SECONDS", INTERVAL)


class FailingEmulator(Emulator):
    """The emulator plus requests refused with 500 before anything is stored (kmock's own reactions answer
    after the emulator has applied the change, i.e. a write whose answer was lost)."""

    refuse: list[Callable[[Any], bool]]

    async def _handle(self, request: Any) -> Any:
        if any(check(request) for check in getattr(self, "refuse", [])):
            raise kmocklib.KubernetesError()  # 500, nothing applied
        return await super()._handle(request)


@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": FailingEmulator}


def fail_first(emulator: Any, plural: str, field: str, applied: bool = False) -> list[Any]:
    """Answer 500 to the first status write of a `plural` object that sets `field` (`applied`: after storing
    it, as when the answer is lost on the way back); returns the failed requests."""
    failed: list[Any] = []

    def first_write(request: Any) -> bool:
        status = (request.data or {}).get("status") if isinstance(request.data, dict) else None
        if failed or request.subresource != "status" or request.resource is None \
                or request.resource.plural != plural or not isinstance(status, dict) or field not in status:
            return False
        failed.append(request)
        return True

    if applied:
        emulator[first_write] << 500
    else:
        object.__setattr__(emulator, "refuse", [*getattr(emulator, "refuse", []), first_write])
    return failed


def job_annotations(cluster: Cluster, name: str) -> dict[str, str]:
    return cluster.batch.read_namespaced_job(name, NAMESPACE).metadata.annotations or {}


async def passes(emulator: Any, count: int = 2) -> None:
    """Wait until the periodic reconcile has listed the Jobs `count` more times (so it had its chance)."""
    def job_lists() -> int:
        return sum(1 for r in list(emulator) if r.action == kmocklib.action.LIST and r.resource is not None
                   and r.resource.plural == "jobs" and r.headers.get("User-Agent", "").startswith("pgbackup"))
    start = job_lists()
    await eventually(lambda: job_lists() >= start + 2 * count, what=f"{count} more passes of the reconcile")


async def test_a_backup_whose_status_write_failed_is_still_recorded_once(cluster: Cluster, secrets: None,
                                                                         operator: Operator, emulator: Any) -> None:
    failed = fail_first(emulator, "backuppolicies", "lastBackup")
    async with operator.running():
        cronjob = await ready_policy(cluster)
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000000", "Complete", None,
                                backup_summary("20261123T020000Z"))
        status = await eventually(lambda: (s := cluster.policy("orders").get("status", {})).get("lastBackup") and s,
                                  what="status.lastBackup despite the failed write")
        await eventually(lambda: job_annotations(cluster, "orders-backup-29000000").get("pgbackup.dev/recorded"),
                         what="the recorded mark")
        await passes(emulator)
        succeeded = await asyncio.to_thread(cluster.events, "BackupSucceeded")
    assert failed, "the emulator never failed a status write: the test did not test anything"
    assert status["lastBackup"]["id"] == "20261123T020000Z"
    assert len(succeeded) == 1, "the backup was recorded more than once"


async def test_a_verification_whose_status_write_failed_is_still_recorded_once(
        cluster: Cluster, secrets: None, age_secret: None, operator: Operator, emulator: Any) -> None:
    summary = JobSummary(kind="verify", phase="Completed", backup_id=BACKUP_ID, reason="RestoreVerified",
                         restore_seconds=42.5, completed_at="2026-11-23T03:10:00Z")
    failed = fail_first(emulator, "backuppolicies", "measured", applied=True)  # only a verification sets it
    async with operator.running():
        await record_backup(cluster)
        await eventually(lambda: verify_jobs(cluster), what="the verification Job")
        await asyncio.to_thread(finish_verify_job, cluster, VERIFY_JOB, summary)
        verified = await eventually(lambda: cluster.condition("orders", "Verified"),
                                    what="Verified despite the failed write")
        await eventually(lambda: job_annotations(cluster, VERIFY_JOB).get("pgbackup.dev/recorded"),
                         what="the recorded mark")
        await passes(emulator)
        succeeded = await asyncio.to_thread(cluster.events, "VerificationSucceeded")
    assert failed
    assert verified["status"] == "True"
    assert len(succeeded) == 1


async def test_a_verification_job_whose_creation_failed_is_still_created(
        cluster: Cluster, secrets: None, age_secret: None, operator: Operator, emulator: Any) -> None:
    failed: list[Any] = []

    def first_create(request: Any) -> bool:
        if failed or request.action != kmocklib.action.CREATE or request.resource is None \
                or request.resource.plural != "jobs" or request.name is not None:
            return False
        body = request.data if isinstance(request.data, dict) else {}
        if (body.get("metadata") or {}).get("name") != VERIFY_JOB:
            return False
        failed.append(request)
        return True

    emulator[first_create] << 500
    async with operator.running():
        await record_backup(cluster)
        jobs = await eventually(lambda: verify_jobs(cluster), what="the verification Job despite the failed create")
        await eventually(lambda: job_annotations(cluster, "orders-backup-29000000")
                         .get("pgbackup.dev/verification-job") == VERIFY_JOB, what="the backup Job marked")
        await passes(emulator)
        started = await asyncio.to_thread(cluster.events, "VerificationStarted")
    assert failed
    assert [j["metadata"]["name"] for j in jobs] == [VERIFY_JOB]
    # the emulator stores the Job before answering 500 (a create whose answer was lost): then the retry finds
    # it (409) and says nothing; never twice
    assert len(started) <= 1


def catalog_jobs(cluster: Cluster) -> list[dict[str, Any]]:
    return [j for j in cluster.jobs() if j["metadata"]["labels"].get("app.kubernetes.io/component") == "catalog"]


async def test_a_backup_job_gone_while_the_operator_was_down_is_recorded_from_storage_once(
        cluster: Cluster, secrets: None, operator: Operator, emulator: Any) -> None:
    async with operator.running():
        await ready_policy(cluster)
    # While the operator is down the 02:00 run succeeds, and its Job is deleted (TTL, history limit) before the
    # operator comes back: only the CronJob's status tells that it ran.
    await asyncio.to_thread(cluster.batch.patch_namespaced_cron_job_status, "orders-backup", NAMESPACE, {
        "status": {"lastScheduleTime": "2026-11-23T02:00:00Z", "lastSuccessfulTime": "2026-11-23T02:03:10Z"}})
    stored = JobSummary(kind="catalog", phase="Completed", backup_id="20261123T020000Z", method="logical",
                        completed_at="2026-11-23T02:03:00Z", size_bytes=5 * 1024 * 1024, duration_seconds=170.0,
                        stored_backups=["20261123T020000Z", "20261122T020000Z"])
    async with operator.running():
        [sync] = await eventually(lambda: catalog_jobs(cluster), what="a catalog-sync Job")
        await asyncio.to_thread(finish_verify_job, cluster, sync["metadata"]["name"], stored)
        status = await eventually(lambda: (s := cluster.policy("orders").get("status", {})).get("lastBackup") and s,
                                  what="status.lastBackup from storage")
        await eventually(lambda: job_annotations(cluster, sync["metadata"]["name"]).get("pgbackup.dev/recorded"),
                         what="the catalog-sync Job marked recorded")
        await passes(emulator)
    async with operator.running():  # another restart: status is no longer behind, nothing runs again
        await passes(emulator)
        syncs = await asyncio.to_thread(catalog_jobs, cluster)
        recorded = await asyncio.to_thread(cluster.events, "BackupRecordedFromStorage")
    pod = sync["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["pgbackup", "catalog-summary"]
    assert not any("PASSWORD" in e["name"] and "value" in e for e in pod["containers"][0]["env"])
    assert status["lastBackup"]["id"] == "20261123T020000Z"
    assert status["lastBackup"]["completedAt"] == "2026-11-23T02:03:00Z" and status["lastBackup"]["size"] == "5.0 MiB"
    assert [b["id"] for b in status["backups"]] == ["20261123T020000Z"]
    condition = next(c for c in status["conditions"] if c["type"] == "LastBackupSucceeded")
    assert (condition["status"], condition["reason"]) == ("True", "RecordedFromStorage")
    BackupPolicyStatus.model_validate(status)
    assert len(syncs) == 1
    assert len(recorded) == 1 and "20261123T020000Z" in recorded[0]["message"]


async def test_a_restore_whose_status_write_failed_is_still_recorded_once(
        cluster: Cluster, secrets: None, operator: Operator, emulator: Any) -> None:
    failed = fail_first(emulator, "restorerequests", "result")  # the restore Job's result
    async with operator.running():
        await restores.ready_policy(cluster)
        await asyncio.to_thread(restores.create_request, cluster, "orders-restore", restores.restore_spec())
        plan_job = await restores.planning(cluster, "orders-restore")
        await asyncio.to_thread(restores.finish_job, cluster, plan_job, "Complete",
                                restores.summary_state(restores.plan_summary()))
        restore_job = (await eventually(lambda: restores.restore_jobs(cluster, "restore"), what="the restore Job"))[0]
        await asyncio.to_thread(restores.finish_job, cluster, restore_job, "Complete", restores.summary_state(
            restores.plan_summary(result=RestoreResult(restore_seconds=12.5), restore_seconds=12.5)))
        done = await eventually(lambda: (s := restores.status_of(cluster, "orders-restore")).get("phase")
                                == "Succeeded" and s, what="phase Succeeded despite the failed write")
        await eventually(lambda: job_annotations(cluster, restore_job["metadata"]["name"])
                         .get("pgbackup.dev/recorded"), what="the restore Job marked recorded")
        await passes(emulator)
        succeeded = await asyncio.to_thread(cluster.events, "RestoreSucceeded")
    assert failed
    assert done["result"]["restoreSeconds"] == 12.5
    assert len(succeeded) == 1


def test_concurrent_recorders_of_one_job_record_it_once() -> None:
    forget()
    calls: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def record() -> bool:
        calls.append(1)
        entered.set()
        release.wait(5)
        return True

    first = threading.Thread(target=lambda: run_once("uid-1/recorded", record))
    first.start()
    assert entered.wait(5)
    second_result: list[bool] = []
    second = threading.Thread(target=lambda: second_result.append(run_once("uid-1/recorded", record)))
    second.start()
    release.set()
    first.join(5)
    second.join(5)
    assert calls == [1] and second_result == [False]
    assert run_once("uid-2/recorded", lambda: False) is False  # nothing to record yet: a later call tries again
    assert run_once("uid-2/recorded", lambda: True) is True
    forget()


class PagedApi:
    """A list call of the Kubernetes client answered two items a page, with continue tokens, as an API server does
    for `limit`; remembers each call's limit."""

    def __init__(self, *_: Any) -> None:
        self.limits: list[int] = []
        self.items = [{"metadata": {"name": f"p{index}", "namespace": NAMESPACE}} for index in range(5)]

    def page(self, *_: Any, limit: int, _preload_content: bool, _continue: str = "0", **__: Any) -> Any:
        assert not _preload_content
        self.limits.append(limit)
        start = int(_continue)
        rest = {"continue": str(start + 2)} if start + 2 < len(self.items) else {}
        return type("Response", (), {"data": json.dumps({"items": self.items[start:start + 2], "metadata": rest})})

    list_cluster_custom_object = list_namespaced_custom_object = page
    list_cron_job_for_all_namespaces = list_namespaced_cron_job = page


@pytest.mark.parametrize("namespaces", [(), (NAMESPACE,)])
def test_policies_and_cronjobs_are_read_page_by_page(monkeypatch: pytest.MonkeyPatch,
                                                      namespaces: tuple[str, ...]) -> None:
    """The hourly check for missed backup runs reads every policy and CronJob: in pages, so that a large cluster's
    are never all in the operator's memory at once."""
    api = PagedApi()
    monkeypatch.setattr(kube, "client", lambda: None)
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", lambda _: api)
    monkeypatch.setattr(kubernetes.client, "BatchV1Api", lambda _: api)
    expected = [f"p{index}" for index in range(5)]
    assert [p["metadata"]["name"] for p in kube.list_policies(namespaces, chunk=2)] == expected
    assert [c["metadata"]["name"] for c in kube.list_cronjobs_selected("x=y", namespaces, chunk=2)] == expected
    assert api.limits == [2] * 6
