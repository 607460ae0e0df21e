"""Finished backup Jobs are read back into the policy status and Events; backup-now runs exactly once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pgbackup.api import BackupPolicyStatus, JobSummary
from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec

pytestmark = pytest.mark.timeout(60)


def finish_job(cluster: Cluster, cronjob: dict[str, Any], job_name: str, condition: str, reason: str | None,
               container_state: dict[str, Any]) -> None:
    """Do what the Job controller and kubelet would: a Job from the CronJob's template, its pod, their status."""
    template = cronjob["spec"]["jobTemplate"]
    cluster.core.create_namespaced_pod(NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job_name}-abcde", "namespace": NAMESPACE,
                     "labels": {**template["metadata"]["labels"], "job-name": job_name},
                     "creationTimestamp": "2026-11-23T02:00:01Z"},
        "spec": template["spec"]["template"]["spec"],
        "status": {"phase": "Failed" if condition == "Failed" else "Succeeded",
                   "containerStatuses": [{"name": "backup", "state": container_state}]},
    }, _preload_content=False)
    cluster.batch.create_namespaced_job(NAMESPACE, {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name, "namespace": NAMESPACE, "uid": f"uid-{job_name}",
                     "labels": template["metadata"]["labels"], "annotations": template["metadata"]["annotations"]},
        "spec": template["spec"],
        "status": {"conditions": [{"type": condition, "status": "True", "reason": reason}]},
    }, _preload_content=False)


async def ready_policy(cluster: Cluster, name: str = "orders", **annotations: str) -> dict[str, Any]:
    await asyncio.to_thread(cluster.create_policy, name, policy_spec(), annotations)
    return await eventually(lambda: cluster.cronjob(f"{name}-backup"), what="the CronJob")


async def test_finished_job_with_summary_is_recorded_with_an_event(cluster: Cluster, secrets: None,
                                                                   operator: Operator) -> None:
    summary = JobSummary(kind="backup", phase="Completed", backup_id="20261123T020000Z", method="logical",
                         size_bytes=3 * 1024 * 1024, duration_seconds=42.0,
                         manifest="s3://backups/20261123T020000Z/manifest.json", manifest_sha256="ab" * 32)
    async with operator.running():
        cronjob = await ready_policy(cluster)
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000000", "Complete", None,
                                {"terminated": {"exitCode": 0, "message": summary.to_termination_message()}})
        status = await eventually(lambda: (s := cluster.policy("orders").get("status", {})).get("lastBackup") and s,
                                  what="status.lastBackup")
        events = await eventually(lambda: cluster.events("BackupSucceeded"), what="a BackupSucceeded Event")
        job = await eventually(lambda: (j := cluster.batch.read_namespaced_job("orders-backup-29000000", NAMESPACE))
                               .metadata.annotations.get("pgbackup.dev/recorded") and j, what="the recorded mark")
    assert status["lastBackup"]["id"] == "20261123T020000Z"
    assert status["lastBackup"]["phase"] == "Completed" and status["lastBackup"]["size"] == "3.0 MiB"
    assert [b["id"] for b in status["backups"]] == ["20261123T020000Z"]
    assert status["backups"][0]["manifest"].endswith("manifest.json")
    condition = next(c for c in status["conditions"] if c["type"] == "LastBackupSucceeded")
    assert condition["status"] == "True"
    BackupPolicyStatus.model_validate(status)
    assert len(events) == 1
    assert "3.0 MiB" in events[0]["message"] and "42s" in events[0]["message"]
    assert events[0]["involvedObject"]["name"] == "orders"
    assert job.metadata.annotations["pgbackup.dev/recorded"] == "Completed"


async def test_failed_job_without_summary_gets_its_reason(cluster: Cluster, secrets: None,
                                                          operator: Operator) -> None:
    async with operator.running():
        cronjob = await ready_policy(cluster)
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000001", "Failed", "DeadlineExceeded",
                                {"waiting": {"reason": "ImagePullBackOff", "message": "image not found"}})
        condition = await eventually(lambda: cluster.condition("orders", "LastBackupSucceeded"),
                                     what="LastBackupSucceeded")
        events = await eventually(lambda: cluster.events("BackupFailed"), what="a BackupFailed Event")
        last = (await asyncio.to_thread(cluster.policy, "orders"))["status"]["lastBackup"]
    assert (condition["status"], condition["reason"]) == ("False", "ImagePullBackOff")
    assert last["phase"] == "Failed" and "image not found" in last["error"]
    assert events[0]["type"] == "Warning" and "ImagePullBackOff" in events[0]["message"]


async def test_failed_job_reason_from_the_job_condition(cluster: Cluster, secrets: None,
                                                        operator: Operator) -> None:
    async with operator.running():
        cronjob = await ready_policy(cluster)
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000002", "Failed",
                                "BackoffLimitExceeded", {"terminated": {"exitCode": 1, "message": "Traceback ..."}})
        condition = await eventually(lambda: cluster.condition("orders", "LastBackupSucceeded"),
                                     what="LastBackupSucceeded")
    assert (condition["status"], condition["reason"]) == ("False", "BackoffLimitExceeded")


