"""The CronJob and Job manifests built from a policy spec (plain dicts, no cluster)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pgbackup.api import BackupPolicySpec, jobenv
from pgbackup.builders.cronjob import build_backup_now_job, build_cronjob, manifest_hash
from pgbackup.builders.pod import JobSettings
from pgbackup.builders.names import cronjob_name, label_value, policy_labels
from pgbackup.builders.secrets import referenced_secrets
from pgbackup.builders.validation import describe_validation_error

SETTINGS = JobSettings(image="ghcr.io/pgbackup/pgbackup-operator:test", service_account="pgbackup-job")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def s3_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "database": {
            "host": "db.example.svc",
            "credentialsSecret": {"name": "db-creds", "usernameKey": "user", "passwordKey": "pass"},
            "sslMode": "verify-full",
            "sslRootCertSecret": {"name": "db-ca", "key": "ca.pem"},
        },
        "schedule": "0 2 * * *",
        "timeZone": "Europe/Berlin",
        "storage": {"s3": {
            "bucket": "backups", "endpoint": "https://minio.example:9000",
            "credentialsSecret": {"name": "s3-creds"},
            "caBundleSecret": {"name": "s3-ca", "key": "bundle.pem"},
        }},
        "encryption": {"recipients": ["age1cd5djhe2mnms2c4xfjhm9vxn5tuavwqrmxuxqs6lkyfwtnxsg4nses7mfk"],
                       "identitySecret": {"name": "age-identity", "key": "identity.txt"}},
        "retention": {"keepLast": 3},
    }
    spec.update(overrides)
    return spec


def build(spec: dict[str, Any], name: str = "orders") -> dict[str, Any]:
    return build_cronjob(name, "shop", "uid-1234", BackupPolicySpec.model_validate(spec), SETTINGS)


def pod_of(cronjob: dict[str, Any]) -> dict[str, Any]:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(cronjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in pod_of(cronjob)["containers"][0]["env"]}


def test_long_policy_name_gives_a_short_deterministic_cronjob_name() -> None:
    long_name = ("a" * 120 + "." + "b" * 120)[:253]
    name = cronjob_name(long_name)
    assert len(name) <= 52
    assert name == cronjob_name(long_name)
    assert name != cronjob_name(long_name[:-1] + "c")
    assert re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name)
    assert cronjob_name("orders") == "orders-backup"


def test_label_values_stay_within_63_characters_and_valid() -> None:
    long_name = "x" * 200 + "-" + "y" * 52
    labels = policy_labels(long_name)
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value)
    assert labels["pgbackup.dev/policy"] != policy_labels("x" * 200 + "-" + "z" * 52)["pgbackup.dev/policy"]
    assert label_value("orders") == "orders"


def test_cronjob_schedule_and_job_limits_follow_the_spec() -> None:
    spec = s3_spec(suspend=True, jobTemplate={"backoffLimit": 2, "activeDeadlineSeconds": 3600,
                                               "startingDeadlineSeconds": 120, "successfulJobsHistoryLimit": 5,
                                               "failedJobsHistoryLimit": 4})
    cronjob = build(spec)
    assert cronjob["metadata"]["name"] == "orders-backup"
    assert cronjob["spec"]["schedule"] == "0 2 * * *"
    assert cronjob["spec"]["timeZone"] == "Europe/Berlin"
    assert cronjob["spec"]["suspend"] is True
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert cronjob["spec"]["startingDeadlineSeconds"] == 120
    assert cronjob["spec"]["successfulJobsHistoryLimit"] == 5
    assert cronjob["spec"]["failedJobsHistoryLimit"] == 4
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2 and job["activeDeadlineSeconds"] == 3600 and job["ttlSecondsAfterFinished"] > 0
    assert cronjob["spec"]["jobTemplate"]["metadata"]["labels"]["pgbackup.dev/policy"] == "orders"


def test_cronjob_is_owned_by_the_policy_so_deleting_it_collects_the_cronjob() -> None:
    owner = build(s3_spec())["metadata"]["ownerReferences"]
    assert owner == [{"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy", "name": "orders",
                      "uid": "uid-1234", "controller": True, "blockOwnerDeletion": True}]


def test_pod_runs_locked_down() -> None:
    pod = pod_of(build(s3_spec()))
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "pgbackup-job"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["fsGroup"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"] == {"runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert container["command"] == jobenv.COMMAND_BACKUP
    assert container["image"] == SETTINGS.image
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    scratch = next(v for v in pod["volumes"] if v["name"] == "scratch")
    assert "emptyDir" in scratch
    assert {"name": "scratch", "mountPath": jobenv.SCRATCH_DIR} in container["volumeMounts"]
    env = env_of(build(s3_spec()))
    assert env["HOME"]["value"] == env["TMPDIR"]["value"] == jobenv.SCRATCH_DIR


def test_credentials_come_only_from_secret_key_refs() -> None:
    env = env_of(build(s3_spec()))
    assert env["PGUSER"]["valueFrom"] == {"secretKeyRef": {"name": "db-creds", "key": "user"}}
    assert env["PGPASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "db-creds", "key": "pass"}}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "s3-creds", "key": "accessKeyId"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3-creds", "key": "secretAccessKey"}}
    for item in env.values():
        assert ("value" in item) != ("valueFrom" in item)


def test_ca_bundles_are_mounted_files() -> None:
    cronjob = build(s3_spec())
    pod, env = pod_of(cronjob), env_of(cronjob)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert volumes["db-ca"]["secret"]["secretName"] == "db-ca"
    assert volumes["db-ca"]["secret"]["items"][0]["key"] == "ca.pem"
    assert env["PGSSLROOTCERT"]["value"].startswith(mounts["db-ca"]["mountPath"] + "/")
    assert mounts["db-ca"]["mountPath"] == jobenv.DB_CA_DIR and mounts["db-ca"]["readOnly"]
    assert volumes["s3-ca"]["secret"]["secretName"] == "s3-ca"
    assert env["AWS_CA_BUNDLE"]["value"].startswith(jobenv.S3_CA_DIR + "/")


def test_backup_jobs_never_get_the_age_identity() -> None:
    text = json.dumps(build(s3_spec()))
    pod = pod_of(build(s3_spec()))
    assert all(v.get("secret", {}).get("secretName") != "age-identity" for v in pod["volumes"])
    assert jobenv.ENV_AGE_IDENTITY_FILE not in text
    assert jobenv.AGE_IDENTITY_DIR not in text


def test_runner_gets_the_policy_as_json_with_references_only() -> None:
    env = env_of(build(s3_spec()))
    handed = json.loads(env[jobenv.ENV_POLICY]["value"])
    assert handed["name"] == "orders" and handed["namespace"] == "shop"
    assert BackupPolicySpec.model_validate(handed["spec"]).database.credentials_secret.name == "db-creds"


def test_no_secret_value_appears_anywhere_in_the_manifest() -> None:
    # A spec cannot carry values; this guards against a builder that starts inlining them from elsewhere.
    text = json.dumps(build(s3_spec()))
    for forbidden in ("stringData", "\"data\"", "password\":", "secretAccessKey\":"):
        assert forbidden not in text


def test_volume_storage_mounts_the_claim() -> None:
    spec = s3_spec(storage={"volume": {"claimName": "nfs-backups", "path": "orders"}})
    cronjob = build(spec)
    pod, env = pod_of(cronjob), env_of(cronjob)
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "nfs-backups"}} in pod["volumes"]
    assert {"name": "storage", "mountPath": jobenv.VOLUME_STORAGE_ROOT} in pod["containers"][0]["volumeMounts"]
    assert env[jobenv.ENV_VOLUME_ROOT]["value"] == jobenv.VOLUME_STORAGE_ROOT
    assert "AWS_ACCESS_KEY_ID" not in env


def test_job_template_overrides_are_applied() -> None:
    overrides = {
        "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "backup", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "serviceAccountName": "custom-sa",
        "priorityClassName": "low",
    }
    pod = pod_of(build(s3_spec(jobTemplate=overrides)))
    assert pod["containers"][0]["resources"] == overrides["resources"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == overrides["tolerations"]
    assert pod["affinity"] == overrides["affinity"]
    assert pod["serviceAccountName"] == "custom-sa"
    assert pod["priorityClassName"] == "low"
    assert pod["automountServiceAccountToken"] is False


def test_backup_now_job_name_is_deterministic_per_value() -> None:
    cronjob = build(s3_spec(), name="p" * 253)
    first = build_backup_now_job(cronjob, "2026-11-23T10:00")
    again = build_backup_now_job(cronjob, "2026-11-23T10:00")
    other = build_backup_now_job(cronjob, "2026-11-23T11:00")
    assert first["metadata"]["name"] == again["metadata"]["name"] != other["metadata"]["name"]
    assert len(first["metadata"]["name"]) <= 63 and DNS_LABEL.match(first["metadata"]["name"])
    runner = first["spec"]["template"]["spec"]["containers"][0]
    assert runner["env"][-1] == {"name": "PGBACKUP_BACKUP_PURPOSE", "value": "on-demand"}  # recorded in the manifest
    runner["env"].pop()
    assert first["spec"] == cronjob["spec"]["jobTemplate"]["spec"]
    assert first["metadata"]["ownerReferences"] == cronjob["metadata"]["ownerReferences"]
    assert first["metadata"]["annotations"]["pgbackup.dev/backup-now"] == "2026-11-23T10:00"


def test_hash_changes_with_the_spec_only() -> None:
    assert manifest_hash(build(s3_spec())) == manifest_hash(build(s3_spec()))
    assert manifest_hash(build(s3_spec())) != manifest_hash(build(s3_spec(schedule="0 3 * * *")))


def test_referenced_secrets_lists_every_key() -> None:
    refs = referenced_secrets(BackupPolicySpec.model_validate(s3_spec()))
    assert refs == [("db-creds", "user"), ("db-creds", "pass"), ("db-ca", "ca.pem"), ("s3-creds", "accessKeyId"),
                    ("s3-creds", "secretAccessKey"), ("s3-ca", "bundle.pem"), ("age-identity", "identity.txt")]


def test_invalid_spec_message_names_the_field() -> None:
    from pydantic import ValidationError

    spec = s3_spec()
    spec["database"]["port"] = 70000
    with pytest.raises(ValidationError) as caught:
        BackupPolicySpec.model_validate(spec)
    message = describe_validation_error(caught.value)
    assert "spec.database.port" in message and "65535" in message
