"""RestoreRequests against the real operator: plan Job first, then exactly one restore Job, status and Events.

The emulator runs no Jobs: tests finish them as the Job controller and kubelet would (a pod with the runner's
termination message, then the Job's Complete/Failed condition)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pgbackup.api import JobSummary
from pgbackup.api.restore import CheckResult, RestorePlan, RestoreRequestStatus, RestoreResult
from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec

pytestmark = pytest.mark.timeout(60)

BACKUP_ID = "20261123T020000Z"
PLAN = RestorePlan(backup=BACKUP_ID, target="db.shop.svc:5432/orders_restored",
                   objects=[f"s3://backups/{BACKUP_ID}/orders.dump.zst"],
                   steps=["create database orders_restored", "pg_restore -j 2", "check row counts"])


def restore_spec(**overrides: Any) -> dict[str, Any]:
    return {"policyRef": {"name": "orders"}, "backup": "latest", "target": {"database": "orders_restored"},
            **overrides}


def create_request(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "RestoreRequest",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1,
                         "resourceVersion": "1"},
            "spec": spec}
    cluster.custom.create_namespaced_custom_object("pgbackup.dev", "v1alpha1", NAMESPACE, "restorerequests", body)


def request(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.custom.get_namespaced_custom_object("pgbackup.dev", "v1alpha1", NAMESPACE, "restorerequests", name)


def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    status: dict[str, Any] = request(cluster, name).get("status") or {}
    return status


def condition(status: dict[str, Any], type: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == type), None)


def restore_jobs(cluster: Cluster, step: str | None = None) -> list[dict[str, Any]]:
    return [job for job in cluster.jobs()
            if job["metadata"]["labels"].get("app.kubernetes.io/component") == "restore"
            and (step is None or job["metadata"]["annotations"]["pgbackup.dev/restore-step"] == step)]


def finish_job(cluster: Cluster, job: dict[str, Any], condition: str, state: dict[str, Any],
               reason: str | None = None) -> None:
    """What the Job controller and kubelet would do: the Job's pod with its container state, then the Job's
    final condition."""
    name = job["metadata"]["name"]
    cluster.core.create_namespaced_pod(NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{name}-abcde", "namespace": NAMESPACE,
                     "labels": {**job["spec"]["template"]["metadata"]["labels"], "job-name": name},
                     "creationTimestamp": "2026-11-23T10:00:01Z"},
        "spec": job["spec"]["template"]["spec"],
        "status": {"phase": "Failed" if condition == "Failed" else "Succeeded",
                   "containerStatuses": [{"name": "backup", "state": state}]},
    }, _preload_content=False)
    cluster.batch.patch_namespaced_job_status(
        name, NAMESPACE, {"status": {"conditions": [{"type": condition, "status": "True", "reason": reason}]}},
        _content_type="application/merge-patch+json")


def summary_state(summary: JobSummary) -> dict[str, Any]:
    code = 0 if summary.phase == "Completed" else 1
    return {"terminated": {"exitCode": code, "message": summary.to_termination_message()}}


def plan_summary(**fields: Any) -> JobSummary:
    return JobSummary(kind="restore", phase="Completed", backup_id=BACKUP_ID, plan=PLAN, **fields)


async def ready_policy(cluster: Cluster, **overrides: Any) -> None:
    await asyncio.to_thread(cluster.create_policy, "orders", policy_spec(**overrides))


async def planning(cluster: Cluster, name: str) -> dict[str, Any]:
    """Wait for the plan Job and phase Planning; returns the plan Job."""
    jobs = await eventually(lambda: restore_jobs(cluster, "plan"), what="the plan Job")
    await eventually(lambda: status_of(cluster, name).get("phase") == "Planning", what="phase Planning")
    assert len(jobs) == 1
    return jobs[0]


def command(job: dict[str, Any]) -> list[str]:
    result: list[str] = job["spec"]["template"]["spec"]["containers"][0]["command"]
    return result


def restore_env(job: dict[str, Any]) -> dict[str, Any]:
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    document: dict[str, Any] = json.loads(next(e["value"] for e in env if e["name"] == "PGBACKUP_RESTORE"))
    return document


async def test_plan_first_then_one_restore_job_then_succeeded(cluster: Cluster, secrets: None,
                                                              operator: Operator) -> None:
    result = RestoreResult(restore_seconds=73.2, row_counts={"orders.public.orders": 3},
                           checks=[CheckResult(name="rowcount:orders.public.orders", passed=True)])
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "orders-restore", restore_spec())
        plan_job = await planning(cluster, "orders-restore")
        assert command(plan_job) == ["pgbackup", "restore-request", "--dry-run"]
        assert plan_job["metadata"]["ownerReferences"][0]["kind"] == "RestoreRequest"
        assert plan_job["metadata"]["ownerReferences"][0]["uid"] == "uid-orders-restore"
        assert plan_job["spec"]["backoffLimit"] == 0
        assert (await asyncio.to_thread(status_of, cluster, "orders-restore"))["jobName"] == plan_job["metadata"]["name"]

        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        restore_job = (await eventually(lambda: restore_jobs(cluster, "restore"), what="the restore Job"))[0]
        running = await eventually(lambda: (s := status_of(cluster, "orders-restore")).get("phase") == "Running"
                                   and s, what="phase Running")
        started = await eventually(lambda: cluster.events("RestoreStarted"), what="a RestoreStarted Event")
        assert command(restore_job) == ["pgbackup", "restore-request"]
        assert restore_env(restore_job) == restore_env(plan_job)
        assert running["plan"]["backup"] == BACKUP_ID and running["plan"]["steps"] == PLAN.steps
        assert running["jobName"] == restore_job["metadata"]["name"]

        await asyncio.to_thread(finish_job, cluster, restore_job, "Complete",
                                summary_state(plan_summary(result=result, restore_seconds=73.2, storage_retries=3)))
        done = await eventually(lambda: (s := status_of(cluster, "orders-restore")).get("phase") == "Succeeded"
                                and s, what="phase Succeeded")
        succeeded = await eventually(lambda: cluster.events("RestoreSucceeded"), what="a RestoreSucceeded Event")
        assert len(await asyncio.to_thread(restore_jobs, cluster)) == 2
    assert done["result"]["rowCounts"] == {"orders.public.orders": 3}
    assert done["result"]["restoreSeconds"] == 73.2 and done["result"]["checks"][0]["passed"] is True
    assert done["duration"] == "1m13s"  # the DURATION printer column, as kubectl shows durations
    assert done["observedGeneration"] == 1
    ready = condition(done, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "RestoreSucceeded")
    RestoreRequestStatus.model_validate(done)
    assert len(started) == 1 and BACKUP_ID in started[0]["message"]
    assert started[0]["involvedObject"]["name"] == "orders-restore"
    assert len(succeeded) == 1 and "orders_restored" in succeeded[0]["message"]
    assert "1/1 checks passed" in succeeded[0]["message"]
    assert "3 storage requests were retried" in succeeded[0]["message"]  # the store was flaky: say so


async def test_dry_run_succeeds_after_the_plan_without_a_restore_job(cluster: Cluster, secrets: None,
                                                                     operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "peek", restore_spec(dryRun=True))
        plan_job = await planning(cluster, "peek")
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        done = await eventually(lambda: (s := status_of(cluster, "peek")).get("phase") == "Succeeded" and s,
                                what="phase Succeeded")
        planned = await eventually(lambda: cluster.events("RestorePlanned"), what="a RestorePlanned Event")
        assert len(await asyncio.to_thread(restore_jobs, cluster)) == 1
    assert done["plan"]["target"] == PLAN.target and "result" not in done
    assert "nothing was changed" in planned[0]["message"]
    assert not await asyncio.to_thread(cluster.events, "RestoreStarted")


async def test_a_failed_plan_fails_the_request_with_the_runners_reason(cluster: Cluster, secrets: None,
                                                                       operator: Operator) -> None:
    error = "no complete backup 20990101T000000Z in s3://backups/; list the backups with `pgbackup list`"
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "wrong-id", restore_spec(backup="20990101T000000Z"))
        plan_job = await planning(cluster, "wrong-id")
        failure = JobSummary(kind="restore", phase="Failed", reason="BackupNotFound", error=error)
        await asyncio.to_thread(finish_job, cluster, plan_job, "Failed", summary_state(failure), "BackoffLimitExceeded")
        done = await eventually(lambda: (s := status_of(cluster, "wrong-id")).get("phase") == "Failed" and s,
                                what="phase Failed")
        events = await eventually(lambda: cluster.events("RestoreFailed"), what="a RestoreFailed Event")
        assert len(await asyncio.to_thread(restore_jobs, cluster)) == 1
    assert done["error"] == error
    ready = condition(done, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "BackupNotFound")
    assert events[0]["type"] == "Warning" and "BackupNotFound" in events[0]["message"]
    assert "pgbackup list" in events[0]["message"] and "nothing was changed" in events[0]["message"]


async def test_a_restore_job_failing_without_summary_gets_the_jobs_reason(cluster: Cluster, secrets: None,
                                                                          operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "slow", restore_spec())
        plan_job = await planning(cluster, "slow")
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        restore_job = (await eventually(lambda: restore_jobs(cluster, "restore"), what="the restore Job"))[0]
        await asyncio.to_thread(finish_job, cluster, restore_job, "Failed",
                                {"terminated": {"exitCode": 137, "reason": "Error", "message": "Killed"}},
                                "DeadlineExceeded")
        done = await eventually(lambda: (s := status_of(cluster, "slow")).get("phase") == "Failed" and s,
                                what="phase Failed")
        await eventually(lambda: cluster.events("RestoreFailed"), what="a RestoreFailed Event")
    ready = condition(done, "Ready")
    assert ready is not None and ready["reason"] == "DeadlineExceeded"
    assert done["plan"]["backup"] == BACKUP_ID  # kept from the plan


async def test_missing_policy_keeps_it_pending_until_the_policy_appears(cluster: Cluster, secrets: None,
                                                                        operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(create_request, cluster, "early", restore_spec())
        pending = await eventually(lambda: (s := status_of(cluster, "early")).get("phase") == "Pending" and s,
                                   what="phase Pending")
        assert not await asyncio.to_thread(restore_jobs, cluster)
        await ready_policy(cluster)
        await planning(cluster, "early")
    ready = condition(pending, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "PolicyNotFound")
    assert f"BackupPolicy {NAMESPACE}/orders" in ready["message"] and "spec.policyRef" in ready["message"]


async def test_missing_target_credentials_keep_it_pending(cluster: Cluster, secrets: None,
                                                          operator: Operator) -> None:
    spec = restore_spec(target={"database": "x", "credentialsSecret": {"name": "target-creds"}})
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "creds", spec)
        ready = await eventually(lambda: condition(status_of(cluster, "creds"), "Ready"), what="Ready")
        assert not await asyncio.to_thread(restore_jobs, cluster)
        await asyncio.to_thread(cluster.create_secret, "target-creds", {"username": "u", "password": "p-for-tests"})
        plan_job = await planning(cluster, "creds")
    assert ready["reason"] == "SecretNotFound" and "target-creds" in ready["message"]
    assert "spec.target.credentialsSecret" in ready["message"]
    env = {e["name"]: e.get("valueFrom") for e in plan_job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGPASSWORD"] == {"secretKeyRef": {"name": "target-creds", "key": "password"}}


async def test_encrypted_policy_without_identity_is_reported(cluster: Cluster, secrets: None,
                                                             operator: Operator) -> None:
    encryption = {"recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]}
    async with operator.running():
        await ready_policy(cluster, encryption=encryption)
        await asyncio.to_thread(create_request, cluster, "locked", restore_spec())
        ready = await eventually(lambda: condition(status_of(cluster, "locked"), "Ready"), what="Ready")
        assert not await asyncio.to_thread(restore_jobs, cluster)
    assert ready["reason"] == "IdentitySecretMissing" and "encryption.identitySecret" in ready["message"]


async def test_invalid_spec_fails_naming_the_field(cluster: Cluster, secrets: None, operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "bad", restore_spec(backup="yesterday"))
        done = await eventually(lambda: (s := status_of(cluster, "bad")).get("phase") == "Failed" and s,
                                what="phase Failed")
        assert not await asyncio.to_thread(restore_jobs, cluster)
    ready = condition(done, "Ready")
    assert ready is not None and ready["reason"] == "InvalidSpec" and "spec.backup" in ready["message"]


async def test_spec_edits_after_the_start_are_reported_not_acted_on(cluster: Cluster, secrets: None,
                                                                    operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "frozen", restore_spec())
        plan_job = await planning(cluster, "frozen")
        await asyncio.to_thread(
            cluster.custom.patch_namespaced_custom_object, "pgbackup.dev", "v1alpha1", NAMESPACE, "restorerequests",
            "frozen", {"metadata": {"generation": 2}, "spec": {"target": {"database": "elsewhere"}}},
            _content_type="application/merge-patch+json")
        changed = await eventually(lambda: condition(status_of(cluster, "frozen"), "SpecChanged"),
                                   what="SpecChanged")
        assert len(await asyncio.to_thread(restore_jobs, cluster)) == 1

        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        restore_job = (await eventually(lambda: restore_jobs(cluster, "restore"), what="the restore Job"))[0]
        status = await asyncio.to_thread(status_of, cluster, "frozen")
    assert changed["status"] == "True"
    assert changed["message"] == ("spec changed after the restore started; changes are ignored: "
                                  "create a new RestoreRequest")
    assert status["observedGeneration"] == 2
    assert restore_env(restore_job)["spec"]["target"]["database"] == "orders_restored"


async def test_operator_restarts_never_start_a_second_job(cluster: Cluster, secrets: None,
                                                          operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "twice", restore_spec())
        plan_job = await planning(cluster, "twice")

    # A crash right after the plan Job was created, before the status said so:
    await asyncio.to_thread(cluster.custom.patch_namespaced_custom_object_status, "pgbackup.dev", "v1alpha1",
                            NAMESPACE, "restorerequests", "twice", {"status": {"jobName": None, "phase": "Pending"}})
    async with operator.running():
        await eventually(lambda: status_of(cluster, "twice").get("jobName") == plan_job["metadata"]["name"],
                         what="jobName after the restart")
        assert len(await asyncio.to_thread(restore_jobs, cluster)) == 1

    # The plan Job finished while no operator ran:
    await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
    async with operator.running():
        await eventually(lambda: status_of(cluster, "twice").get("phase") == "Running", what="phase Running")
        await eventually(lambda: cluster.events("RestoreStarted"), what="a RestoreStarted Event")
    async with operator.running():
        await eventually(lambda: status_of(cluster, "twice").get("phase") == "Running", what="still Running")
        await asyncio.sleep(0.5)  # give a wrongly repeated handler the chance to act
        jobs = await asyncio.to_thread(restore_jobs, cluster)
    assert sorted(j["metadata"]["annotations"]["pgbackup.dev/restore-step"] for j in jobs) == ["plan", "restore"]
    assert len(await asyncio.to_thread(cluster.events, "RestoreStarted")) == 1


async def test_a_corrected_invalid_spec_is_acted_on(cluster: Cluster, secrets: None, operator: Operator) -> None:
    """Nothing started for an invalid spec, so fixing it is not an edit of a running restore."""
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "typo", restore_spec(jobs=99))
        await eventually(lambda: status_of(cluster, "typo").get("phase") == "Failed", what="phase Failed")
        await asyncio.to_thread(
            cluster.custom.patch_namespaced_custom_object, "pgbackup.dev", "v1alpha1", NAMESPACE, "restorerequests",
            "typo", {"metadata": {"generation": 2}, "spec": {"jobs": 4}}, _content_type="application/merge-patch+json")
        plan_job = await planning(cluster, "typo")
        status = await asyncio.to_thread(status_of, cluster, "typo")
    assert restore_env(plan_job)["spec"]["jobs"] == 4
    assert status["observedGeneration"] == 2 and "error" not in status
    assert condition(status, "SpecChanged") is None


async def test_a_restore_job_deleted_before_it_finished_fails_the_request(cluster: Cluster, secrets: None,
                                                                          operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_request, cluster, "gone", restore_spec())
        plan_job = await planning(cluster, "gone")
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        restore_job = (await eventually(lambda: restore_jobs(cluster, "restore"), what="the restore Job"))[0]
        await eventually(lambda: status_of(cluster, "gone").get("phase") == "Running", what="phase Running")
        await asyncio.to_thread(cluster.batch.delete_namespaced_job, restore_job["metadata"]["name"], NAMESPACE)
        done = await eventually(lambda: (s := status_of(cluster, "gone")).get("phase") == "Failed" and s,
                                what="phase Failed")
    ready = condition(done, "Ready")
    assert ready is not None and ready["reason"] == "JobDeleted"
    assert "create a new RestoreRequest" in done["error"]
