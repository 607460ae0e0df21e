"""Hook Jobs, the preBackup init container, quiesce bookkeeping, and the API's checks on hooks and quiesce."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from pgbackup.api import BackupPolicySpec
from pgbackup.api.hooks import HookSpec
from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.builders.cronjob import build_cronjob
from pgbackup.builders.hooks import build_hook_job, hook_job_name, log_tail
from pgbackup.builders.pod import JobSettings
from pgbackup.builders.quiesce import (
    Workload,
    mark_restored,
    record,
    requested_workloads,
    running_pods,
    selector_of,
    to_scale_back,
)
from pgbackup.builders.restore_job import FrozenRequest, build_restore_job

SETTINGS = JobSettings(image="ghcr.io/pgbackup/pgbackup-operator:test", service_account="pgbackup-job")
UID = "7d3c1c9e-0000-4000-8000-000000000001"
MIGRATE: dict[str, Any] = {
    "image": "ghcr.io/shop/app:1.4.2", "command": ["./manage.py"], "args": ["migrate", "--noinput"],
    "env": [{"name": "DATABASE_PASSWORD", "secretKeyRef": {"name": "app-db", "key": "password"}},
            {"name": "DJANGO_SETTINGS_MODULE", "value": "shop.settings"}],
    "timeoutSeconds": 900,
}


def policy(**overrides: Any) -> BackupPolicySpec:
    spec: dict[str, Any] = {
        "database": {"host": "db.shop.svc", "credentialsSecret": {"name": "db-creds"}},
        "schedule": "0 2 * * *",
        "storage": {"s3": {"bucket": "backups", "credentialsSecret": {"name": "s3-creds"}}},
        "retention": {"keepLast": 3},
        "jobTemplate": {"activeDeadlineSeconds": 1800},
        **overrides,
    }
    return BackupPolicySpec.model_validate(spec)


def restore(**spec: Any) -> RestoreRequestSpec:
    return RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, **spec})


def hook_job(**fields: Any) -> dict[str, Any]:
    return build_hook_job(HookSpec.model_validate({**MIGRATE, **fields}), "post-restore", namespace="shop",
                          policy_name="orders", owner_kind="RestoreRequest", owner_name="orders-restore",
                          owner_uid=UID, settings=SETTINGS)


# ---------------------------------------------------------------- hook Jobs


def test_hook_job_takes_credentials_from_secrets_never_as_values() -> None:
    job = hook_job()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert {"name": "DATABASE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-db", "key": "password"}}} \
        in container["env"]
    assert {"name": "DJANGO_SETTINGS_MODULE", "value": "shop.settings"} in container["env"]
    assert container["image"] == "ghcr.io/shop/app:1.4.2"
    assert container["command"] == ["./manage.py"] and container["args"] == ["migrate", "--noinput"]


def test_hook_job_runs_once_within_its_timeout_owned_by_the_request() -> None:
    job = hook_job()
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 900
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("RestoreRequest", "orders-restore", UID)
    assert job["metadata"]["name"] == hook_job_name("orders-restore", UID, "post-restore")
    assert len(hook_job_name("x" * 253, UID, "post-restore")) <= 63
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "hook"


def test_hook_job_has_the_security_context_of_restore_jobs() -> None:
    frozen = FrozenRequest(name="orders-restore", namespace="shop", uid=UID, spec=restore(), policy_name="orders",
                           policy=policy())
    restore_pod = build_restore_job(frozen, SETTINGS, "restore")["spec"]["template"]["spec"]
    pod = hook_job()["spec"]["template"]["spec"]
    assert pod["securityContext"] == restore_pod["securityContext"]
    assert pod["containers"][0]["securityContext"] == restore_pod["containers"][0]["securityContext"]
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "pgbackup-job"


def test_pre_backup_hook_is_an_init_container_and_extends_the_deadline() -> None:
    plain = build_cronjob("orders", "shop", UID, policy(), SETTINGS)
    hooked = build_cronjob("orders", "shop", UID, policy(hooks={"preBackup": {**MIGRATE, "timeoutSeconds": 60}}),
                           SETTINGS)
    job_spec = hooked["spec"]["jobTemplate"]["spec"]
    (init,) = job_spec["template"]["spec"]["initContainers"]
    assert init["image"] == "ghcr.io/shop/app:1.4.2"
    assert {"name": "DATABASE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-db", "key": "password"}}} \
        in init["env"]
    assert job_spec["activeDeadlineSeconds"] == 1800 + 60
    assert "initContainers" not in plain["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "fake" not in json.dumps(hooked)


def test_log_tail_is_short() -> None:
    text = "\n".join(f"line {n}" for n in range(1000))
    tail = log_tail(text)
    assert tail.endswith("line 999") and "line 979" not in tail and len(tail) <= 1500
    assert len(log_tail("x" * 10_000)) == 1500


# ---------------------------------------------------------------- quiesce bookkeeping


def test_quiesce_only_acts_on_an_overwrite() -> None:
    quiesce = {"deployments": ["web", "web"], "statefulSets": ["worker"]}
    assert requested_workloads(restore(quiesce=quiesce, target={"database": "orders_copy"})) == []
    assert requested_workloads(restore(quiesce=quiesce, target={"overwrite": True}, dryRun=True)) == []
    assert requested_workloads(restore(quiesce=quiesce, target={"overwrite": True})) == [
        Workload("Deployment", "web"), Workload("StatefulSet", "worker")]


def test_recorded_counts_and_what_is_left_to_scale_back() -> None:
    web, worker = Workload("Deployment", "web"), Workload("StatefulSet", "worker")
    entries = record([web, worker], {web: {"spec": {"replicas": 3}}, worker: {"spec": {}}})
    assert entries == [{"kind": "Deployment", "name": "web", "replicas": 3, "restored": False},
                       {"kind": "StatefulSet", "name": "worker", "replicas": 1, "restored": False}]
    half = mark_restored(entries, {("Deployment", "web")})
    assert [e["name"] for e in to_scale_back({"quiesce": half})] == ["worker"]
    assert to_scale_back({}) == []


def test_selector_and_running_pods() -> None:
    assert selector_of({"status": {"selector": "app=web,tier=front"}}) == {"app": "web", "tier": "front"}
    assert selector_of({"spec": {"selector": {"matchLabels": {"app": "web"}}}}) == {"app": "web"}
    pods = [{"metadata": {"name": "web-1", "labels": {"app": "web"}}, "status": {"phase": "Running"}},
            {"metadata": {"name": "web-2", "labels": {"app": "web"}}, "status": {"phase": "Succeeded"}},
            {"metadata": {"name": "db-1", "labels": {"app": "db"}}, "status": {"phase": "Running"}}]
    assert running_pods(pods, {"app": "web"}) == ["web-1"]


# ---------------------------------------------------------------- invalid values


@pytest.mark.parametrize("hook, complaint", [
    ({"image": "app:1", "timeoutSeconds": 5}, "greater than or equal to 10"),
    ({"image": "app:1", "timeoutSeconds": 90000}, "less than or equal to 86400"),
    ({"image": "app :1"}, "pattern"),
    ({"image": ""}, "at least 1"),
    ({"image": "app:1", "env": [{"name": "A"}]}, "exactly one of value or secretKeyRef"),
    ({"image": "app:1", "env": [{"name": "A", "value": "x", "secretKeyRef": {"name": "s", "key": "k"}}]},
     "exactly one of value or secretKeyRef"),
    ({"image": "app:1", "env": [{"name": "1A", "value": "x"}]}, "pattern"),
    ({"image": "app:1", "env": [{"name": "A", "secretKeyRef": {"name": "Bad_Name", "key": "k"}}]}, "pattern"),
    ({"image": "app:1", "unknown": True}, "Extra inputs"),
])
def test_invalid_hooks_are_refused(hook: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        restore(hooks={"postRestore": hook})
    with pytest.raises(ValidationError, match=complaint):
        policy(hooks={"preBackup": hook})


def test_hook_timeout_defaults_to_ten_minutes() -> None:
    assert restore(hooks={"preRestore": {"image": "app:1"}}).hooks.pre_restore.timeout_seconds == 600  # type: ignore[union-attr]


@pytest.mark.parametrize("quiesce", [
    {"deployments": ["Web"]}, {"statefulSets": ["worker_1"]}, {"deployments": [""]}, {"replicaSets": ["x"]},
])
def test_invalid_quiesce_is_refused(quiesce: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        restore(quiesce=quiesce, target={"overwrite": True})
