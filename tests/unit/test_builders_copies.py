"""spec.copies in the API, the Jobs and the status (plain dicts, no cluster)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from pgbackup.api import BackupPolicySpec, BackupPolicyStatus, JobSummary, jobenv
from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.api.summary import MAX_COPY_ERROR_CHARS, MAX_SUMMARY_BYTES, CopySummary
from pgbackup.builders.cronjob import build_cronjob
from pgbackup.builders.pod import JobSettings
from pgbackup.builders.restore_job import FrozenRequest, build_restore_job
from pgbackup.builders.results import read_result, record_result

SETTINGS = JobSettings(image="ghcr.io/pgbackup/pgbackup-operator:test", service_account="pgbackup-job")
NOW = "2026-11-23T10:00:00Z"


def offsite(name: str = "offsite", secret: str = "offsite-s3") -> dict[str, Any]:
    return {"name": name, "s3": {"bucket": "backups-dr", "region": "eu-west-1",
                                 "credentialsSecret": {"name": secret, "accessKeyIdKey": "id"}},
            "retention": {"keepLast": 30}}


def nearby(name: str = "nearby") -> dict[str, Any]:
    return {"name": name, "volume": {"claimName": "nfs-backups", "path": "orders"}, "retention": {"daily": 7}}


def spec(copies: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "database": {"host": "db.shop.svc", "credentialsSecret": {"name": "db-creds"}},
        "schedule": "0 2 * * *",
        "storage": {"s3": {"bucket": "backups", "credentialsSecret": {"name": "s3-creds"}}},
        "retention": {"keepLast": 3},
        "copies": copies,
    }


def policy(copies: list[dict[str, Any]]) -> BackupPolicySpec:
    return BackupPolicySpec.model_validate(spec(copies))


def backup_pod(copies: list[dict[str, Any]]) -> dict[str, Any]:
    cronjob = build_cronjob("orders", "shop", "uid-1", policy(copies), SETTINGS)
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in pod["containers"][0]["env"]}


# -- API ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("copies", "message"), [
    ([offsite("dr"), nearby("dr")], "dr is used more than once"),
    ([{**offsite(), "volume": {"claimName": "nfs"}}], re.escape("exactly one of copies[].s3 or copies[].volume")),
    ([{"name": "offsite", "retention": {"keepLast": 1}}], re.escape("exactly one of copies[].s3 or copies[].volume")),
    ([{**offsite(), "retention": {}}], "at least one rule"),
    ([{**offsite(), "name": "Off_Site"}], "name"),
    ([offsite(f"c{i}") for i in range(5)], "at most 4"),
])
def test_invalid_copies_are_refused(copies: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        policy(copies)


def test_from_copy_must_be_a_dns_label() -> None:
    assert RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, "fromCopy": "offsite"}).from_copy == "offsite"
    with pytest.raises(ValidationError, match="fromCopy"):
        RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, "fromCopy": "Off Site"})


def test_crd_has_the_copy_rules() -> None:
    schema = BackupPolicySpec.model_json_schema(by_alias=True)
    text = json.dumps(schema)
    assert "set exactly one of copies[].s3 or copies[].volume" in text
    assert schema["properties"]["copies"]["maxItems"] == 4


# -- Jobs -----------------------------------------------------------------------------------------------


def test_each_copy_gets_its_own_credential_env_names_from_its_secret() -> None:
    env = env_of(backup_pod([offsite("offsite"), offsite("offsite-eu", secret="eu-s3")]))
    pairs = {
        "PGBACKUP_COPY_OFFSITE_AWS_ACCESS_KEY_ID": ("offsite-s3", "id"),
        "PGBACKUP_COPY_OFFSITE_AWS_SECRET_ACCESS_KEY": ("offsite-s3", "secretAccessKey"),
        "PGBACKUP_COPY_OFFSITE_EU_AWS_ACCESS_KEY_ID": ("eu-s3", "id"),
        "PGBACKUP_COPY_OFFSITE_EU_AWS_SECRET_ACCESS_KEY": ("eu-s3", "secretAccessKey"),
    }
    for name, (secret, key) in pairs.items():
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (secret, key)
        assert ref["optional"] is True  # a missing copy Secret fails the copy, not the backup's pod
    # the primary's credentials stay the primary's
    assert env[jobenv.ENV_S3_ACCESS_KEY_ID]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    names = [item["name"] for item in backup_pod([offsite("a"), offsite("b"), nearby("c")])["containers"][0]["env"]]
    assert len(names) == len(set(names))  # no env name is given twice


def test_volume_copy_is_mounted_read_write_and_the_runner_told_where() -> None:
    pod = backup_pod([nearby()])
    (volume,) = [v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == "nfs-backups"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert not mount.get("readOnly") and not volume["persistentVolumeClaim"].get("readOnly")
    assert env_of(pod)[jobenv.copy_volume_root_env("nearby")]["value"] == mount["mountPath"]


def test_no_secret_value_and_no_credential_argument_in_the_manifest() -> None:
    cronjob = build_cronjob("orders", "shop", "uid-1", policy([offsite(), nearby()]), SETTINGS)
    text = json.dumps(cronjob)
    for forbidden in ("stringData", '"data"', "secretAccessKey\":"):
        assert forbidden not in text
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == jobenv.COMMAND_BACKUP and "args" not in container
    for item in container["env"]:
        if "AWS" in item["name"]:
            assert "value" not in item and "secretKeyRef" in item["valueFrom"]


def test_restore_job_reaches_only_the_copy_it_reads_from() -> None:
    spec_ = policy([offsite(), nearby()])

    def restore_env(**request: Any) -> set[str]:
        frozen = FrozenRequest(name="rr", namespace="shop", uid="uid-2", policy_name="orders", policy=spec_,
                               spec=RestoreRequestSpec.model_validate({"policyRef": {"name": "orders"}, **request}))
        job = build_restore_job(frozen, SETTINGS, "restore")
        return {item["name"] for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert not any(name.startswith("PGBACKUP_COPY_") for name in restore_env())
    from_offsite = {name for name in restore_env(fromCopy="offsite") if name.startswith("PGBACKUP_COPY_")}
    assert from_offsite == {jobenv.copy_access_key_env("offsite"), jobenv.copy_secret_key_env("offsite")}


# -- status ---------------------------------------------------------------------------------------------


def finished(summary: JobSummary) -> Any:
    job = {"metadata": {"name": "orders-backup-1"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    pod = {"metadata": {"creationTimestamp": NOW}, "status": {"containerStatuses": [
        {"name": "backup", "state": {"terminated": {"exitCode": 0, "message": summary.to_termination_message()}}}]}}
    return read_result(job, [pod])


def test_copies_from_the_summary_reach_the_status() -> None:
    at = datetime(2026, 11, 23, 2, 1, tzinfo=UTC)
    summary = JobSummary(kind="backup", phase="Completed", backup_id="20261123T020000Z", copies=[
        CopySummary(name="offsite", last_copied_backup="20261123T020000Z", last_copied_at=at, lag_backups=0),
        CopySummary(name="nearby", last_copied_backup="20261122T020000Z", lag_backups=1,
                    error="copy 'nearby' to file:///x: the volume is full"),
    ])
    previous = {"copies": [{"name": "nearby", "lastCopiedAt": "2026-11-22T02:01:00Z"}]}
    patch = record_result(previous, finished(summary), 1, NOW)
    offsite_state, nearby_state = patch["copies"]
    assert offsite_state == {"name": "offsite", "lastCopiedBackup": "20261123T020000Z",
                             "lastCopiedAt": "2026-11-23T02:01:00Z", "lagBackups": 0}
    assert nearby_state["error"].endswith("the volume is full") and nearby_state["lagBackups"] == 1
    assert nearby_state["lastCopiedAt"] == "2026-11-22T02:01:00Z"  # kept from the previous run
    assert patch["lastBackup"]["phase"] == "Completed"
    BackupPolicyStatus.model_validate(patch)


def test_a_summary_with_four_failing_copies_fits_the_termination_message() -> None:
    copies = [CopySummary(name=f"copy-{i}" + "x" * 50, last_copied_backup="20261123T020000Z-12", lag_backups=99,
                          last_copied_at=datetime.now(UTC), error="e" * MAX_COPY_ERROR_CHARS) for i in range(4)]
    summary = JobSummary(kind="backup", phase="Completed", backup_id="20261123T020000Z-12", method="physical",
                         manifest="s3://" + "b" * 63 + "/" + "p" * 300 + "/20261123T020000Z-12/manifest.json",
                         manifest_sha256="f" * 64, size_bytes=10**12, duration_seconds=1e5,
                         started_at=datetime.now(UTC), completed_at=datetime.now(UTC), copies=copies)
    text = summary.to_termination_message()
    assert len(text.encode()) <= MAX_SUMMARY_BYTES
    assert JobSummary.from_termination_message(text) == summary
