"""When status is behind storage, and what a catalog summary changes in it (builders/catalog_sync.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pgbackup.api import JobSummary
from pgbackup.builders.catalog_sync import catalog_sync_job_name, missed_run, record_catalog


def cron(scheduled: str | None, succeeded: str | None) -> dict[str, Any]:
    status = {key: value for key, value in (("lastScheduleTime", scheduled), ("lastSuccessfulTime", succeeded))
              if value}
    return {"status": status}


@pytest.mark.parametrize(("last_backup", "cronjob", "expected"), [
    ({}, cron("2026-11-23T02:00:00Z", "2026-11-23T02:03:00Z"), "2026-11-23T02:00:00Z"),
    ({"completedAt": "2026-11-22T02:03:00Z"}, cron("2026-11-23T02:00:00Z", "2026-11-23T02:03:00Z"),
     "2026-11-23T02:00:00Z"),
    ({"completedAt": "2026-11-23T02:02:00Z"}, cron("2026-11-23T02:00:00Z", "2026-11-23T02:03:00Z"), None),
    ({}, cron("2026-11-23T02:00:00Z", "2026-11-22T02:03:00Z"), None),  # running, or its last run failed
    ({}, cron(None, None), None),  # never ran
])
def test_status_is_behind_only_after_a_successful_run_it_does_not_show(
        last_backup: dict[str, Any], cronjob: dict[str, Any], expected: str | None) -> None:
    assert missed_run({"lastBackup": last_backup} if last_backup else {}, cronjob) == expected


def test_sync_job_names_are_per_run_and_valid() -> None:
    name = catalog_sync_job_name("a" * 80, "2026-11-23T02:00:00Z")
    assert len(name) <= 63 and name == catalog_sync_job_name("a" * 80, "2026-11-23T02:00:00Z")
    assert name != catalog_sync_job_name("a" * 80, "2026-11-24T02:00:00Z")


def test_storage_older_than_status_only_prunes_backups() -> None:
    status = {"lastBackup": {"phase": "Failed", "completedAt": "2026-11-24T02:05:00Z", "jobName": "j"},
              "backups": [{"id": "20261123T020000Z"}, {"id": "20261120T020000Z"}]}
    summary = JobSummary(kind="catalog", phase="Completed", backup_id="20261123T020000Z",
                         completed_at="2026-11-23T02:03:00Z", stored_backups=["20261123T020000Z"])
    patch, message = record_catalog(status, summary, "sync", 1, "2026-11-24T03:00:00Z")
    assert message is None and "lastBackup" not in patch and "conditions" not in patch
    assert patch["backups"] == [{"id": "20261123T020000Z"}]


def test_a_backup_found_in_storage_keeps_its_type() -> None:
    summary = JobSummary(kind="catalog", phase="Completed", backup_id="20261124T020000Z", method="physical",
                         backup_type="incr", incremental_of="20261123T020000Z", completed_at="2026-11-24T02:03:00Z",
                         stored_backups=["20261124T020000Z", "20261123T020000Z"])
    patch, _ = record_catalog({}, summary, "sync", 1, "2026-11-24T03:00:00Z")
    assert patch["backups"][0]["backupType"] == "incr"
    assert patch["backups"][0]["incrementalOf"] == "20261123T020000Z"
