"""ObjectivesMet and status.measured from a policy's spec and status (plain dicts, a fixed clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgbackup.builders.objectives import (
    became_missed,
    evaluate_objectives,
    human,
    objectives_patch,
    rpo_seconds,
)

NOW = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def backup(id: str, hours_ago: float, verification: str | None = None, phase: str = "Completed") -> dict[str, Any]:
    record: dict[str, Any] = {"id": id, "phase": phase, "completedAt": at(hours_ago)}
    if verification:
        record["verification"] = {"phase": verification}
    return record


def spec(verify: bool = True, **objectives: str) -> dict[str, Any]:
    return {"verify": {"enabled": verify}, "objectives": objectives}


def test_rpo_is_the_age_of_the_newest_verified_backup_not_the_newest_backup() -> None:
    status = {"backups": [backup("b3", 2), backup("b2", 26, "Passed"), backup("b1", 50, "Passed")],
              "measured": {"rtoSeconds": 600}}
    report = evaluate_objectives(spec(rpo="24h", rto="4h"), status, NOW)
    assert (report.status, report.reason) == ("False", "RPOExceeded")
    assert report.rpo_seconds == 26 * 3600 and report.rto_seconds == 600
    assert "newest verified recovery point 26h old > rpo 24h" in report.message
    assert "over by 2h" in report.message


def test_objectives_met_says_so_with_the_numbers() -> None:
    status = {"backups": [backup("b2", 3, "Passed")], "measured": {"rtoSeconds": 512}}
    report = evaluate_objectives(spec(rpo="24h", rto="1h"), status, NOW)
    assert (report.status, report.reason) == ("True", "ObjectivesMet")
    assert "3h old <= rpo 24h" in report.message and "took 8m32s <= rto 1h" in report.message


def test_rto_exceeded_by_the_latest_verification_restore() -> None:
    status = {"backups": [backup("b2", 1, "Passed")], "measured": {"rtoSeconds": 5 * 3600}}
    report = evaluate_objectives(spec(rpo="24h", rto="4h"), status, NOW)
    assert (report.status, report.reason) == ("False", "RTOExceeded")
    assert "latest verification restore took 5h > rto 4h (over by 1h)" in report.message


def test_both_missed_are_both_named_rpo_first() -> None:
    status = {"backups": [backup("b2", 30, "Passed")], "measured": {"rtoSeconds": 5 * 3600}}
    report = evaluate_objectives(spec(rpo="24h", rto="4h"), status, NOW)
    assert report.reason == "RPOExceeded" and "rpo 24h" in report.message and "rto 4h" in report.message


def test_no_verified_backup_is_no_recovery_point() -> None:
    status = {"backups": [backup("b2", 1, "Failed"), backup("b1", 2)],
              "lastBackup": {"id": "b2", "phase": "Completed", "completedAt": at(1), "verified": False}}
    report = evaluate_objectives(spec(rpo="24h"), status, NOW)
    assert (report.status, report.reason, report.rpo_seconds) == ("False", "NoRecoveryPoint", None)
    assert "no verified backup" in report.message


def test_without_verification_the_newest_successful_backup_counts_and_the_message_says_so() -> None:
    status = {"backups": [backup("b3", 1, phase="Failed"), backup("b2", 30)]}
    report = evaluate_objectives(spec(verify=False, rpo="24h"), status, NOW)
    assert (report.status, report.reason, report.rpo_seconds) == ("False", "RPOExceeded", 30 * 3600)
    assert "verification is off" in report.message and "30h old > rpo 24h" in report.message


def test_no_objectives_is_not_configured() -> None:
    report = evaluate_objectives(spec(), {"backups": [backup("b1", 1, "Passed")]}, NOW)
    assert (report.status, report.reason) == ("True", "NotConfigured")
    assert report.rpo_seconds == 3600  # still measured


def test_invalid_objectives_raise() -> None:
    with pytest.raises(ValueError):
        evaluate_objectives(spec(rpo="one day"), {}, NOW)


def test_human_durations() -> None:
    assert [human(s) for s in (30, 300, 3600, 26 * 3600, 26 * 3600 + 5 * 60)] == ["30s", "5m", "1h", "26h", "26h5m"]


def test_patch_is_written_on_change_only() -> None:
    status: dict[str, Any] = {"backups": [backup("b2", 2, "Passed")]}
    report = evaluate_objectives(spec(rpo="24h"), status, NOW)
    patch = objectives_patch(status, report, 3, "2026-11-24T04:00:00Z")
    condition = patch["conditions"][0]
    assert (condition["type"], condition["status"], condition["observedGeneration"]) == ("ObjectivesMet", "True", 3)
    assert patch["measured"] == {"recoveryPoint": at(2)}  # a time: its age is the RPO
    assert report.rpo_seconds == rpo_seconds(spec(rpo="24h"), status, NOW) == 7200

    written = {**status, **patch}
    for later in (timedelta(minutes=1), timedelta(minutes=5), timedelta(hours=21)):  # time alone: nothing to write
        assert objectives_patch(written, evaluate_objectives(spec(rpo="24h"), written, NOW + later), 3, "t") == {}
    newer = {**written, "backups": [backup("b3", 0.5, "Passed"), *written["backups"]]}
    assert objectives_patch(newer, evaluate_objectives(spec(rpo="24h"), newer, NOW), 3, "t") == {
        "measured": {"recoveryPoint": at(0.5)}}


def test_the_age_earlier_versions_stored_is_removed_once() -> None:
    status: dict[str, Any] = {"backups": [backup("b2", 2, "Passed")], "measured": {"rpoSeconds": 60.0,
                                                                                  "rtoSeconds": 30.0}}
    report = evaluate_objectives(spec(), status, NOW)
    assert objectives_patch(status, report, 1, "t") == {"measured": {"recoveryPoint": at(2), "rpoSeconds": None}}


def test_the_condition_flips_at_once_even_when_the_number_barely_moved() -> None:
    status: dict[str, Any] = {"backups": [backup("b2", 24 - 1 / 60, "Passed")]}
    written = {**status, **objectives_patch(status, evaluate_objectives(spec(rpo="24h"), status, NOW), 1, "t0")}
    later = evaluate_objectives(spec(rpo="24h"), written, NOW + timedelta(seconds=120))
    patch = objectives_patch(written, later, 1, "t1")
    assert patch["conditions"][0]["reason"] == "RPOExceeded"
    assert became_missed(written, later) and not became_missed({**written, **patch}, later)


def test_not_configured_adds_no_condition_but_clears_an_old_one() -> None:
    report = evaluate_objectives(spec(), {}, NOW)
    assert objectives_patch({}, report, 1, "t") == {}
    old = {"conditions": [{"type": "ObjectivesMet", "status": "False", "reason": "RPOExceeded", "message": "x",
                           "lastTransitionTime": "t0"}]}
    patch = objectives_patch(old, report, 1, "t")
    assert patch["conditions"][0]["reason"] == "NotConfigured"
