"""The pod every runner Job uses (backup, restore, verification), as a plain dict.

Credentials reach the pod only as `secretKeyRef` env vars or Secret files; the spec handed to the runner
holds Secret references, never values. Only restore and verification Jobs mount the age identity.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from pgbackup.api import jobenv
from pgbackup.api.base import API_VERSION
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.api.refs import DatabaseCredentialsRef
from pgbackup.api.summary import TERMINATION_MESSAGE_PATH
from pgbackup.builders.volumes import app_volume_mounts

CONTAINER_NAME = "backup"
RUN_AS_USER = 65532
JOB_TTL_SECONDS = 7 * 86400  # finished Jobs are read back long before this; history limits usually prune first

DB_CA_FILE = "ca.crt"
S3_CA_FILE = "ca-bundle.pem"
AGE_IDENTITY_FILE = "identity.txt"

Manifests = list[dict[str, Any]]


@dataclass(frozen=True)
class JobSettings:
    """Operator configuration that goes into every Job."""

    image: str
    service_account: str | None = None
    image_pull_policy: str = "IfNotPresent"


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """Makes the owner's deletion remove the child (garbage collection)."""
    return {"apiVersion": API_VERSION, "kind": kind, "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


def policy_env_json(name: str, namespace: str, spec: BackupPolicySpec) -> str:
    return json.dumps({"name": name, "namespace": namespace, "spec": spec.to_wire()}, sort_keys=True, separators=(",", ":"))


def secret_env(env_name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _secret_volume(volume_name: str, secret: str, key: str, file_name: str) -> dict[str, Any]:
    return {
        "name": volume_name,
        "secret": {"secretName": secret, "items": [{"key": key, "path": file_name}], "defaultMode": 0o440},
    }


def _env_and_volumes(spec: BackupPolicySpec, db_credentials: DatabaseCredentialsRef,
                     mount_identity: bool) -> tuple[Manifests, Manifests, Manifests]:
    """Env vars, pod volumes and container mounts for the database and storage credentials of a policy."""
    env: list[dict[str, Any]] = [
        secret_env(jobenv.ENV_DB_USER, db_credentials.name, db_credentials.username_key),
        secret_env(jobenv.ENV_DB_PASSWORD, db_credentials.name, db_credentials.password_key),
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
            env.append(secret_env(jobenv.ENV_S3_ACCESS_KEY_ID, ref3.name, ref3.access_key_id_key))
            env.append(secret_env(jobenv.ENV_S3_SECRET_ACCESS_KEY, ref3.name, ref3.secret_access_key_key))
        if s3.ca_bundle_secret:
            volumes.append(_secret_volume("s3-ca", s3.ca_bundle_secret.name, s3.ca_bundle_secret.key, S3_CA_FILE))
            mounts.append({"name": "s3-ca", "mountPath": jobenv.S3_CA_DIR, "readOnly": True})
            env.append({"name": jobenv.ENV_S3_CA_BUNDLE, "value": f"{jobenv.S3_CA_DIR}/{S3_CA_FILE}"})

    volume = spec.storage.volume
    if volume is not None:
        volumes.append({"name": "storage", "persistentVolumeClaim": {"claimName": volume.claim_name}})
        mounts.append({"name": "storage", "mountPath": jobenv.VOLUME_STORAGE_ROOT})
        env.append({"name": jobenv.ENV_VOLUME_ROOT, "value": jobenv.VOLUME_STORAGE_ROOT})

    identity = spec.encryption.identity_secret if spec.encryption else None
    if mount_identity and identity is not None:
        volumes.append(_secret_volume("age-identity", identity.name, identity.key, AGE_IDENTITY_FILE))
        mounts.append({"name": "age-identity", "mountPath": jobenv.AGE_IDENTITY_DIR, "readOnly": True})
        env.append({"name": jobenv.ENV_AGE_IDENTITY_FILE, "value": f"{jobenv.AGE_IDENTITY_DIR}/{AGE_IDENTITY_FILE}"})
    return env, volumes, mounts


def copy_env_and_volumes(spec: BackupPolicySpec, names: list[str]) -> tuple[Manifests, Manifests, Manifests]:
    """Env vars, pod volumes and mounts for the copies named (spec.copies): each S3 copy's keys as secretKeyRef
    env under names of its own (PGBACKUP_COPY_<NAME>_AWS_*), each volume copy's PVC mounted read-write."""
    env: Manifests = []
    volumes: Manifests = []
    mounts: Manifests = []
    for index, copy_spec in enumerate(spec.copies):
        if copy_spec.name not in names:
            continue
        if copy_spec.s3 is not None and copy_spec.s3.credentials_secret is not None:
            # optional: a missing copy Secret must not keep the backup's pod from starting; the runner reports
            # the copy as failed (status.copies[].error) and the backup itself still runs
            ref = copy_spec.s3.credentials_secret
            for env_name, key in ((jobenv.copy_access_key_env(copy_spec.name), ref.access_key_id_key),
                                  (jobenv.copy_secret_key_env(copy_spec.name), ref.secret_access_key_key)):
                item = secret_env(env_name, ref.name, key)
                item["valueFrom"]["secretKeyRef"]["optional"] = True
                env.append(item)
        if copy_spec.volume is not None:
            volume_name = f"copy-{index}"
            mount_path = f"{jobenv.COPY_VOLUME_ROOT}/{copy_spec.name}"
            volumes.append({"name": volume_name, "persistentVolumeClaim": {"claimName": copy_spec.volume.claim_name}})
            mounts.append({"name": volume_name, "mountPath": mount_path})
            env.append({"name": jobenv.copy_volume_root_env(copy_spec.name), "value": mount_path})
    return env, volumes, mounts


def runner_pod_spec(spec: BackupPolicySpec, settings: JobSettings, *, command: list[str], env: Manifests,
                    db_credentials: DatabaseCredentialsRef | None = None, mount_identity: bool = False,
                    copies: list[str] | None = None, app_claims: list[str] | None = None,
                    app_claims_writable: bool = False) -> dict[str, Any]:
    """The pod of a runner Job: `command` with its own `env` first, then the policy's credentials and storage.
    `db_credentials` defaults to the policy's database Secret; `mount_identity` only for restore/verification.
    `copies`: the copies (spec.copies names) the pod reaches; default all of them for backup Jobs, none else.
    `app_claims`: application claims mounted at APP_VOLUMES_ROOT/<claim> (read-only unless `app_claims_writable`);
    default the policy's spec.volumes for backup Jobs, none else."""
    overrides = spec.job_template
    common_env, volumes, mounts = _env_and_volumes(spec, db_credentials or spec.database.credentials_secret,
                                                   mount_identity)
    if copies is None:
        copies = [c.name for c in spec.copies] if list(command) == jobenv.COMMAND_BACKUP else []
    copy_env, copy_volumes, copy_mounts = copy_env_and_volumes(spec, copies)
    common_env, volumes, mounts = [*common_env, *copy_env], [*volumes, *copy_volumes], [*mounts, *copy_mounts]
    if app_claims is None:
        app_claims = [v.claim_name for v in spec.volumes] if list(command) == jobenv.COMMAND_BACKUP else []
    app_volumes, app_mounts, app_env = app_volume_mounts(app_claims, read_only=not app_claims_writable)
    common_env, volumes, mounts = [*common_env, *app_env], [*volumes, *app_volumes], [*mounts, *app_mounts]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(command),
        "env": [*env, *common_env],
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
