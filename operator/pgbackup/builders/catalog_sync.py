"""Catalog sync: when a policy's status may be behind storage (a backup Job ended and was deleted, by its
history limit or TTL, while the operator was down), a small runner Job reads the catalog (`pgbackup
catalog-summary`) and its summary is recorded like a backup result, so status follows storage. The operator holds
no storage credentials; the Job does, as backup Jobs do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgbackup.api import jobenv
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.api.summary import JobSummary
from pgbackup.builders.conditions import LAST_BACKUP_SUCCEEDED, set_condition
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME
from pgbackup.builders.names import HASH_CHARS, JOB_NAME_MAX, policy_labels, short_hash
from pgbackup.builders.pod import JOB_TTL_SECONDS, JobSettings, owner_reference, policy_env_json, runner_pod_spec
from pgbackup.builders.results import MAX_BACKUPS_IN_STATUS, human_size

COMPONENT_CATALOG = "catalog"
ANNOTATION_SCHEDULED = "pgbackup.dev/catalog-sync-for"  # the CronJob run (lastScheduleTime) it stands in for
RECORDED_FROM_STORAGE = "RecordedFromStorage"


def catalog_sync_job_name(policy_name: str, scheduled: str) -> str:
    """One name per policy and missed run: creating it twice answers 409, so a run is synced once."""
    prefix = policy_name[: JOB_NAME_MAX - HASH_CHARS - len("-sync-")].rstrip("-._")
    return f"{prefix}-sync-{short_hash(policy_name, scheduled)}"


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def missed_run(status: dict[str, Any], cronjob: dict[str, Any]) -> str | None:
    """The CronJob's last run (its lastScheduleTime) when it succeeded but nothing was recorded since it was
    scheduled, i.e. its Job went before the operator read it; None when status is not behind."""
    cron_status = cronjob.get("status") or {}
    scheduled, succeeded = _time(cron_status.get("lastScheduleTime")), _time(cron_status.get("lastSuccessfulTime"))
    if scheduled is None or succeeded is None or succeeded < scheduled:
        return None  # never ran, still running, or its last run failed
    last = status.get("lastBackup") or {}
    recorded = _time(last.get("completedAt"))
    if recorded is not None and recorded >= scheduled:
        return None  # that run (or a later one) is in status
    return str(cron_status["lastScheduleTime"])


def build_catalog_sync_job(name: str, namespace: str, uid: str, spec: BackupPolicySpec, settings: JobSettings,
                           scheduled: str) -> dict[str, Any]:
    """The catalog-sync Job of policy `name` for the missed run `scheduled`, owned by the policy."""
    labels = policy_labels(name, COMPONENT_CATALOG)
    annotations = {ANNOTATION_POLICY_NAME: name, ANNOTATION_SCHEDULED: scheduled}
    pod = runner_pod_spec(spec, settings, command=jobenv.COMMAND_CATALOG_SUMMARY, env=[
        {"name": jobenv.ENV_POLICY, "value": policy_env_json(name, namespace, spec)}])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": catalog_sync_job_name(name, scheduled), "namespace": namespace, "labels": labels,
                     "annotations": dict(annotations),
                     "ownerReferences": [owner_reference("BackupPolicy", name, uid)]},
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 600,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod},
        },
    }


def record_catalog(status: dict[str, Any], summary: JobSummary, job_name: str, generation: int | None,
                   now: str) -> tuple[dict[str, Any], str | None]:
    """The status fields to patch from a catalog summary, and the Event message when it brought a backup status
    did not show. status.backups follows storage (ids it no longer holds go, the newest is added); lastBackup and
    LastBackupSucceeded move only to a backup newer than the one status shows."""
    patch: dict[str, Any] = {}
    stored = list(summary.stored_backups or [])
    backups = [b for b in status.get("backups") or [] if b.get("id") in stored]
    newest = summary.backup_id
    completed = summary.completed_at.isoformat().replace("+00:00", "Z") if summary.completed_at else None
    if newest and not any(b.get("id") == newest for b in backups):
        record = {"id": newest, "method": summary.method, "backupType": summary.backup_type,
                  "incrementalOf": summary.incremental_of, "phase": "Completed", "completedAt": completed,
                  "sizeBytes": summary.size_bytes, "durationSeconds": summary.duration_seconds, "jobName": job_name}
        backups.append({key: value for key, value in record.items() if value is not None})
    backups.sort(key=lambda b: str(b.get("id") or ""), reverse=True)
    backups = backups[:MAX_BACKUPS_IN_STATUS]
    if backups != list(status.get("backups") or []):
        patch["backups"] = backups

    last = status.get("lastBackup") or {}
    last_time, newest_time = _time(last.get("completedAt")), summary.completed_at
    if not newest or newest_time is None or (last_time is not None and newest_time <= last_time) \
            or last.get("id") == newest:
        return patch, None
    size = human_size(summary.size_bytes)
    message = (f"backup {newest} found in storage by catalog-sync Job {job_name}" + (f" ({size})" if size else "")
               + ": its backup Job was gone before the operator recorded it")
    patch["lastBackup"] = {key: value for key, value in {
        "phase": "Completed", "id": newest, "completedAt": completed, "sizeBytes": summary.size_bytes,
        "size": size, "jobName": job_name}.items() if value is not None}
    patch["conditions"] = set_condition(list(status.get("conditions") or []), LAST_BACKUP_SUCCEEDED, "True",
                                        RECORDED_FROM_STORAGE, message, generation, now)
    return patch, message
