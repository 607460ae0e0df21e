"""The plan and restore Jobs of a RestoreRequest, and reading their outcome back (plain dicts, no cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgbackup.api import BackupPolicySpec, JobSummary
from pgbackup.api.restore import RestorePlan, RestoreRequestSpec, RestoreResult
from pgbackup.builders.pod import JobSettings
from pgbackup.builders.restore_job import (
    FrozenRequest,
    build_restore_job,
    frozen_request,
    identity_problem,
    read_step_outcome,
    restore_job_name,
    restore_secret_keys,
)

SETTINGS = JobSettings(image="ghcr.io/pgbackup/pgbackup-operator:test", service_account="pgbackup-job")
UID = "6f1c2f9e-0000-4000-8000-000000000001"
AGE_RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def policy(**overrides: Any) -> BackupPolicySpec:
    spec: dict[str, Any] = {
        "database": {"host": "db.shop.svc", "credentialsSecret": {"name": "db-creds"}},
        "schedule": "0 2 * * *",
        "storage": {"s3": {"bucket": "backups", "credentialsSecret": {"name": "s3-creds"}}},
        "retention": {"keepLast": 3},
        "encryption": {"recipients": [AGE_RECIPIENT], "identitySecret": {"name": "age-id", "key": "identity"}},
        "jobTemplate": {"activeDeadlineSeconds": 1800, "backoffLimit": 3},
    }
    spec.update(overrides)
    return BackupPolicySpec.model_validate(spec)


def request(name: str = "orders-restore", **spec: Any) -> FrozenRequest:
    return FrozenRequest(name=name, namespace="shop", uid=UID,
                         spec=RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, **spec}),
                         policy_name="orders", policy=policy())


def container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def test_plan_job_runs_a_dry_run_and_the_restore_job_does_not() -> None:
    plan = build_restore_job(request(), SETTINGS, "plan")
    restore = build_restore_job(request(), SETTINGS, "restore")
    assert container(plan)["command"] == ["pgbackup", "restore-request", "--dry-run"]
    assert container(restore)["command"] == ["pgbackup", "restore-request"]
    assert plan["metadata"]["name"] != restore["metadata"]["name"]
    assert plan["metadata"]["annotations"]["pgbackup.dev/restore-step"] == "plan"
    assert restore["metadata"]["annotations"]["pgbackup.dev/restore-step"] == "restore"


def test_jobs_are_owned_by_the_request_never_retried_and_bounded_by_the_policy_deadline() -> None:
    job = build_restore_job(request(), SETTINGS, "restore")
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "pgbackup.dev/v1alpha1", "kind": "RestoreRequest", "name": "orders-restore", "uid": UID,
        "controller": True, "blockOwnerDeletion": True}]
    assert job["spec"]["backoffLimit"] == 0  # not the policy's 3: a restore is never retried blindly
    assert job["spec"]["activeDeadlineSeconds"] == 1800
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "restore"
    assert labels["pgbackup.dev/policy"] == "orders"
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_pod_has_the_backup_jobs_security_settings() -> None:
    pod = build_restore_job(request(), SETTINGS, "plan")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and pod["restartPolicy"] == "Never"
    security = pod["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"] == {"drop": ["ALL"]}


def test_identity_is_mounted_and_the_runner_is_told_where() -> None:
    job = build_restore_job(request(), SETTINGS, "plan")
    pod = job["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "age-identity")
    assert volume["secret"]["secretName"] == "age-id" and volume["secret"]["items"][0]["key"] == "identity"
    mount = next(m for m in container(job)["volumeMounts"] if m["name"] == "age-identity")
    assert mount["readOnly"] is True
    assert env_of(job)["PGBACKUP_AGE_IDENTITY_FILE"].startswith(mount["mountPath"] + "/")


def test_env_carries_request_and_policy_but_no_secret_values() -> None:
    spec = {"target": {"database": "orders_restored", "credentialsSecret": {"name": "target-creds"}}}
    job = build_restore_job(request(**spec), SETTINGS, "restore")
    env = env_of(job)
    document = json.loads(env["PGBACKUP_RESTORE"])
    assert document["name"] == "orders-restore" and document["namespace"] == "shop"
    assert document["spec"]["target"]["database"] == "orders_restored"
    assert document["policy"]["name"] == "orders" and document["policy"]["spec"]["storage"]["s3"]["bucket"] == "backups"
    # the target's credentials, not the policy's, and only as references
    assert env["PGUSER"] == {"secretKeyRef": {"name": "target-creds", "key": "username"}}
    assert env["PGPASSWORD"] == {"secretKeyRef": {"name": "target-creds", "key": "password"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "s3-creds", "key": "secretAccessKey"}}


def test_no_owner_and_no_privileges_reach_the_runner_and_default_to_keeping_both() -> None:
    default = json.loads(env_of(build_restore_job(request(), SETTINGS, "restore"))["PGBACKUP_RESTORE"])
    assert default["spec"].get("noOwner", False) is False and default["spec"].get("noPrivileges", False) is False
    job = build_restore_job(request(noOwner=True, noPrivileges=True), SETTINGS, "restore")
    document = json.loads(env_of(job)["PGBACKUP_RESTORE"])
    assert document["spec"]["noOwner"] is True and document["spec"]["noPrivileges"] is True


def test_names_are_deterministic_short_and_distinct_per_request_uid() -> None:
    long_name = "a" * 253
    name = restore_job_name(long_name, UID, "restore")
    assert len(name) <= 63 and name == restore_job_name(long_name, UID, "restore")
    assert name != restore_job_name(long_name, "another-uid", "restore")
    assert len(build_restore_job(request(name="r" * 200), SETTINGS, "plan")["metadata"]["name"]) <= 63
    assert len(build_restore_job(request(name="r" * 200), SETTINGS, "plan")["metadata"]["labels"]
               ["pgbackup.dev/restore-request"]) <= 63
    assert restore_job_name("orders-restore", UID, "plan").startswith("orders-restore-plan-")


def test_the_restore_job_is_rebuilt_from_the_plan_job_exactly() -> None:
    original = request(backup="20261123T020000Z", extensions=["vector"])
    plan = build_restore_job(original, SETTINGS, "plan")
    frozen = frozen_request(plan)
    assert frozen == original
    assert build_restore_job(frozen, SETTINGS, "restore") == build_restore_job(original, SETTINGS, "restore")


def test_secret_keys_needed_by_a_restore() -> None:
    uses = restore_secret_keys(RestoreRequestSpec.model_validate(
        {"policyRef": {"name": "orders"}, "target": {"credentialsSecret": {"name": "target-creds"}}}), policy())
    assert {use.secret for use in uses} == {"target-creds", "s3-creds", "age-id"}  # not the policy's db-creds
    uses = restore_secret_keys(RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}}), policy())
    assert {use.secret for use in uses} == {"db-creds", "s3-creds", "age-id"}


def test_an_encrypted_policy_without_identity_is_a_clear_error() -> None:
    without = policy(encryption={"recipients": [AGE_RECIPIENT]})
    problem = identity_problem("shop", "orders", without)
    assert problem is not None and "identitySecret" in problem and "shop/orders" in problem
    assert identity_problem("shop", "orders", policy()) is None
    assert identity_problem("shop", "orders", policy(encryption=None)) is None


def finished(condition: str, reason: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "orders-restore-restore-x"},
            "status": {"conditions": [{"type": condition, "status": "True", "reason": reason}]}}


def pod_with(state: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"metadata": {"name": "p"}, "status": {"containerStatuses": [{"name": "backup", "state": state}]}}]


def test_outcome_from_the_restore_summary() -> None:
    summary = JobSummary(kind="restore", phase="Completed", backup_id="20261123T020000Z",
                         plan=RestorePlan(backup="20261123T020000Z", target="db:5432/orders_restored"),
                         result=RestoreResult(restore_seconds=3.5, row_counts={"orders.public.orders": 3}))
    outcome = read_step_outcome(finished("Complete"),
                                pod_with({"terminated": {"exitCode": 0, "message": summary.to_termination_message()}}))
    assert outcome is not None and outcome.succeeded and outcome.summary == summary


@pytest.mark.parametrize(("condition", "state", "reason", "text"), [
    ("Failed", {"terminated": {"exitCode": 3, "message": JobSummary(
        kind="restore", phase="Failed", reason="BackupNotFound",
        error="no complete backup 20990101T000000Z in s3://backups; list them with `pgbackup list`")
        .to_termination_message()}}, "BackupNotFound", "pgbackup list"),
    ("Failed", {"waiting": {"reason": "ImagePullBackOff", "message": "image not found"}}, "ImagePullBackOff",
     "image not found"),
    ("Failed", {"terminated": {"exitCode": 137, "message": "Killed"}}, "DeadlineExceeded", "deadline"),
    ("Complete", {"terminated": {"exitCode": 0, "message": "not json"}}, "NoSummary", "kubectl logs"),
])
def test_failure_reasons(condition: str, state: dict[str, Any], reason: str, text: str) -> None:
    job = finished(condition, "DeadlineExceeded")
    job["status"]["conditions"][0]["message"] = "Job was active longer than specified deadline"
    outcome = read_step_outcome(job, pod_with(state))
    assert outcome is not None and not outcome.succeeded
    assert outcome.reason == reason and text in outcome.message


def test_a_running_job_has_no_outcome_yet() -> None:
    assert read_step_outcome({"metadata": {"name": "x"}, "status": {"active": 1}}, []) is None


def test_a_runner_killed_for_memory_says_so_and_what_to_raise() -> None:
    job = finished("Failed", "BackoffLimitExceeded")
    job["status"]["conditions"][0]["message"] = "Job has reached the specified backoff limit"
    outcome = read_step_outcome(job, pod_with({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    assert outcome is not None and not outcome.succeeded and outcome.reason == "OOMKilled"
    assert "more memory than its limit" in outcome.message and "spec.jobTemplate.resources.limits.memory" in outcome.message
