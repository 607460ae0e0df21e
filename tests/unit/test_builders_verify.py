"""Verification Job and CronJob manifests, and verification results -> status (plain dicts, no cluster)."""

from __future__ import annotations

import json
from typing import Any

from pgbackup.api import BackupPolicySpec, BackupPolicyStatus, JobSummary, jobenv
from pgbackup.builders.cronjob import ANNOTATION_SPEC_HASH, build_cronjob
from pgbackup.builders.names import CRONJOB_NAME_MAX, JOB_NAME_MAX, verify_cronjob_name, verify_job_name
from pgbackup.builders.verification import describe, read_verification, record_verification
from pgbackup.builders.verify_job import build_verify_cronjob, build_verify_job
from tests.unit.test_builders import DNS_LABEL, SETTINGS, s3_spec

UID = "uid-1"
BACKUP_ID = "20261123T020000Z"


def spec(**verify: Any) -> BackupPolicySpec:
    return BackupPolicySpec.model_validate(s3_spec(verify={"enabled": True, **verify}))


def container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    [only] = pod_spec["containers"]
    return only


def env_of(pod_spec: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(pod_spec)["env"]}


def test_verify_job_mounts_the_identity_and_names_the_backup() -> None:
    job = build_verify_job("orders", "shop", UID, spec(), SETTINGS, BACKUP_ID)
    pod = job["spec"]["template"]["spec"]
    env = env_of(pod)
    assert container(pod)["command"] == jobenv.COMMAND_VERIFY
    assert env[jobenv.ENV_VERIFY_BACKUP_ID] == BACKUP_ID
    assert json.loads(env[jobenv.ENV_POLICY])["name"] == "orders"
    assert env[jobenv.ENV_AGE_IDENTITY_FILE].startswith(jobenv.AGE_IDENTITY_DIR)
    identity = next(v for v in pod["volumes"] if v["name"] == "age-identity")
    assert identity["secret"]["secretName"] == "age-identity"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "verify"
    assert job["metadata"]["labels"]["pgbackup.dev/policy"] == "orders"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("BackupPolicy", "orders", UID)


def test_verify_job_has_the_backup_jobs_security_settings() -> None:
    policy = spec()
    backup_pod = build_cronjob("orders", "shop", UID, policy, SETTINGS)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    verify_pod = build_verify_job("orders", "shop", UID, policy, SETTINGS, BACKUP_ID)["spec"]["template"]["spec"]
    assert verify_pod["securityContext"] == backup_pod["securityContext"]
    assert container(verify_pod)["securityContext"] == container(backup_pod)["securityContext"]
    assert verify_pod["automountServiceAccountToken"] is False
    assert "age-identity" not in {v["name"] for v in backup_pod["volumes"]}  # only verification gets it


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    job_spec = manifest["spec"] if manifest["kind"] == "Job" else manifest["spec"]["jobTemplate"]["spec"]
    return job_spec["template"]["spec"]


def test_credentials_reach_verification_pods_only_by_reference() -> None:
    for manifest in (build_verify_job("orders", "shop", UID, spec(), SETTINGS, BACKUP_ID),
                     build_verify_cronjob("orders", "shop", UID, spec(schedule="0 6 * * *"), SETTINGS)):
        env = {e["name"]: e for e in container(pod_of(manifest))["env"]}
        for name in (jobenv.ENV_DB_USER, jobenv.ENV_DB_PASSWORD, jobenv.ENV_S3_ACCESS_KEY_ID,
                     jobenv.ENV_S3_SECRET_ACCESS_KEY):
            assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"]
        assert all("data" not in v.get("secret", {}) for v in pod_of(manifest)["volumes"])


def test_verify_job_name_is_deterministic_short_and_distinct() -> None:
    assert verify_job_name("orders", BACKUP_ID) == "orders-verify-20261123t020000z"
    assert verify_job_name("orders", BACKUP_ID) == verify_job_name("orders", BACKUP_ID)
    assert verify_job_name("orders", BACKUP_ID) != verify_job_name("orders", "20261124T020000Z")
    long_name = verify_job_name("p" * 253, BACKUP_ID)
    assert len(long_name) <= JOB_NAME_MAX and DNS_LABEL.match(long_name)
    assert long_name != verify_job_name("p" * 253, "20261124T020000Z")
    odd = verify_job_name("orders", "2026_11_23")
    assert DNS_LABEL.match(odd) and odd != verify_job_name("orders", "2026-11-23")