async def test_backup_now_creates_one_job_also_across_restarts(cluster: Cluster, secrets: None,
                                                               operator: Operator) -> None:
    async with operator.running():
        cronjob = await ready_policy(cluster, **{"pgbackup.dev/backup-now": "first"})
        jobs = await eventually(lambda: cluster.jobs(), what="the on-demand Job")
        await eventually(lambda: cluster.policy("orders")["status"].get("backupNowHandled") == "first",
                         what="status.backupNowHandled")
    assert len(jobs) == 1
    pod = jobs[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["env"].pop() == {"name": "PGBACKUP_BACKUP_PURPOSE", "value": "on-demand"}
    assert pod == cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert jobs[0]["metadata"]["annotations"]["pgbackup.dev/backup-now"] == "first"

    # A restart with the status not yet written (e.g. a crash right after the Job was created):
    await asyncio.to_thread(cluster.custom.patch_namespaced_custom_object_status, "pgbackup.dev", "v1alpha1",
                            NAMESPACE, "backuppolicies", "orders", {"status": {"backupNowHandled": None}})
    async with operator.running():
        await eventually(lambda: cluster.policy("orders")["status"].get("backupNowHandled") == "first",
                         what="status.backupNowHandled after the restart")
        assert len(await asyncio.to_thread(cluster.jobs)) == 1

        await asyncio.to_thread(cluster.patch_policy, "orders",
                                {"metadata": {"annotations": {"pgbackup.dev/backup-now": "second"}}}, False)
        jobs = await eventually(lambda: len(j := cluster.jobs()) == 2 and j, what="a second on-demand Job")
    assert {j["metadata"]["annotations"]["pgbackup.dev/backup-now"] for j in jobs} == {"first", "second"}


def backup_summary(backup_id: str, **extra: Any) -> dict[str, Any]:
    summary = JobSummary(kind="backup", phase="Completed", backup_id=backup_id, method="logical",
                         size_bytes=3 * 1024 * 1024, duration_seconds=42.0, completed_at=f"{backup_id[:4]}-{backup_id[4:6]}-{backup_id[6:8]}T02:01:00Z",
                         **extra)
    return {"terminated": {"exitCode": 0, "message": summary.to_termination_message()}}


async def test_a_completed_job_without_summary_is_unknown_and_keeps_the_last_backup(cluster: Cluster, secrets: None,
                                                                                     operator: Operator) -> None:
    async with operator.running():
        cronjob = await ready_policy(cluster)
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000010", "Complete", None,
                                backup_summary("20261122T020000Z"))
        await eventually(lambda: cluster.condition("orders", "LastBackupSucceeded"), what="the first backup")
        # the next Job completes but its container left no summary (e.g. the termination log was not writable)
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000011", "Complete", None,
                                {"terminated": {"exitCode": 0}})
        condition = await eventually(
            lambda: (c := cluster.condition("orders", "LastBackupSucceeded")) and c["status"] == "Unknown" and c,
            what="LastBackupSucceeded=Unknown")
        events = await eventually(lambda: cluster.events("BackupOutcomeUnknown"), what="a BackupOutcomeUnknown Event")
        job = await eventually(lambda: (j := cluster.batch.read_namespaced_job("orders-backup-29000011", NAMESPACE))
                               .metadata.annotations.get("pgbackup.dev/recorded") and j, what="the recorded mark")
        status = (await asyncio.to_thread(cluster.policy, "orders"))["status"]
    assert condition["reason"] == "NoSummary"
    assert "orders-backup-29000011" in condition["message"] and "kubectl logs" in condition["message"]
    assert status["lastBackup"]["id"] == "20261122T020000Z"  # no evidence of a new backup: the RPO does not reset
    assert status["lastBackup"]["jobName"] == "orders-backup-29000010"
    assert status["lastBackup"]["completedAt"] == "2026-11-22T02:01:00Z"
    assert [b["id"] for b in status["backups"]] == ["20261122T020000Z"]
    assert events[0]["type"] == "Warning" and "orders-backup-29000011" in events[0]["message"]
    assert job.metadata.annotations["pgbackup.dev/recorded"] == "Unknown"
    BackupPolicyStatus.model_validate(status)


async def test_status_backups_follow_storage_after_retention(cluster: Cluster, secrets: None,
                                                             operator: Operator) -> None:
    async with operator.running():
        cronjob = await ready_policy(cluster)
        for number, backup_id in enumerate(["20261120T020000Z", "20261121T020000Z"]):
            await asyncio.to_thread(finish_job, cluster, cronjob, f"orders-backup-2900002{number}", "Complete", None,
                                    backup_summary(backup_id))
            await eventually(lambda: backup_id in [b["id"] for b in cluster.policy("orders")["status"]
                                                   .get("backups", [])], what=f"{backup_id} in status.backups")
        # keepLast 2: the third backup's retention deleted 20261120T020000Z
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000022", "Complete", None,
                                backup_summary("20261122T020000Z",
                                               stored_backups=["20261122T020000Z", "20261121T020000Z"]))
        ids = await eventually(lambda: (ids := [b["id"] for b in cluster.policy("orders")["status"]["backups"]])[0]
                               == "20261122T020000Z" and ids, what="the third backup in status.backups")
    assert ids == ["20261122T020000Z", "20261121T020000Z"]
