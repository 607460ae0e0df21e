"""Application volumes: the API fields, the mounts of backup / restore Jobs, and pods stuck on their volumes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pgbackup.api import BackupPolicySpec, jobenv
from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.builders.cronjob import build_cronjob
from pgbackup.builders.pod import JobSettings
from pgbackup.builders.restore_job import FrozenRequest, build_restore_job
from pgbackup.builders.results import read_result
from pgbackup.builders.verify_job import build_verify_job
from pgbackup.builders.volumes import VOLUME_UNAVAILABLE, stuck_volume_message, volume_problem

SETTINGS = JobSettings(image="ghcr.io/pgbackup/pgbackup-operator:test")
UID = "6f1c2f9e-0000-4000-8000-000000000001"


def policy(**overrides: Any) -> BackupPolicySpec:
    spec: dict[str, Any] = {
        "database": {"host": "db.shop.svc", "credentialsSecret": {"name": "db-creds"}},
        "schedule": "0 2 * * *",
        "storage": {"volume": {"claimName": "backups"}},
        "retention": {"keepLast": 3},
        "volumes": [{"claimName": "uploads", "exclude": ["*.tmp"]}, {"claimName": "config", "paths": ["app/etc"]}],
    }
    spec.update(overrides)
    return BackupPolicySpec.model_validate(spec)


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    if job["kind"] == "CronJob":
        return job["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return job["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def app_mounts(job: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """claim -> (mount path, read-only) for application volumes."""
    pod = pod_of(job)
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if v["name"].startswith("app-volume-")}
    out = {}
    for mount in pod["containers"][0]["volumeMounts"]:
        if mount["name"] in claims:
            claim = claims[mount["name"]]
            assert claim.get("readOnly", False) == mount.get("readOnly", False)
            out[claim["claimName"]] = (mount["mountPath"], mount.get("readOnly", False))
    return out


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in pod_of(job)["containers"][0]["env"]}


# ---------------------------------------------------------------- API


def test_volume_paths_default_to_the_whole_claim_and_are_normalised() -> None:
    spec = policy(volumes=[{"claimName": "uploads"}, {"claimName": "media", "paths": ["./a//b/", "."]}])
    assert spec.volumes[0].paths == ["."]
    assert spec.volumes[1].paths == ["a/b", "."]
    assert spec.to_wire()["volumes"][0]["claimName"] == "uploads"


@pytest.mark.parametrize("volumes, message", [
    ([{"claimName": "Uploads"}], "claimName"),
    ([{"claimName": "uploads", "paths": ["/etc"]}], "relative"),
    ([{"claimName": "uploads", "paths": ["a/../../etc"]}], "'..'"),
    ([{"claimName": "uploads", "paths": []}], "paths"),
    ([{"claimName": "uploads", "exclude": [""]}], "exclude"),
    ([{"claimName": "uploads"}, {"claimName": "uploads"}], "claimName twice"),
    ([{"claimName": f"v{i}"} for i in range(21)], "volumes"),
], ids=["not-dns", "absolute", "dotdot", "no-paths", "empty-glob", "twice", "too-many"])
def test_invalid_policy_volumes_are_refused(volumes: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        policy(volumes=volumes)


def test_restore_volumes_default_to_the_same_claim() -> None:
    spec = RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, "volumes": [
        {"claimName": "uploads"}, {"claimName": "config", "targetClaimName": "config-copy", "path": "restored/",
                                   "overwrite": True}]})
    assert [(v.target_claim, v.path, v.overwrite) for v in spec.volumes] == [
        ("uploads", "", False), ("config-copy", "restored", True)]


@pytest.mark.parametrize("volume, message", [
    ({"claimName": "uploads", "path": "/abs"}, "relative"),
    ({"claimName": "uploads", "path": "../up"}, "'..'"),
    ({"claimName": "uploads", "targetClaimName": "Bad_Name"}, "targetClaimName"),
    ({"claimName": "uploads", "overwrite": "sometimes"}, "overwrite"),
], ids=["absolute", "dotdot", "target-not-dns", "overwrite-not-bool"])
def test_invalid_restore_volumes_are_refused(volume: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, "volumes": [volume]})


def test_two_volumes_into_the_same_place_are_refused() -> None:
    with pytest.raises(ValidationError, match="same targetClaimName"):
        RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, "volumes": [
            {"claimName": "a", "targetClaimName": "t"}, {"claimName": "b", "targetClaimName": "t"}]})


# ---------------------------------------------------------------- builders


def test_backup_jobs_mount_each_claim_read_only() -> None:
    cronjob = build_cronjob("orders", "shop", UID, policy(), SETTINGS)
    assert app_mounts(cronjob) == {
        "uploads": (f"{jobenv.APP_VOLUMES_ROOT}/uploads", True),
        "config": (f"{jobenv.APP_VOLUMES_ROOT}/config", True),
    }
    assert env_of(cronjob)[jobenv.ENV_APP_VOLUMES_ROOT] == jobenv.APP_VOLUMES_ROOT
    names = [v["name"] for v in pod_of(cronjob)["volumes"]]
    assert len(names) == len(set(names)) and "storage" in names  # beside the backup storage, no name clash


def test_policy_without_volumes_mounts_none() -> None:
    cronjob = build_cronjob("orders", "shop", UID, policy(volumes=[]), SETTINGS)
    assert app_mounts(cronjob) == {} and jobenv.ENV_APP_VOLUMES_ROOT not in env_of(cronjob)


def test_verification_jobs_do_not_mount_application_claims() -> None:
    job = build_verify_job("orders", "shop", UID, policy(), SETTINGS, "20261123T020000Z")
    assert app_mounts(job) == {}


def frozen(volumes: list[dict[str, Any]]) -> FrozenRequest:
    return FrozenRequest(name="orders-restore", namespace="shop", uid=UID, policy_name="orders", policy=policy(),
                         spec=RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, "volumes": volumes}))


def test_restore_jobs_mount_target_claims_read_write_and_plan_jobs_none() -> None:
    request = frozen([{"claimName": "uploads", "targetClaimName": "uploads-restored"},
                      {"claimName": "config", "path": "from-backup"}])
    restore = build_restore_job(request, SETTINGS, "restore")
    assert app_mounts(restore) == {
        "uploads-restored": (f"{jobenv.APP_VOLUMES_ROOT}/uploads-restored", False),
        "config": (f"{jobenv.APP_VOLUMES_ROOT}/config", False),
    }
    assert env_of(restore)[jobenv.ENV_APP_VOLUMES_ROOT] == jobenv.APP_VOLUMES_ROOT
    assert app_mounts(build_restore_job(request, SETTINGS, "plan")) == {}


# ---------------------------------------------------------------- stuck on volumes


def pending_pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "orders-backup-1-abcde"},
            "spec": {"volumes": [{"name": "app-volume-0", "persistentVolumeClaim": {"claimName": "uploads",
                                                                                     "readOnly": True}}]},
            "status": {"phase": "Pending", **status}}


def test_multi_attach_event_names_the_claim_and_the_access_mode_limit() -> None:
    event = {"reason": "FailedAttachVolume", "type": "Warning", "message": "Multi-Attach error for volume "
             "\"pvc-123\" Volume is already used by pod(s) web-7d9f", "involvedObject": {"name": "orders-backup-1-abcde"}}
    message = volume_problem(pending_pod(), [event])
    assert message is not None
    assert "cannot mount its volumes (claims: uploads)" in message and "Multi-Attach error" in message
    assert "ReadWriteOnce" in message


def test_failed_mount_event_is_recognised() -> None:
    message = volume_problem(pending_pod(), [{"reason": "FailedMount", "message": "Unable to attach or mount volumes"}])
    assert message is not None and "Unable to attach or mount volumes" in message


@pytest.mark.parametrize("text", [
    "0/3 nodes are available: 3 node(s) had volume node affinity conflict.",
    "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.",
])
def test_unschedulable_because_of_volumes_is_recognised(text: str) -> None:
    pod = pending_pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                   "message": text}])
    message = volume_problem(pod)
    assert message is not None and text in message and "cannot be scheduled because of its volumes" in message


@pytest.mark.parametrize("pod", [
    pending_pod(conditions=[{"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available: "
                             "3 Insufficient memory."}]),
    {**pending_pod(), "status": {"phase": "Running"}},
    pending_pod(),
], ids=["other-unschedulable", "running", "plain-pending"])
def test_other_pods_are_not_reported_as_volume_problems(pod: dict[str, Any]) -> None:
    assert volume_problem(pod, [{"reason": "Scheduled", "message": "assigned"}]) is None


def deadline_job(claims: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": "orders-backup-1"},
            "spec": {"template": {"spec": {"volumes": [
                {"name": f"app-volume-{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]}}},
            "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                       "message": "Job was active longer than specified deadline"}]}}


def test_failed_job_with_a_stuck_pod_names_the_volume_problem() -> None:
    pod = pending_pod(conditions=[{"type": "PodScheduled", "status": "False",
                                   "message": "0/3 nodes are available: 3 node(s) had volume node affinity conflict."}])
    result = read_result(deadline_job(["uploads"]), [pod])
    assert result is not None and result.phase == "Failed"
    assert result.reason == VOLUME_UNAVAILABLE
    assert result.message.startswith("Job was active longer than specified deadline: pod orders-backup-1-abcde")


def test_deadline_without_pods_hints_at_the_claims() -> None:
    message = stuck_volume_message(deadline_job(["uploads"]), [])
    assert message is not None and "never started" in message and "uploads" in message
    assert stuck_volume_message(deadline_job([]), []) is None  # no application volumes: nothing to blame


def test_deadline_after_the_container_ran_is_not_a_volume_problem() -> None:
    ran = {"metadata": {"name": "p"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "backup", "state": {"terminated": {"exitCode": 137}}}]}}
    result = read_result(deadline_job(["uploads"]), [ran])
    assert result is not None and result.reason == "DeadlineExceeded"
