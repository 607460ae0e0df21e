"""Metric values from policy and RestoreRequest bodies (plain dicts, as the watch stream delivers them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pgbackup.api import BackupPolicyStatus
from pgbackup.builders.metrics import POLICY_GAUGES, policy_samples, policy_values, restore_request_samples

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
GIB = 1024 ** 3


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def policy(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "orders", "namespace": "shop"},
                            "spec": {"schedule": "0 2 * * *", **spec}}
    if status is not None:
        BackupPolicyStatus.model_validate(status)  # the fixtures are real statuses, not made-up shapes
        body["status"] = status
    return body


def backup(id: str, size: int, phase: str = "Completed", **extra: Any) -> dict[str, Any]:
    return {"id": id, "phase": phase, "sizeBytes": size, "completedAt": f"{id[:4]}-{id[4:6]}-{id[6:8]}T02:10:00Z",
            **extra}


FULL_STATUS: dict[str, Any] = {
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "2026-11-20T00:00:00Z"},
        {"type": "ObjectivesMet", "status": "False", "reason": "RPOMissed", "message": "",
         "lastTransitionTime": "2026-11-20T00:00:00Z"},
        {"type": "WALArchiving", "status": "True", "reason": "Streaming", "message": "",
         "lastTransitionTime": "2026-11-20T00:00:00Z"},
    ],
    "lastBackup": {"id": "20261123T020000Z", "phase": "Completed", "completedAt": "2026-11-23T02:10:00Z"},
    "backups": [
        backup("20261123T020000Z", 3 * GIB, durationSeconds=600.5, verification={
            "phase": "Failed", "reason": "RowCountMismatch", "restoreSeconds": 90.0,
            "checkedAt": "2026-11-23T03:00:00Z"}),
        backup("20261122T020000Z", 1, phase="Failed"),
        backup("20261121T020000Z", 2 * GIB, durationSeconds=500.0),
        backup("20261120T020000Z", 1 * GIB),
        backup("20261119T020000Z", 1 * GIB),
    ],
    "wal": {"lastArchivedAt": "2026-11-23T11:59:30Z", "lagSeconds": 30.5, "lagBytes": 16777216,
            "slotRetainedBytes": 2 * GIB, "gaps": ["000000010000000A000000F3-000000010000000A000000F5"],
            "spoolBytes": 48 * 1024**2},
    "measured": {"rtoSeconds": 90.0},  # the RPO metric is computed from the backups at scrape time
}


def test_every_value_comes_from_status_or_spec() -> None:
    values = policy_values(policy(FULL_STATUS, objectives={"rpo": "1h", "rto": "30m"},
                                  wal={"enabled": True, "maxSlotRetained": "10Gi"},
                                  jobTemplate={"scratchSizeLimit": "2Gi"}), NOW)
    assert values == {
        "pgbackup_last_backup_success_timestamp_seconds": ts("2026-11-23T02:10:00Z"),
        "pgbackup_last_backup_failure_timestamp_seconds": ts("2026-11-22T02:10:00Z"),
        "pgbackup_last_backup_size_bytes": 3 * GIB,
        "pgbackup_last_backup_duration_seconds": 600.5,
        "pgbackup_backup_schedule_interval_seconds": 86400.0,
        "pgbackup_backups": 5.0,
        "pgbackup_backups_size_bytes": 7 * GIB + 1,
        "pgbackup_backup_size_median_bytes": 1 * GIB,  # of 2, 1, 1 GiB: the Failed attempt does not count
        "pgbackup_last_verification_success": 0.0,
        "pgbackup_last_verification_timestamp_seconds": ts("2026-11-23T03:00:00Z"),
        "pgbackup_last_verification_restore_seconds": 90.0,
        "pgbackup_rpo_seconds": 35400.0,
        "pgbackup_rpo_objective_seconds": 3600.0,
        "pgbackup_rto_seconds": 90.0,
        "pgbackup_rto_objective_seconds": 1800.0,
        "pgbackup_objectives_met": 0.0,
        "pgbackup_wal_lag_seconds": 30.5,
        "pgbackup_wal_lag_bytes": 16777216.0,
        "pgbackup_wal_last_archived_timestamp_seconds": ts("2026-11-23T11:59:30Z"),
        "pgbackup_wal_gaps": 1.0,
        "pgbackup_wal_slot_retained_bytes": 2.0 * GIB,
        "pgbackup_wal_slot_retained_limit_bytes": 10.0 * GIB,
        "pgbackup_wal_archiving_ok": 1.0,
        "pgbackup_wal_spool_bytes": 48.0 * 1024**2,
        "pgbackup_wal_spool_limit_bytes": 2.0 * GIB,
        "pgbackup_policy_ready": 1.0,
    }
    assert set(values) == set(POLICY_GAUGES)  # the fixture exercises every gauge of the contract


def test_a_new_policy_has_only_what_it_knows() -> None:
    assert policy_values(policy(), NOW) == {"pgbackup_backup_schedule_interval_seconds": 86400.0,
                                           "pgbackup_backups": 0.0, "pgbackup_backups_size_bytes": 0.0}


def test_failure_after_success_keeps_the_success_time_and_reports_the_failure() -> None:
    status = {"lastBackup": {"phase": "Failed", "completedAt": "2026-11-23T02:05:00Z", "error": "boom"},
              "backups": [backup("20261122T020000Z", 100)]}
    values = policy_values(policy(status), NOW)
    assert values["pgbackup_last_backup_success_timestamp_seconds"] == ts("2026-11-22T02:10:00Z")
    assert values["pgbackup_last_backup_failure_timestamp_seconds"] == ts("2026-11-23T02:05:00Z")


def test_passed_verification_of_an_older_backup_counts_until_a_newer_one_is_checked() -> None:
    status = {"backups": [
        backup("20261123T020000Z", 100, verification={"phase": "Running"}),
        backup("20261122T020000Z", 100, verification={"phase": "Passed", "restoreSeconds": 12.5,
                                                       "checkedAt": "2026-11-22T03:00:00Z"}),
    ]}
    values = policy_values(policy(status), NOW)
    assert values["pgbackup_last_verification_success"] == 1.0
    assert values["pgbackup_last_verification_restore_seconds"] == 12.5


def test_a_verification_the_image_cannot_run_counts_as_unverified() -> None:
    """NotPossible (no server of the backup's major in the image) must not leave an older pass standing:
    the 'verification failing' alert fires until the image fits."""
    status = {"backups": [
        backup("20261123T020000Z", 100, verification={"phase": "NotPossible", "reason": "ServerBinariesMissing",
                                                       "checkedAt": "2026-11-23T03:00:00Z"}),
        backup("20261122T020000Z", 100, verification={"phase": "Passed", "restoreSeconds": 12.5,
                                                       "checkedAt": "2026-11-22T03:00:00Z"}),
    ]}
    values = policy_values(policy(status), NOW)
    assert values["pgbackup_last_verification_success"] == 0.0
    assert values["pgbackup_last_verification_timestamp_seconds"] == ts("2026-11-23T03:00:00Z")


def test_wal_metrics_are_absent_while_wal_is_off_and_archiving_ok_is_zero_without_condition() -> None:
    assert not any(name.startswith("pgbackup_wal") for name in policy_values(policy({}), NOW))
    values = policy_values(policy({}, wal={"enabled": True}), NOW)
    assert values["pgbackup_wal_archiving_ok"] == 0.0
    assert values["pgbackup_wal_slot_retained_limit_bytes"] == 10 * GIB  # the spec default
    assert values["pgbackup_wal_spool_limit_bytes"] == 10 * GIB  # jobTemplate.scratchSizeLimit's default


def test_schedule_interval_in_the_policys_time_zone() -> None:
    hourly = policy_values(policy(schedule="*/15 * * * *"), NOW)
    weekly = policy_values(policy(schedule="0 3 * * 0", timeZone="Europe/Berlin"), NOW)
    assert hourly["pgbackup_backup_schedule_interval_seconds"] == 900.0
    assert weekly["pgbackup_backup_schedule_interval_seconds"] == 7 * 86400.0


def test_samples_are_labelled_by_namespace_and_policy() -> None:
    samples = policy_samples([policy()], NOW)
    assert {tuple(sorted(s.labels.items())) for s in samples} == {(("namespace", "shop"), ("policy", "orders"))}


def test_restore_requests_are_counted_per_namespace_and_phase() -> None:
    def request(namespace: str, phase: str | None) -> dict[str, Any]:
        return {"metadata": {"namespace": namespace, "name": "r"}, **({"status": {"phase": phase}} if phase else {})}

    samples = restore_request_samples([request("shop", "Running"), request("shop", "Succeeded"),
                                       request("shop", "Succeeded"), request("crm", None)])
    assert {(s.labels["namespace"], s.labels["phase"], s.value) for s in samples} == {
        ("shop", "Running", 1.0), ("shop", "Succeeded", 2.0), ("crm", "Pending", 1.0)}
