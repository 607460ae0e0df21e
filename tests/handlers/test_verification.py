"""Backup verification with the real operator against kmock: one verification Job per recorded backup,
finished verification Jobs read back into status, the verify.schedule CronJob reconciled with the policy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pgbackup.api import BackupPolicyStatus, JobSummary, jobenv
from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec
from tests.handlers.test_jobs import finish_job

pytestmark = pytest.mark.timeout(60)

BACKUP_ID = "20261123T020000Z"
VERIFY_JOB = "orders-verify-20261123t020000z"
AGE_RECIPIENT = "age1cd5djhe2mnms2c4xfjhm9vxn5tuavwqrmxuxqs6lkyfwtnxsg4nses7mfk"


def verifying_spec(**verify: Any) -> dict[str, Any]:
    return policy_spec(verify={"enabled": True, **verify},
                       encryption={"recipients": [AGE_RECIPIENT], "identitySecret": {"name": "age", "key": "identity"}})


@pytest.fixture()
async def age_secret(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.create_secret, "age", {"identity": "AGE-SECRET-KEY-1FAKEFORTESTS"})


def verify_jobs(cluster: Cluster) -> list[dict[str, Any]]:
    return [j for j in cluster.jobs() if j["metadata"]["labels"].get("app.kubernetes.io/component") == "verify"]


def backup_job_annotations(cluster: Cluster, name: str) -> dict[str, str]:
    return cluster.batch.read_namespaced_job(name, NAMESPACE).metadata.annotations or {}


async def record_backup(cluster: Cluster, job_name: str = "orders-backup-29000000", backup_id: str = BACKUP_ID,
                        spec: dict[str, Any] | None = None) -> None:
    """A policy whose backup Job finished and was recorded as Completed."""
    await asyncio.to_thread(cluster.create_policy, "orders", spec or verifying_spec())
    cronjob = await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
    summary = JobSummary(kind="backup", phase="Completed", backup_id=backup_id, method="logical",
                         completed_at="2026-11-23T02:05:00Z", size_bytes=1024)
    await asyncio.to_thread(finish_job, cluster, cronjob, job_name, "Complete", None,
                            {"terminated": {"exitCode": 0, "message": summary.to_termination_message()}})
    await eventually(lambda: backup_job_annotations(cluster, job_name).get("pgbackup.dev/recorded") == "Completed",
                     what="the backup recorded")


def finish_verify_job(cluster: Cluster, job_name: str, summary: JobSummary, condition: str = "Complete") -> None:
    """What the Job controller and kubelet would do for the operator's verification Job: a pod with the
    runner's termination message, then the Job's final condition."""
    job = cluster.batch.api_client.sanitize_for_serialization(cluster.batch.read_namespaced_job(job_name, NAMESPACE))
    cluster.core.create_namespaced_pod(NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job_name}-abcde", "namespace": NAMESPACE,
                     "labels": {**job["metadata"]["labels"], "job-name": job_name},
                     "creationTimestamp": "2026-11-23T03:00:00Z"},
        "spec": job["spec"]["template"]["spec"],
        "status": {"phase": "Succeeded" if condition == "Complete" else "Failed", "containerStatuses": [
            {"name": "backup", "state": {"terminated": {"exitCode": 0 if condition == "Complete" else 1,
                                                        "message": summary.to_termination_message()}}}]},
    }, _preload_content=False)
    cluster.batch.patch_namespaced_job_status(job_name, NAMESPACE, {
        "status": {"conditions": [{"type": condition, "status": "True"}]}})


async def test_recorded_backup_gets_exactly_one_verification_job_also_after_a_restart(
        cluster: Cluster, secrets: None, age_secret: None, operator: Operator) -> None:
    async with operator.running():
        await record_backup(cluster)
        jobs = await eventually(lambda: verify_jobs(cluster), what="the verification Job")
        await eventually(lambda: backup_job_annotations(cluster, "orders-backup-29000000")
                         .get("pgbackup.dev/verification-job") == VERIFY_JOB, what="the backup Job marked")
        started = await eventually(lambda: cluster.events("VerificationStarted"), what="a VerificationStarted Event")
    [job] = jobs
    assert job["metadata"]["name"] == VERIFY_JOB
    assert job["metadata"]["labels"]["pgbackup.dev/policy"] == "orders"
    assert job["metadata"]["ownerReferences"][0]["name"] == "orders"
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert pod["containers"][0]["command"] == jobenv.COMMAND_VERIFY
    assert env[jobenv.ENV_VERIFY_BACKUP_ID] == BACKUP_ID
    assert any(v.get("secret", {}).get("secretName") == "age" for v in pod["volumes"])
    assert BACKUP_ID in started[0]["message"]

    # A crash after the Job was created but before the backup Job was marked: the restart must not
    # create a second verification Job.
    await asyncio.to_thread(cluster.batch.patch_namespaced_job, "orders-backup-29000000", NAMESPACE,
                            {"metadata": {"annotations": {"pgbackup.dev/verification-job": None}}})
    async with operator.running():
        await eventually(lambda: backup_job_annotations(cluster, "orders-backup-29000000")
                         .get("pgbackup.dev/verification-job") == VERIFY_JOB, what="the backup Job marked again")
        assert len(await asyncio.to_thread(verify_jobs, cluster)) == 1
    assert len(await asyncio.to_thread(cluster.events, "VerificationStarted")) == 1


async def test_no_verification_job_when_verification_is_off(cluster: Cluster, secrets: None,
                                                            operator: Operator) -> None:
    async with operator.running():
        await record_backup(cluster, spec=policy_spec())
        await eventually(lambda: backup_job_annotations(cluster, "orders-backup-29000000")
                         .get("pgbackup.dev/verification-job") == "disabled", what="the backup Job marked")
        assert await asyncio.to_thread(verify_jobs, cluster) == []


async def test_passed_verification_is_recorded_with_condition_event_and_rto(
        cluster: Cluster, secrets: None, age_secret: None, operator: Operator) -> None:
    summary = JobSummary(kind="verify", phase="Completed", backup_id=BACKUP_ID, reason="RestoreVerified",
                         restore_seconds=42.5, completed_at="2026-11-23T03:10:00Z")
    async with operator.running():
        await record_backup(cluster)
        await eventually(lambda: verify_jobs(cluster), what="the verification Job")
        await asyncio.to_thread(finish_verify_job, cluster, VERIFY_JOB, summary)
        verified = await eventually(lambda: cluster.condition("orders", "Verified"), what="Verified")
        events = await eventually(lambda: cluster.events("VerificationSucceeded"), what="VerificationSucceeded")
        await eventually(lambda: backup_job_annotations(cluster, VERIFY_JOB).get("pgbackup.dev/recorded") == "Passed",
                         what="the verification Job marked recorded")
        status = (await asyncio.to_thread(cluster.policy, "orders"))["status"]
    assert (verified["status"], verified["reason"]) == ("True", "RestoreVerified")
    assert BACKUP_ID in verified["message"]
    record = next(b for b in status["backups"] if b["id"] == BACKUP_ID)
    assert record["verification"]["phase"] == "Passed"
    assert record["verification"]["restoreSeconds"] == 42.5
    assert record["verification"]["checkedAt"].startswith("2026-11-23T03:10:00")
    assert status["lastBackup"]["verified"] is True
    assert status["measured"]["rtoSeconds"] == 42.5
    assert {"Ready", "LastBackupSucceeded", "Verified"} <= {c["type"] for c in status["conditions"]}
    assert len(events) == 1 and "42.5s" in events[0]["message"]
    BackupPolicyStatus.model_validate(status)


async def test_row_count_mismatch_turns_verified_false_naming_backup_and_table(
        cluster: Cluster, secrets: None, age_secret: None, operator: Operator) -> None:
    summary = JobSummary(kind="verify", phase="Failed", backup_id=BACKUP_ID, reason="RowCountMismatch",
                         restore_seconds=3.0, error="row counts differ: shop.public.orders restored 41, manifest 42")
    async with operator.running():
        await record_backup(cluster)
        await eventually(lambda: verify_jobs(cluster), what="the verification Job")
        await asyncio.to_thread(finish_verify_job, cluster, VERIFY_JOB, summary, "Failed")
        verified = await eventually(lambda: cluster.condition("orders", "Verified"), what="Verified")
        events = await eventually(lambda: cluster.events("VerificationFailed"), what="VerificationFailed")
        status = (await asyncio.to_thread(cluster.policy, "orders"))["status"]
    assert (verified["status"], verified["reason"]) == ("False", "RowCountMismatch")
    assert BACKUP_ID in verified["message"] and "public.orders" in verified["message"]
    assert status["backups"][0]["verification"]["phase"] == "Failed"
    assert status["backups"][0]["verification"]["reason"] == "RowCountMismatch"
    assert status["lastBackup"]["verified"] is False
    assert events[0]["type"] == "Warning" and "RowCountMismatch" in events[0]["message"]


async def test_a_verification_the_image_cannot_run_is_recorded_not_possible(
        cluster: Cluster, secrets: None, age_secret: None, operator: Operator) -> None:
    """The runner exits 3 with ServerBinariesMissing (a PostgreSQL 13 backup, or an image without the major):
    the backup is not judged; status says NotPossible and what to install, the condition Verified is Unknown."""
    summary = JobSummary(kind="verify", phase="Failed", backup_id=BACKUP_ID, reason="ServerBinariesMissing",
                         error="no PostgreSQL 13 server binaries (initdb, pg_ctl, postgres) to restore into: found 14 "
                               "(/usr/lib/postgresql/14/bin), 18 (/usr/lib/postgresql/18/bin). Use the "
                               "pgbackup-operator image (it carries PostgreSQL 14 to 18) or install postgresql-13")
    async with operator.running():
        await record_backup(cluster)
        await eventually(lambda: verify_jobs(cluster), what="the verification Job")
        await asyncio.to_thread(finish_verify_job, cluster, VERIFY_JOB, summary, "Failed")
        verified = await eventually(lambda: cluster.condition("orders", "Verified"), what="Verified")
        events = await eventually(lambda: cluster.events("VerificationNotPossible"), what="VerificationNotPossible")
        await eventually(lambda: backup_job_annotations(cluster, VERIFY_JOB).get("pgbackup.dev/recorded")
                         == "NotPossible", what="the verification Job marked recorded")
        status = (await asyncio.to_thread(cluster.policy, "orders"))["status"]
    assert (verified["status"], verified["reason"]) == ("Unknown", "ServerBinariesMissing")
    verification = status["backups"][0]["verification"]
    assert (verification["phase"], verification["reason"]) == ("NotPossible", "ServerBinariesMissing")
    assert "install postgresql-13" in verification["message"]
    assert status["backups"][0]["phase"] == "Completed" and status["lastBackup"]["verified"] is False
    assert events[0]["type"] == "Warning" and "not judged" in events[0]["message"]
    assert await asyncio.to_thread(cluster.events, "VerificationFailed") == []
    BackupPolicyStatus.model_validate(status)


async def test_verify_schedule_gets_a_cronjob_removed_when_the_schedule_is_cleared(
        cluster: Cluster, secrets: None, age_secret: None, operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", verifying_spec(schedule="0 6 * * *"))
        cronjob = await eventually(lambda: cluster.cronjob("orders-verify"), what="the verify CronJob")
        assert cronjob["spec"]["schedule"] == "0 6 * * *"
        container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == jobenv.COMMAND_VERIFY
        assert cronjob["metadata"]["ownerReferences"][0]["name"] == "orders"

        await asyncio.to_thread(cluster.patch_policy, "orders", {"spec": {"verify": {"schedule": "30 7 * * *"}}})
        await eventually(lambda: cluster.cronjob("orders-verify")["spec"]["schedule"] == "30 7 * * *",
                         what="the new verify schedule")

        await asyncio.to_thread(cluster.patch_policy, "orders", {"spec": {"verify": {"schedule": ""}}})
        await eventually(lambda: not any(c.metadata.name == "orders-verify"
                                         for c in cluster.batch.list_namespaced_cron_job(NAMESPACE).items),
                         what="the verify CronJob removed")
        # The policy's backup CronJob is not touched.
        assert await asyncio.to_thread(cluster.cronjob, "orders-backup")
