"""What `kubectl pgbackup` shows for given policy and restore objects (plain wire dicts, as the API returns them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pgbackup.api import BackupPolicyStatus, RestoreRequestStatus
from pgbackup.plugin import render

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def ready(status: str = "True", message: str = "backups run and are verified") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": "Ready" if status == "True" else "BackupFailed",
            "message": message}


def healthy_policy(name: str = "orders", **spec: Any) -> dict[str, Any]:
    status = {
        "observedGeneration": 1,
        "conditions": [ready()],
        "lastBackup": {"id": "20261123T020000Z", "phase": "Completed", "completedAt": "2026-11-23T02:05:00Z",
                       "sizeBytes": 3 * 1024 * 1024, "size": "3.0 MiB", "verified": True,
                       "jobName": "orders-backup-29000000"},
        "backups": [
            {"id": "20261123T020000Z", "method": "logical", "phase": "Completed",
             "completedAt": "2026-11-23T02:05:00Z", "sizeBytes": 3 * 1024 * 1024,
             "verification": {"phase": "Passed", "reason": "RestoreVerified", "restoreSeconds": 40}},
            {"id": "20261122T020000Z", "method": "logical", "phase": "Completed",
             "completedAt": "2026-11-22T02:04:00Z", "sizeBytes": 2048,
             "verification": {"phase": "Failed", "reason": "RowCountMismatch"}},
        ],
        "measured": {"recoveryPoint": "2026-11-23T02:05:00Z", "rtoSeconds": 40},
        "wal": {"lagSeconds": 12.0, "lagBytes": 4096},
    }
    BackupPolicyStatus.model_validate(status)  # the samples are what the operator can write
    return {"metadata": {"name": name, "namespace": "shop", "generation": 1},
            "spec": {"objectives": {"rpo": "24h", "rto": "30m"}, "wal": {"enabled": True}, **spec},
            "status": status}


def test_status_row_shows_last_backup_age_size_verification_and_objectives() -> None:
    row = render.policy_row(healthy_policy(), NOW)
    assert row["lastBackup"] == "20261123T020000Z"
    assert row["age"] == "9h55m"
    assert row["size"] == "3.0 MiB"
    assert row["verified"] == "passed"
    assert row["ready"] == "True"
    assert row["rpo"] == "9h55m/24h" and row["rto"] == "40s/30m"  # the RPO: the recovery point's age now
    assert row["walLag"] == "12s"
    assert row["problems"] == []


def test_status_screen_is_a_table_with_one_line_per_policy() -> None:
    text = render.status_screen([healthy_policy("orders"), healthy_policy("billing")], NOW)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["NAME", "READY", "LAST"]
    assert [line.split()[0] for line in lines[1:]] == ["orders", "billing"]
    assert "Needs attention" not in text


def test_all_namespaces_adds_the_namespace_column() -> None:
    text = render.status_screen([healthy_policy()], NOW, all_namespaces=True)
    assert text.splitlines()[0].startswith("NAMESPACE")
    assert text.splitlines()[1].split()[:2] == ["shop", "orders"]


def test_a_policy_that_is_not_ready_is_listed_with_the_reason() -> None:
    policy = healthy_policy()
    policy["status"]["conditions"] = [ready("False", "the last backup failed: connection refused")]
    policy["status"]["lastBackup"] = {"phase": "Failed", "error": "connection refused"}
    row = render.policy_row(policy, NOW)
    assert row["lastBackup"] == "(Failed)"
    assert row["problems"] == ["orders: not Ready: the last backup failed: connection refused"]
    assert "Needs attention:\n  - orders: not Ready" in render.status_screen([policy], NOW)


def test_missed_objectives_come_from_the_condition() -> None:
    policy = healthy_policy()
    policy["status"]["conditions"].append({"type": "ObjectivesMet", "status": "False", "reason": "RPOMissed",
                                           "message": "RPO 30h exceeds 24h"})
    assert render.policy_row(policy, NOW)["problems"] == ["orders: RPO 30h exceeds 24h"]


def test_missed_objectives_are_computed_when_the_operator_wrote_no_condition() -> None:
    policy = healthy_policy()
    policy["status"]["measured"] = {"rpoSeconds": 30 * 3600, "rtoSeconds": 3600}
    row = render.policy_row(policy, NOW)
    assert row["objectivesMet"] is False
    assert row["problems"] == ["orders: RPO 30h exceeds the objective 24h", "orders: RTO 1h exceeds the objective 30m"]


def test_a_new_policy_without_status_needs_attention_and_shows_dashes() -> None:
    row = render.policy_row({"metadata": {"name": "fresh", "namespace": "shop"}, "spec": {}}, NOW)
    assert (row["lastBackup"], row["age"], row["size"], row["verified"], row["walLag"]) == ("-",) * 5
    assert row["ready"] == "Unknown"
    assert row["problems"] == ["fresh: not reconciled yet (no Ready condition)"]


def test_catalog_lists_backups_newest_first_with_verification() -> None:
    text = render.catalog(healthy_policy())
    header, first, second = text.splitlines()
    assert header.split() == ["ID", "METHOD", "TYPE", "PHASE", "COMPLETED", "SIZE", "VERIFICATION"]
    assert first.split() == ["20261123T020000Z", "logical", "-", "Completed", "2026-11-23T02:05:00Z", "3.0", "MiB",
                             "Passed"]  # a status written before backupType was recorded: no type
    assert second.split()[0] == "20261122T020000Z" and second.endswith("Failed (RowCountMismatch)")


def test_verified_tells_passed_from_failed_from_not_yet() -> None:
    def shown(**last: Any) -> tuple[str, str]:
        policy = healthy_policy()
        policy["status"]["lastBackup"] = {"id": "20261123T020000Z", "phase": "Completed", **last}
        status_line = render.status_screen([policy], NOW).splitlines()[1]
        return render.policy_row(policy, NOW)["verified"], status_line

    for last, expected in (({"verified": True}, "passed"), ({"verified": False}, "failed"), ({}, "not yet")):
        value, line = shown(**last)
        assert value == expected and f"   {expected}   " in line
        assert f"  Verified: {expected}" in render.last_backup({"phase": "Completed", **last})
    failed_backup = {"phase": "Failed", "error": "disk full"}
    assert shown(**failed_backup)[0] == "-" and "Verified" not in render.last_backup(failed_backup)

    policy = healthy_policy()
    policy["status"]["backups"][0].pop("verification")
    assert render.catalog(policy).splitlines()[1].endswith("   not yet")


def test_empty_catalog_says_so() -> None:
    assert "no backups" in render.catalog({"metadata": {"name": "orders"}, "status": {}})


def test_last_backup_shows_error_of_a_failed_backup() -> None:
    text = render.last_backup({"phase": "Failed", "jobName": "orders-backup-now-1", "error": "disk full"})
    assert text.splitlines()[0] == "Backup (no id): Failed"
    assert "  Error: disk full" in text and "  Job: orders-backup-now-1" in text


def test_restore_plan_and_outcome() -> None:
    status = {"phase": "Succeeded",
              "plan": {"backup": "20261123T020000Z", "target": "db.shop.svc:5432/orders_copy",
                       "steps": ["download and decrypt", "pg_restore into orders_copy"]},
              "result": {"restoreSeconds": 75, "rowCounts": {"public.orders": 3, "public.customers": 12},
                         "checks": [{"name": "has-orders", "passed": True},
                                    {"name": "rowcount:orders.public.orders", "passed": False,
                                     "message": "3 rows, expected 4"}]}}
    RestoreRequestStatus.model_validate(status)
    plan = render.restore_plan(status["plan"])
    assert "  Backup: 20261123T020000Z" in plan
    assert "    1. download and decrypt\n    2. pg_restore into orders_copy" in plan
    outcome = render.restore_outcome({"metadata": {"name": "orders-restore-x1"}, "status": status})
    assert outcome.splitlines()[0] == "RestoreRequest orders-restore-x1: Succeeded"
    assert "  Duration: 1m15s" in outcome
    assert "    public.customers  12\n    public.orders     3" in outcome
    assert "    PASS  has-orders" in outcome
    assert "    FAIL  rowcount:orders.public.orders: 3 rows, expected 4" in outcome


def test_failed_restore_outcome_has_the_error() -> None:
    outcome = render.restore_outcome({"metadata": {"name": "r"}, "status": {"phase": "Failed", "error": "no backup"}})
    assert outcome == "RestoreRequest r: Failed\n  Error: no backup"


def test_ages_of_times_without_zone_are_read_as_utc_and_future_times_as_zero() -> None:
    assert render.age("2026-11-23T11:30:00", NOW) == "30m"
    assert render.age("2026-11-23T12:00:05Z", NOW) == "0s"
    assert render.age(None, NOW) == "-"
