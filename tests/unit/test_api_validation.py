"""Every validation rule of the API models refuses a bad value with an error that names the field and says
what is wrong (and, where it helps, what would be right)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from pgbackup.api import BackupPolicySpec, Condition, RestoreRequestSpec, format_duration, parse_duration

AGE_KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def policy_spec() -> dict[str, Any]:
    return {
        "database": {"host": "orders-db.shop.svc", "credentialsSecret": {"name": "orders-db-backup"}},
        "schedule": "0 2 * * *",
        "storage": {"s3": {"bucket": "backups", "prefix": "shop/orders-db"}},
        "retention": {"keepLast": 7},
    }


def restore_spec() -> dict[str, Any]:
    return {"policyRef": {"name": "orders-db"}}


def with_value(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of spec with the dotted path set (intermediate objects created); value DELETE removes it."""
    spec = copy.deepcopy(spec)
    *parents, last = path.split(".")
    target = spec
    for part in parents:
        target = target.setdefault(part, {})
    if value is DELETE:
        target.pop(last, None)
    else:
        target[last] = value
    return spec


DELETE = object()


def refusal(model: type[BaseModel], data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return [(".".join(str(part) for part in error["loc"]), error["msg"]) for error in caught.value.errors()]


def assert_refused(model: type[BaseModel], data: dict[str, Any], where: str, says: str) -> None:
    errors = refusal(model, data)
    assert any(loc == where and says in msg for loc, msg in errors), \
        f"expected an error at {where!r} saying {says!r}, got {errors}"


def test_the_valid_examples_are_valid() -> None:
    BackupPolicySpec.model_validate(policy_spec())
    RestoreRequestSpec.model_validate(restore_spec())


@pytest.mark.parametrize("path, value, where, says", [
    # schedule: cron syntax as a CronJob reads it
    ("schedule", "0 2 * *", "schedule", "has 5 fields"),
    ("schedule", "0 2 * * * *", "schedule", "got 6"),
    ("schedule", "61 2 * * *", "schedule", "not a valid cron expression"),
    ("schedule", "@sometimes", "schedule", "unknown macro"),
    ("schedule", "", "schedule", "at least 1 character"),
    ("schedule", DELETE, "schedule", "Field required"),
    ("timeZone", "Europe Berlin", "timeZone", "should match pattern"),
    ("method", "incremental", "method", "'logical' or 'physical'"),
    ("suspend", "sometimes", "suspend", "valid boolean"),
    # database
    ("database.host", "", "database.host", "at least 1 character"),
    ("database.port", 0, "database.port", "greater than or equal to 1"),
    ("database.port", 65536, "database.port", "less than or equal to 65535"),
    ("database.databases", ["orders", "orders"], "database", "lists a name twice"),
    ("database.databases", ["x" * 64], "database", "must be 1 to 63 characters"),
    ("database.databases", [""], "database", "must be 1 to 63 characters"),
    ("database.sslMode", "sometimes", "database.sslMode", "'verify-full'"),
    ("database.credentialsSecret.name", "Orders_DB", "database.credentialsSecret.name", "should match pattern"),
    ("database.credentialsSecret.name", "", "database.credentialsSecret.name", "at least 1 character"),
    ("database.credentialsSecret.passwordKey", "pass word", "database.credentialsSecret.passwordKey",
     "should match pattern"),
    ("database.credentialsSecret", DELETE, "database.credentialsSecret", "Field required"),
    ("database.sslRootCertSecret", {"name": "ca"}, "database.sslRootCertSecret.key", "Field required"),
    # storage
    ("storage", {}, "storage", "set exactly one of storage.s3 or storage.volume"),
    ("storage.volume", {"claimName": "pvc"}, "storage", "set exactly one of storage.s3 or storage.volume"),
    ("storage.s3.bucket", "ab", "storage.s3.bucket", "at least 3 characters"),
    ("storage.s3.bucket", "Backups", "storage.s3.bucket", "should match pattern"),
    ("storage.s3.prefix", "/shop", "storage.s3.prefix", "should match pattern"),
    ("storage.s3.prefix", "shop/", "storage.s3.prefix", "should match pattern"),
    ("storage.s3.endpoint", "minio:9000", "storage.s3.endpoint", "should match pattern"),
    ("storage.s3.kmsKeyId", "key-1", "storage.s3", "kmsKeyId is set but serverSideEncryption is not 'aws:kms'"),
    ("storage.s3.serverSideEncryption", "rot13", "storage.s3.serverSideEncryption", "'AES256' or 'aws:kms'"),
    ("storage.s3.partSizeMib", 4, "storage.s3.partSizeMib", "greater than or equal to 5"),
    ("storage.s3.storageClass", "standard", "storage.s3.storageClass", "should match pattern"),
    ("storage.s3.requestChecksumCalculation", "always", "storage.s3.requestChecksumCalculation",
     "'when_supported' or 'when_required'"),
    ("storage.s3.credentialsSecret", {"name": "S3"}, "storage.s3.credentialsSecret.name", "should match pattern"),
    ("storage.s3.region", "", "storage.s3.region", "at least 1 character"),
    ("storage.s3.buckett", "typo", "storage.s3.buckett", "Extra inputs are not permitted"),
    # compression
    ("compression.algorithm", "lz4", "compression.algorithm", "'zstd', 'gzip' or 'none'"),
    ("compression.level", 23, "compression.level", "less than or equal to 22"),
    ("compression.level", 0, "compression.level", "greater than or equal to 1"),
    ("compression", {"algorithm": "gzip", "level": 10}, "compression", "out of range for gzip (1-9)"),
    ("compression", {"algorithm": "none", "level": 3}, "compression", "makes no sense with algorithm 'none'"),
    ("compression.threads", 65, "compression.threads", "less than or equal to 64"),
    # encryption
    ("encryption", {"recipients": []}, "encryption.recipients", "at least 1 item"),
    ("encryption", {"recipients": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"]}, "encryption", "is not an age public key"),
    ("encryption", {"recipients": [AGE_KEY], "identitySecret": {"name": "age"}}, "encryption.identitySecret.key",
     "Field required"),
    # retention
    ("retention", {}, "retention", "needs at least one rule"),
    ("retention", {"keepLast": 0}, "retention.keepLast", "greater than or equal to 1"),
    ("retention", {"daily": 10001}, "retention.daily", "less than or equal to 10000"),
    ("retention", {"maxAge": "90 days"}, "retention.maxAge", "should match pattern"),
    ("retention", {"maxAge": "0d"}, "retention.maxAge", "must be greater than zero"),
    ("retention", DELETE, "retention", "Field required"),
    # logical
    ("logical", {"jobs": 4}, "logical", "needs logical.format 'directory'"),
    ("logical", {"format": "directory", "jobs": 33}, "logical.jobs", "less than or equal to 32"),
    ("logical.format", "plain", "logical.format", "'custom' or 'directory'"),
    # physical
    ("physical", {"fullEvery": 0}, "physical.fullEvery", "greater than or equal to 1"),
    ("physical", {"fullEvery": 7}, "", "physical.fullEvery needs method 'physical'"),  # the method is logical here
    # wal
    ("wal.slotName", "Orders-Slot", "wal.slotName", "should match pattern"),
    ("wal.partialUploadInterval", "soon", "wal.partialUploadInterval", "should match pattern"),
    ("wal.maxSlotRetained", "10GB", "wal.maxSlotRetained", "should match pattern"),
    # verify
    ("verify.schedule", "every night", "verify", "has 5 fields"),
    ("verify.checks", [{"name": "-bad", "database": "orders", "sql": "select true"}], "verify.checks.0.name",
     "should match pattern"),
    ("verify.checks", [{"name": "ok", "database": "orders", "sql": ""}], "verify.checks.0.sql", "at least 1 character"),
    ("verify.checks", [{"name": "ok", "sql": "select true"}], "verify.checks.0.database", "Field required"),
    # objectives and notifications
    ("objectives.rpo", "1 day", "objectives.rpo", "should match pattern"),
    ("objectives.rto", "0h", "objectives.rto", "must be greater than zero"),
    ("notifications.webhook", {"urlSecret": {"name": "hook", "key": "url"}, "events": ["Everything"]},
     "notifications.webhook.events.0", "'BackupFailed'"),
    ("notifications.webhook", {"events": ["BackupFailed"]}, "notifications.webhook.urlSecret", "Field required"),
    # jobTemplate
    ("jobTemplate.backoffLimit", 11, "jobTemplate.backoffLimit", "less than or equal to 10"),
    ("jobTemplate.activeDeadlineSeconds", 30, "jobTemplate.activeDeadlineSeconds", "greater than or equal to 60"),
    ("jobTemplate.startingDeadlineSeconds", 5, "jobTemplate.startingDeadlineSeconds", "greater than or equal to 10"),
    ("jobTemplate.successfulJobsHistoryLimit", 101, "jobTemplate.successfulJobsHistoryLimit", "less than or equal"),
    ("jobTemplate.scratchSizeLimit", "10GB", "jobTemplate.scratchSizeLimit", "should match pattern"),
    ("jobTemplate.serviceAccountName", "Backup", "jobTemplate.serviceAccountName", "should match pattern"),
    ("jobTemplate.priorityClassName", "", "jobTemplate.priorityClassName", "at least 1 character"),
    ("jobTemplate.nodeSelector", {"disk": 1}, "jobTemplate.nodeSelector.disk", "valid string"),
    # typos surface instead of being ignored
    ("schedul", "0 2 * * *", "schedul", "Extra inputs are not permitted"),
    ("database.pasword", "x", "database.pasword", "Extra inputs are not permitted"),
])
def test_backup_policy_refuses(path: str, value: Any, where: str, says: str) -> None:
    assert_refused(BackupPolicySpec, with_value(policy_spec(), path, value), where, says)


def test_volume_storage_refuses_bad_claims_and_absolute_paths() -> None:
    volume = with_value(policy_spec(), "storage", {"volume": {"claimName": "Backups"}})
    assert_refused(BackupPolicySpec, volume, "storage.volume.claimName", "should match pattern")
    absolute = with_value(policy_spec(), "storage", {"volume": {"claimName": "pvc", "path": "/srv"}})
    assert_refused(BackupPolicySpec, absolute, "storage.volume.path", "should match pattern")


@pytest.mark.parametrize("path, value, where, says", [
    ("policyRef", DELETE, "policyRef", "Field required"),
    ("policyRef.name", "Orders", "policyRef.name", "should match pattern"),
    ("backup", "yesterday", "backup", "should match pattern"),
    ("backup", "", "backup", "at least 1 character"),
    ("pointInTime", {}, "pointInTime", "set exactly one of targetTime or targetLSN"),
    ("pointInTime", {"targetTime": "2026-11-23T10:15:00Z", "targetLSN": "0/3000060"}, "pointInTime",
     "set exactly one of targetTime or targetLSN"),
    ("pointInTime", {"targetLSN": "3000060"}, "pointInTime.targetLSN", "should match pattern"),
    ("pointInTime", {"targetTime": "last tuesday"}, "pointInTime.targetTime", "valid datetime"),
    ("target.port", 0, "target.port", "greater than or equal to 1"),
    ("target.database", "", "target.database", "at least 1 character"),
    ("target.database", "d" * 64, "target.database", "at most 63 characters"),
    ("target.host", "h" * 254, "target.host", "at most 253 characters"),
    ("target.credentialsSecret", {"name": "Admin"}, "target.credentialsSecret.name", "should match pattern"),
    ("target.volume", {"path": "x"}, "target.volume.claimName", "Field required"),
    ("jobs", 0, "jobs", "greater than or equal to 1"),
    ("jobs", 33, "jobs", "less than or equal to 32"),
    ("extensions", ["vector"] * 65, "extensions", "at most 64 items"),
    ("checks", [{"name": "x y", "database": "d", "sql": "select 1"}], "checks.0.name", "should match pattern"),
    ("dryRun", "perhaps", "dryRun", "valid boolean"),
    ("overwrite", True, "overwrite", "Extra inputs are not permitted"),
])
def test_restore_request_refuses(path: str, value: Any, where: str, says: str) -> None:
    assert_refused(RestoreRequestSpec, with_value(restore_spec(), path, value), where, says)


def test_error_text_names_the_field_for_a_person() -> None:
    """The text a user sees (in a condition message or a CLI error) carries the dotted path."""
    with pytest.raises(ValidationError) as caught:
        BackupPolicySpec.model_validate(with_value(policy_spec(), "storage.s3.bucket", "Bad_Bucket"))
    assert "storage.s3.bucket" in str(caught.value)


def test_condition_status_is_true_false_or_unknown() -> None:
    with pytest.raises(ValidationError) as caught:
        Condition.model_validate({"type": "Ready", "status": "Maybe", "reason": "X"})
    assert "'True', 'False' or 'Unknown'" in str(caught.value)


@pytest.mark.parametrize("text, value", [
    ("90d", timedelta(days=90)),
    ("24h", timedelta(hours=24)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("45s", timedelta(seconds=45)),
    ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
])
def test_durations_parse_and_format_back(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text, says", [
    ("", "use a number with a unit d, h, m or s"),
    ("90", "use a number with a unit d, h, m or s"),
    ("3w", "use a number with a unit d, h, m or s"),
    ("h", "use a number with a unit d, h, m or s"),
    ("0s", "must be greater than zero"),
])
def test_bad_durations_say_what_is_accepted(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_duration(text)