def test_verify_cronjob_runs_on_the_verify_schedule_without_a_backup_id() -> None:
    cronjob = build_verify_cronjob("orders", "shop", UID, spec(schedule="0 6 * * *"), SETTINGS)
    assert cronjob["metadata"]["name"] == "orders-verify"
    assert cronjob["spec"]["schedule"] == "0 6 * * *" and cronjob["spec"]["timeZone"] == "Europe/Berlin"
    assert cronjob["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert jobenv.ENV_VERIFY_BACKUP_ID not in env_of(pod)  # the runner verifies the newest backup
    assert container(pod)["command"] == jobenv.COMMAND_VERIFY
    assert cronjob["spec"]["jobTemplate"]["metadata"]["labels"]["app.kubernetes.io/component"] == "verify"
    assert len(verify_cronjob_name("x" * 253)) <= CRONJOB_NAME_MAX


def finished_verify_job(summary: JobSummary | None, condition: str = "Complete") -> tuple[dict[str, Any], list]:
    job = {"metadata": {"name": "orders-verify-x", "annotations": {"pgbackup.dev/verify-backup-id": BACKUP_ID}},
           "status": {"conditions": [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded"}]}}
    state = {"terminated": {"exitCode": 0, "message": summary.to_termination_message()}} if summary else {}
    pods = [{"metadata": {"creationTimestamp": "2026-11-23T03:00:00Z"},
             "status": {"containerStatuses": [{"name": "backup", "state": state}]}}]
    return job, pods


STATUS = {"lastBackup": {"id": BACKUP_ID, "phase": "Completed", "completedAt": "2026-11-23T02:05:00Z"},
          "backups": [{"id": BACKUP_ID, "phase": "Completed", "completedAt": "2026-11-23T02:05:00Z"},
                      {"id": "20261122T020000Z", "phase": "Completed"}],
          "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "",
                          "lastTransitionTime": "2026-11-20T00:00:00Z"}],
          "measured": {"recoveryPoint": "2026-11-24T02:00:00Z"}}


def test_passed_verification_is_recorded_on_its_backup() -> None:
    summary = JobSummary(kind="verify", phase="Completed", backup_id=BACKUP_ID, reason="RestoreVerified",
                         restore_seconds=12.5)
    outcome = read_verification(*finished_verify_job(summary))
    assert outcome is not None
    patch = record_verification(STATUS, outcome, 1, "2026-11-23T03:00:00Z")
    assert patch["backups"][0]["verification"]["phase"] == "Passed"
    assert patch["backups"][0]["verification"]["restoreSeconds"] == 12.5
    assert "verification" not in patch["backups"][1]
    assert patch["lastBackup"]["verified"] is True
    verified = next(c for c in patch["conditions"] if c["type"] == "Verified")
    assert (verified["status"], verified["reason"]) == ("True", "RestoreVerified")
    assert BACKUP_ID in verified["message"]
    assert {c["type"] for c in patch["conditions"]} == {"Ready", "Verified"}  # others kept
    assert patch["measured"] == {"rtoSeconds": 12.5}  # a merge patch: recoveryPoint stays
    BackupPolicyStatus.model_validate({**STATUS, **patch})


def test_row_count_mismatch_names_the_backup_and_the_table() -> None:
    summary = JobSummary(kind="verify", phase="Failed", backup_id=BACKUP_ID, reason="RowCountMismatch",
                         error="shop.public.orders: 41 rows restored, manifest says 42", restore_seconds=3.0)
    outcome = read_verification(*finished_verify_job(summary, "Failed"))
    assert outcome is not None
    patch = record_verification(STATUS, outcome, 1, "2026-11-23T03:00:00Z")
    verified = next(c for c in patch["conditions"] if c["type"] == "Verified")
    assert (verified["status"], verified["reason"]) == ("False", "RowCountMismatch")
    assert BACKUP_ID in verified["message"] and "public.orders" in verified["message"]
    assert patch["backups"][0]["verification"]["phase"] == "Failed"
    assert patch["lastBackup"]["verified"] is False


def test_a_failed_job_without_summary_keeps_the_backup_id_and_the_job_reason() -> None:
    outcome = read_verification(*finished_verify_job(None, "Failed"))
    assert outcome is not None
    assert (outcome.backup_id, outcome.phase, outcome.reason) == (BACKUP_ID, "Failed", "BackoffLimitExceeded")


def test_an_older_backups_late_verification_does_not_replace_the_newer_verdict() -> None:
    newer = {**STATUS, "backups": [{**STATUS["backups"][0], "verification": {"phase": "Passed"}},
                                   STATUS["backups"][1]]}
    summary = JobSummary(kind="verify", phase="Failed", backup_id="20261122T020000Z", reason="CheckFailed",
                         restore_seconds=9.0)
    outcome = read_verification(*finished_verify_job(summary, "Failed"))
    assert outcome is not None
    patch = record_verification(newer, outcome, 1, "2026-11-23T03:00:00Z")
    assert patch["backups"][1]["verification"]["reason"] == "CheckFailed"
    assert "conditions" not in patch and "measured" not in patch


def test_an_image_without_the_backups_major_records_not_possible_not_failed() -> None:
    """The verification Job exits 3 with ServerBinariesMissing: the backup is not judged (phase NotPossible,
    condition Verified Unknown), and the message says which major is missing and what to install."""
    error = ("no PostgreSQL 15 server binaries (initdb, pg_ctl, postgres) to restore into: found 18 "
             "(/usr/lib/postgresql/18/bin). Install postgresql-15")
    summary = JobSummary(kind="verify", phase="Failed", backup_id=BACKUP_ID, reason="ServerBinariesMissing",
                         error=error)
    outcome = read_verification(*finished_verify_job(summary, "Failed"))
    assert outcome is not None and outcome.phase == "NotPossible"
    patch = record_verification(STATUS, outcome, 1, "2026-11-23T03:00:00Z")
    verification = patch["backups"][0]["verification"]
    assert (verification["phase"], verification["reason"]) == ("NotPossible", "ServerBinariesMissing")
    assert "postgresql-15" in verification["message"]
    assert patch["lastBackup"]["verified"] is False
    verified = next(c for c in patch["conditions"] if c["type"] == "Verified")
    assert (verified["status"], verified["reason"]) == ("Unknown", "ServerBinariesMissing")
    assert "not judged" in verified["message"] and "PostgreSQL 15" in verified["message"]
    assert describe(outcome)[0] == "VerificationNotPossible"
    BackupPolicyStatus.model_validate({**STATUS, **patch})
