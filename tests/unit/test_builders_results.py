"""Reading finished Jobs back: summary or failure reason -> status fields and Event text."""

from __future__ import annotations

from typing import Any

from pgbackup.api import BackupPolicyStatus, JobSummary
from pgbackup.builders.results import event_for, read_result, record_result

NOW = "2026-11-23T10:00:00Z"


def job(condition: str | None, reason: str | None = None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "reason": reason}] if condition else []
    return {"metadata": {"name": "orders-backup-123"}, "status": {"conditions": conditions}}


def pod(terminated: str | None = None, waiting: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if terminated is not None:
        state["terminated"] = {"exitCode": 0, "message": terminated}
    if waiting is not None:
        state["waiting"] = {"reason": waiting, "message": f"{waiting}: image not found"}
    return {"metadata": {"creationTimestamp": NOW}, "status": {"containerStatuses": [{"name": "backup", "state": state}]}}


def summary(backup_id: str, phase: str = "Completed", **extra: Any) -> str:
    return JobSummary(kind="backup", phase=phase, backup_id=backup_id, size_bytes=5 * 1024 * 1024,
                      duration_seconds=12.0, **extra).to_termination_message()


def test_running_job_has_no_result() -> None:
    assert read_result(job(None), []) is None


def test_completed_job_with_summary_records_backup_and_condition() -> None:
    result = read_result(job("Complete"), [pod(summary("20261123T020000Z", manifest="s3://b/p/m.json"))])
    assert result is not None and result.phase == "Completed"
    patch = record_result({}, result, 3, NOW)
    assert patch["lastBackup"]["id"] == "20261123T020000Z"
    assert patch["lastBackup"]["size"] == "5.0 MiB"
    assert patch["backups"][0]["manifest"] == "s3://b/p/m.json"
    assert patch["conditions"][0]["type"] == "LastBackupSucceeded" and patch["conditions"][0]["status"] == "True"
    assert "5.0 MiB" in patch["conditions"][0]["message"] and "12s" in patch["conditions"][0]["message"]
    BackupPolicyStatus.model_validate(patch)  # schema-clean


def test_an_incremental_backup_is_recorded_with_its_type_and_parent() -> None:
    result = read_result(job("Complete"), [pod(summary("20261124T020000Z", method="physical", backup_type="incr",
                                                       incremental_of="20261123T020000Z"))])
    assert result is not None
    patch = record_result({}, result, 3, NOW)
    assert patch["backups"][0]["backupType"] == "incr"
    assert patch["backups"][0]["incrementalOf"] == "20261123T020000Z"
    BackupPolicyStatus.model_validate(patch)  # schema-clean


def test_backups_are_newest_first_deduplicated_and_capped() -> None:
    status: dict[str, Any] = {}
    for day in range(1, 26):
        result = read_result(job("Complete"), [pod(summary(f"202611{day:02d}T020000Z"))])
        assert result is not None
        status.update(record_result(status, result, 1, NOW))
    again = read_result(job("Complete"), [pod(summary("20261125T020000Z"))])
    assert again is not None
    status.update(record_result(status, again, 1, NOW))
    ids = [b["id"] for b in status["backups"]]
    assert len(ids) == 20 and ids == sorted(ids, reverse=True) and len(set(ids)) == 20
    assert ids[0] == "20261125T020000Z"


def test_failed_job_without_summary_takes_the_job_reason() -> None:
    result = read_result(job("Failed", "BackoffLimitExceeded"), [pod(terminated="Traceback: boom")])
    assert result is not None and (result.phase, result.reason) == ("Failed", "BackoffLimitExceeded")
    patch = record_result({}, result, 1, NOW)
    assert patch["lastBackup"]["phase"] == "Failed"
    assert patch["conditions"][0]["status"] == "False" and patch["conditions"][0]["reason"] == "BackoffLimitExceeded"


def test_image_pull_errors_are_named() -> None:
    result = read_result(job("Failed", "DeadlineExceeded"), [pod(waiting="ImagePullBackOff")])
    assert result is not None and result.reason == "ImagePullBackOff"


def test_failed_summary_error_is_reported() -> None:
    text = summary("20261123T020000Z", phase="Failed", error="connection to db:5432 refused; check the host",
                   reason="DatabaseUnreachable")
    result = read_result(job("Failed", "BackoffLimitExceeded"), [pod(terminated=text)])
    assert result is not None and result.reason == "DatabaseUnreachable"
    assert "connection to db:5432 refused" in record_result({}, result, 1, NOW)["lastBackup"]["error"]


def test_completed_job_without_summary_is_unknown_and_moves_nothing() -> None:
    status: dict[str, Any] = {}
    earlier = read_result(job("Complete"), [pod(summary("20261122T020000Z"))])
    assert earlier is not None
    status.update(record_result(status, earlier, 1, "2026-11-22T02:05:00Z"))
    last_before, backups_before = dict(status["lastBackup"]), list(status["backups"])

    result = read_result(job("Complete"), [pod(terminated="Killed")])  # no summary: a crash text, or nothing
    assert result is not None and (result.phase, result.reason) == ("Unknown", "NoSummary")
    patch = record_result(status, result, 2, NOW)

    assert "lastBackup" not in patch and "backups" not in patch  # no evidence: lastBackup and the RPO stay
    status.update(patch)
    assert status["lastBackup"] == last_before and status["backups"] == backups_before
    condition = next(c for c in status["conditions"] if c["type"] == "LastBackupSucceeded")
    assert (condition["status"], condition["reason"]) == ("Unknown", "NoSummary")
    assert "orders-backup-123" in condition["message"] and "kubectl logs job/orders-backup-123" in condition["message"]
    reason, message = event_for(result)
    assert reason == "BackupOutcomeUnknown" and "orders-backup-123" in message
    BackupPolicyStatus.model_validate(status)


def test_backups_that_retention_deleted_leave_status() -> None:
    status: dict[str, Any] = {}
    for day in (20, 21, 22):
        result = read_result(job("Complete"), [pod(summary(f"202611{day}T020000Z"))])
        assert result is not None
        status.update(record_result(status, result, 1, NOW))
    assert [b["id"] for b in status["backups"]] == ["20261122T020000Z", "20261121T020000Z", "20261120T020000Z"]

    # keepLast 2: this run's retention deleted 20261121 and 20261120
    kept = ["20261123T020000Z", "20261122T020000Z"]
    result = read_result(job("Complete"), [pod(summary("20261123T020000Z", stored_backups=kept))])
    assert result is not None
    patch = record_result(status, result, 1, NOW)
    assert [b["id"] for b in patch["backups"]] == kept
    BackupPolicyStatus.model_validate({**status, **patch})

    # no list (retention did not finish): status keeps what it had
    result = read_result(job("Complete"), [pod(summary("20261124T020000Z"))])
    assert result is not None
    assert [b["id"] for b in record_result({**status, **patch}, result, 1, NOW)["backups"]] == [
        "20261124T020000Z", *kept]


def test_a_backup_that_needed_storage_retries_says_so_in_its_event_and_condition() -> None:
    result = read_result(job("Complete"), [pod(summary("20261123T020000Z", storage_retries=40))])
    assert result is not None
    reason, message = event_for(result)
    assert reason == "BackupSucceeded" and "40 storage requests were retried" in message
    condition = record_result({}, result, 1, NOW)["conditions"][0]
    assert "40 storage requests were retried" in condition["message"]
    calm = read_result(job("Complete"), [pod(summary("20261123T020000Z"))])
    assert calm is not None and "retried" not in event_for(calm)[1]
