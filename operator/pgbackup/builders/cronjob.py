"""BackupPolicy spec -> CronJob (and on-demand Job) manifests, as plain dicts.

Credentials reach the pod only as `secretKeyRef` env vars or Secret files; the spec handed to the runner
holds Secret references, never values. Backup Jobs get the age recipients only, never the identity.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pgbackup.api import jobenv
from pgbackup.api.base import API_VERSION
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.api.summary import TERMINATION_MESSAGE_PATH
from pgbackup.builders.names import backup_now_job_name, cronjob_name, policy_labels

CONTAINER_NAME = "backup"
RUN_AS_USER = 65532
JOB_TTL_SECONDS = 7 * 86400  # finished Jobs are read back long before this; history limits usually prune first

ANNOTATION_POLICY_NAME = "pgbackup.dev/policy-name"  # full name; the label value may be shortened
ANNOTATION_SPEC_HASH = "pgbackup.dev/spec-hash"  # lets the operator skip writes when nothing changed
ANNOTATION_BACKUP_NOW = "pgbackup.dev/backup-now"

DB_CA_FILE = "ca.crt"
S3_CA_FILE = "ca-bundle.pem"


@dataclass(frozen=True)
class JobSettings:
    """Operator configuration that goes into every Job."""

    image: str
    service_account: str | None = None
    image_pull_policy: str = "IfNotPresent"


def owner_reference(policy_name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "BackupPolicy",
        "name": policy_name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def policy_env_json(name: str, namespace: str, spec: BackupPolicySpec) -> str:
    return json.dumps({"name": name, "namespace": namespace, "spec": spec.to_wire()}, sort_keys=True, separators=(",", ":"))


def _secret_env(env_name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _secret_volume(volume_name: str, secret: str, key: str, file_name: str) -> dict[str, Any]:
    return {
        "name": volume_name,
        "secret": {"secretName": secret, "items": [{"key": key, "path": file_name}], "defaultMode": 0o440},
    }


Manifests = list[dict[str, Any]]


def _env_and_volumes(name: str, namespace: str, spec: BackupPolicySpec) -> tuple[Manifests, Manifests, Manifests]:
    """Env vars, pod volumes and container mounts that hand the runner the policy and its credentials."""
    creds = spec.database.credentials_secret
    env: list[dict[str, Any]] = [
        {"name": jobenv.ENV_POLICY, "value": policy_env_json(name, namespace, spec)},
        _secret_env(jobenv.ENV_DB_USER, creds.name, creds.username_key),
        _secret_env(jobenv.ENV_DB_PASSWORD, creds.name, creds.password_key),
        {"name": jobenv.ENV_SCRATCH, "value": jobenv.SCRATCH_DIR},
        {"name": "HOME", "value": jobenv.SCRATCH_DIR},
        {"name": "TMPDIR", "value": jobenv.SCRATCH_DIR},
        {"name": jobenv.ENV_SUMMARY_FILE, "value": TERMINATION_MESSAGE_PATH},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "scratch", "emptyDir": {"sizeLimit": spec.job_template.scratch_size_limit}},
    ]
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": jobenv.SCRATCH_DIR}]

    if spec.database.ssl_root_cert_secret:
        ref = spec.database.ssl_root_cert_secret
        volumes.append(_secret_volume("db-ca", ref.name, ref.key, DB_CA_FILE))
        mounts.append({"name": "db-ca", "mountPath": jobenv.DB_CA_DIR, "readOnly": True})
        env.append({"name": jobenv.ENV_DB_SSLROOTCERT, "value": f"{jobenv.DB_CA_DIR}/{DB_CA_FILE}"})

    s3 = spec.storage.s3
    if s3 is not None:
        if s3.credentials_secret:
            ref3 = s3.credentials_secret
            env.append(_secret_env(jobenv.ENV_S3_ACCESS_KEY_ID, ref3.name, ref3.access_key_id_key))
            env.append(_secret_env(jobenv.ENV_S3_SECRET_ACCESS_KEY, ref3.name, ref3.secret_access_key_key))
        if s3.ca_bundle_secret:
            volumes.append(_secret_volume("s3-ca", s3.ca_bundle_secret.name, s3.ca_bundle_secret.key, S3_CA_FILE))
            mounts.append({"name": "s3-ca", "mountPath": jobenv.S3_CA_DIR, "readOnly": True})
            env.append({"name": jobenv.ENV_S3_CA_BUNDLE, "value": f"{jobenv.S3_CA_DIR}/{S3_CA_FILE}"})

    volume = spec.storage.volume
    if volume is not None:
        volumes.append({"name": "storage", "persistentVolumeClaim": {"claimName": volume.claim_name}})
        mounts.append({"name": "storage", "mountPath": jobenv.VOLUME_STORAGE_ROOT})
        env.append({"name": jobenv.ENV_VOLUME_ROOT, "value": jobenv.VOLUME_STORAGE_ROOT})

    if spec.notifications.webhook:
        ref = spec.notifications.webhook.url_secret
        env.append(_secret_env(jobenv.ENV_WEBHOOK_URL, ref.name, ref.key))
    return env, volumes, mounts


def _pod_spec(name: str, namespace: str, spec: BackupPolicySpec, settings: JobSettings) -> dict[str, Any]:
    overrides = spec.job_template
    env, volumes, mounts = _env_and_volumes(name, namespace, spec)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(jobenv.COMMAND_BACKUP),
        "env": env,
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if overrides.resources:
        container["resources"] = copy.deepcopy(overrides.resources)
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    service_account = overrides.service_account_name or settings.service_account
    if service_account:
        pod["serviceAccountName"] = service_account
    if overrides.node_selector:
        pod["nodeSelector"] = dict(overrides.node_selector)
    if overrides.tolerations:
        pod["tolerations"] = copy.deepcopy(overrides.tolerations)
    if overrides.affinity:
        pod["affinity"] = copy.deepcopy(overrides.affinity)
    if overrides.priority_class_name:
        pod["priorityClassName"] = overrides.priority_class_name
    return pod


def build_cronjob(name: str, namespace: str, uid: str, spec: BackupPolicySpec, settings: JobSettings) -> dict[str, Any]:
    """The CronJob that runs a policy's scheduled backups, owned by the policy (deleted with it)."""
    labels = policy_labels(name)
    annotations = {ANNOTATION_POLICY_NAME: name}
    overrides = spec.job_template
    cronjob: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(name),
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(annotations),
            "ownerReferences": [owner_reference(name, uid)],
        },
        "spec": {
            "schedule": spec.schedule,
            "timeZone": spec.time_zone,
            "suspend": spec.suspend,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": overrides.starting_deadline_seconds,
            "successfulJobsHistoryLimit": overrides.successful_jobs_history_limit,
            "failedJobsHistoryLimit": overrides.failed_jobs_history_limit,
            "jobTemplate": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": {
                    "backoffLimit": overrides.backoff_limit,
                    "activeDeadlineSeconds": overrides.active_deadline_seconds,
                    "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
                    "template": {
                        "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                        "spec": _pod_spec(name, namespace, spec, settings),
                    },
                },
            },
        },
    }
    cronjob["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = manifest_hash(cronjob)
    return cronjob


def manifest_hash(manifest: dict[str, Any]) -> str:
    """A digest of what the operator manages in a manifest (its own hash annotation excluded)."""
    content = copy.deepcopy(manifest)
    content.get("metadata", {}).get("annotations", {}).pop(ANNOTATION_SPEC_HASH, None)
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def build_backup_now_job(cronjob: dict[str, Any], value: str) -> dict[str, Any]:
    """A Job from the CronJob's template for one pgbackup.dev/backup-now value. Its name depends only on
    the CronJob and the value, so creating it twice fails with 409 Conflict instead of running twice."""
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
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
