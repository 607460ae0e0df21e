"""Verification Jobs and the scheduled-verification CronJob of a policy, as plain dicts.

Both restore a backup into a throwaway PostgreSQL inside the pod (`pgbackup verify`), so they mount the age
identity; the backup Jobs never do. The runner gets the policy (Secret references only) and, for a Job made
for one backup, that backup's id; the CronJob verifies whatever backup is the newest when it runs.
"""

from __future__ import annotations

from typing import Any

from pgbackup.api import jobenv
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME, policy_cronjob
from pgbackup.builders.names import policy_labels, verify_cronjob_name, verify_job_name
from pgbackup.builders.pod import JOB_TTL_SECONDS, JobSettings, owner_reference, policy_env_json, runner_pod_spec

COMPONENT_VERIFY = "verify"
ANNOTATION_VERIFY_BACKUP_ID = "pgbackup.dev/verify-backup-id"
# A verification that failed is a verdict on the backup (or on a broken environment): running the same
# restore again gives the same answer and costs as much as the first, so a failed pod is not retried.
VERIFY_BACKOFF_LIMIT = 0


def _job_spec(name: str, namespace: str, spec: BackupPolicySpec, settings: JobSettings, labels: dict[str, str],
              annotations: dict[str, str], backup_id: str | None) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": jobenv.ENV_POLICY, "value": policy_env_json(name, namespace, spec)}]
    if backup_id:
        env.append({"name": jobenv.ENV_VERIFY_BACKUP_ID, "value": backup_id})
    return {
        "backoffLimit": VERIFY_BACKOFF_LIMIT,
        "activeDeadlineSeconds": spec.job_template.active_deadline_seconds,
        "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": runner_pod_spec(spec, settings, command=jobenv.COMMAND_VERIFY, env=env, mount_identity=True),
        },
    }


def build_verify_job(name: str, namespace: str, uid: str, spec: BackupPolicySpec, settings: JobSettings,
                     backup_id: str) -> dict[str, Any]:
    """The Job verifying backup `backup_id` of policy `name`, owned by the policy. Its name depends only on
    the policy and the backup id, so a second create answers 409 Conflict instead of verifying twice."""
    labels = policy_labels(name, COMPONENT_VERIFY)
    annotations = {ANNOTATION_POLICY_NAME: name, ANNOTATION_VERIFY_BACKUP_ID: backup_id}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": verify_job_name(name, backup_id),
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(annotations),
            "ownerReferences": [owner_reference("BackupPolicy", name, uid)],
        },
        "spec": _job_spec(name, namespace, spec, settings, labels, annotations, backup_id),
    }


def build_verify_cronjob(name: str, namespace: str, uid: str, spec: BackupPolicySpec,
                         settings: JobSettings) -> dict[str, Any]:
    """The CronJob verifying the newest backup on `spec.verify.schedule`, owned by the policy. Like the backup
    CronJob it follows `spec.suspend`: a suspended policy runs no scheduled Jobs."""
    labels = policy_labels(name, COMPONENT_VERIFY)
    annotations = {ANNOTATION_POLICY_NAME: name}
    return policy_cronjob(name, namespace, uid, spec, cronjob=verify_cronjob_name(name), schedule=spec.verify.schedule,
                          labels=labels, job_spec=_job_spec(name, namespace, spec, settings, labels, annotations, None))


def wants_verify_cronjob(spec: BackupPolicySpec) -> bool:
    return spec.verify.enabled and bool(spec.verify.schedule)


def wants_verify_after_backup(spec: BackupPolicySpec) -> bool:
    return spec.verify.enabled and not spec.verify.schedule
