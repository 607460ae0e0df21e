"""BackupPolicy spec -> CronJob (and on-demand Job) manifests, as plain dicts.

Backup Jobs get the age recipients only (they are in the spec), never the identity.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pgbackup.api import jobenv
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.builders.names import backup_now_job_name, cronjob_name, policy_labels
from pgbackup.builders.hooks import with_pre_backup_hook
from pgbackup.builders.pod import JOB_TTL_SECONDS, JobSettings, owner_reference, policy_env_json, runner_pod_spec

ANNOTATION_POLICY_NAME = "pgbackup.dev/policy-name"  # full name; the label value may be shortened
ANNOTATION_SPEC_HASH = "pgbackup.dev/spec-hash"  # lets the operator skip writes when nothing changed
ANNOTATION_BACKUP_NOW = "pgbackup.dev/backup-now"


def policy_cronjob(name: str, namespace: str, uid: str, spec: BackupPolicySpec, *, cronjob: str, schedule: str,
                   labels: dict[str, str], job_spec: dict[str, Any]) -> dict[str, Any]:
    """A CronJob of a policy (backups, or scheduled verification): owned by the policy (deleted with it), one run
    at a time, the policy's time zone, suspend and history limits, and a spec-hash annotation so that an unchanged
    one is never written again."""
    annotations = {ANNOTATION_POLICY_NAME: name}
    overrides = spec.job_template
    manifest: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob,
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(annotations),
            "ownerReferences": [owner_reference("BackupPolicy", name, uid)],
        },
        "spec": {
            "schedule": schedule,
            "timeZone": spec.time_zone,
            "suspend": spec.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": overrides.starting_deadline_seconds,
            "successfulJobsHistoryLimit": overrides.successful_jobs_history_limit,
            "failedJobsHistoryLimit": overrides.failed_jobs_history_limit,
            "jobTemplate": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": job_spec,
            },
        },
    }
    manifest["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = manifest_hash(manifest)
    return manifest


def build_cronjob(name: str, namespace: str, uid: str, spec: BackupPolicySpec, settings: JobSettings) -> dict[str, Any]:
    """The CronJob that runs a policy's scheduled backups."""
    labels = policy_labels(name)
    annotations = {ANNOTATION_POLICY_NAME: name}
    overrides = spec.job_template
    job_spec: dict[str, Any] = {
        "backoffLimit": overrides.backoff_limit,
        "activeDeadlineSeconds": overrides.active_deadline_seconds,
        "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": runner_pod_spec(spec, settings, command=jobenv.COMMAND_BACKUP, env=[
                {"name": jobenv.ENV_POLICY, "value": policy_env_json(name, namespace, spec)}]),
        },
    }
    with_pre_backup_hook(job_spec["template"]["spec"], job_spec, spec.hooks.pre_backup if spec.hooks else None)
    return policy_cronjob(name, namespace, uid, spec, cronjob=cronjob_name(name), schedule=spec.schedule,
                          labels=labels, job_spec=job_spec)


def manifest_hash(manifest: dict[str, Any]) -> str:
    """A digest of what the operator manages in a manifest (its own hash annotation excluded)."""
    content = copy.deepcopy(manifest)
    content.get("metadata", {}).get("annotations", {}).pop(ANNOTATION_SPEC_HASH, None)
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def build_backup_now_job(cronjob: dict[str, Any], value: str) -> dict[str, Any]:
    """A Job from the CronJob's template for one pgbackup.dev/backup-now value. Its name depends only on
    the CronJob and the value, so creating it twice fails with 409 Conflict instead of running twice."""
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    for container in template["spec"]["template"]["spec"].get("containers", []):
        if any(env.get("name") == jobenv.ENV_POLICY for env in container.get("env", [])):
            container["env"].append({"name": jobenv.ENV_BACKUP_PURPOSE, "value": "on-demand"})  # in the manifest
    metadata = template.get("metadata", {})
    annotations = {
        **metadata.get("annotations", {}),
        ANNOTATION_BACKUP_NOW: value,
        "cronjob.kubernetes.io/instantiate": "manual",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": backup_now_job_name(cronjob["metadata"]["name"], value),
            "namespace": cronjob["metadata"]["namespace"],
            "labels": dict(metadata.get("labels", {})),
            "annotations": annotations,
            "ownerReferences": copy.deepcopy(cronjob["metadata"].get("ownerReferences", [])),
        },
        "spec": template["spec"],
    }
