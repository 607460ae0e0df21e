"""SizeAnomaly from the catalog in status: newest Completed backup vs the median of the ones before it."""

from __future__ import annotations

from typing import Any

import pytest

from pgbackup.builders.size_anomaly import (
    SIZE_ANOMALY,
    evaluate_size,
    size_anomaly_conditions,
    with_size_anomaly,
)

MIB = 1024 * 1024
NOW = "2026-11-23T03:00:00Z"


def status_with(newest: int, *previous: int, failed_between: bool = False) -> dict[str, Any]:
    """status.backups newest first: ids count down from the newest."""
    sizes = [newest, *previous]
    backups: list[dict[str, Any]] = [{"id": f"202611{30 - i:02d}T020000Z", "phase": "Completed", "sizeBytes": size}
                                     for i, size in enumerate(sizes)]
    if failed_between:
        backups.insert(1, {"id": "20261129T120000Z", "phase": "Failed", "sizeBytes": 1})
    return {"backups": backups, "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": ""}]}


def test_jump_names_sizes_ratio_and_window() -> None:
    report = evaluate_size(status_with(int(1.9 * 1024 * MIB), *[800 * MIB] * 7))
    assert report is not None
    assert (report.status, report.reason) == ("True", "SizeJump")
    assert report.message.startswith("newest backup 1.9 GiB is 2.4x the median 800 MiB of the last 7")


def test_drop_is_an_anomaly_too() -> None:
    report = evaluate_size(status_with(100 * MIB, 800 * MIB, 820 * MIB, 790 * MIB))
    assert report is not None and (report.status, report.reason) == ("True", "SizeDrop")
    assert "0.1x the median 800 MiB of the last 3" in report.message


@pytest.mark.parametrize(("newest", "threshold", "expected"), [
    (150, 0.5, "False"),   # exactly +50 %: not more than the threshold
    (151, 0.5, "True"),
    (50, 0.5, "False"),
    (49, 0.5, "True"),
    (130, 0.2, "True"),    # a tighter threshold from PGBACKUP_SIZE_ANOMALY_THRESHOLD
    (130, 0.5, "False"),
])
def test_threshold_is_relative_to_the_median(newest: int, threshold: float, expected: str) -> None:
    report = evaluate_size(status_with(newest * MIB, 100 * MIB, 90 * MIB, 110 * MIB), threshold)
    assert report is not None and report.status == expected
    assert report.reason == ("SizeNormal" if expected == "False" else report.reason)


def test_median_uses_only_the_last_seven_completed_before_the_newest() -> None:
    # Eight earlier backups: the oldest (huge) one is outside the window; a Failed attempt does not count.
    report = evaluate_size(status_with(100 * MIB, *[100 * MIB] * 7, 100_000 * MIB, failed_between=True))
    assert report is not None and report.status == "False" and report.median_bytes == 100 * MIB
    assert "of the last 7" in report.message


def test_fewer_than_three_earlier_backups_means_no_condition() -> None:
    status = status_with(900 * MIB, 100 * MIB, 100 * MIB)
    assert evaluate_size(status) is None
    stale = {**status, "conditions": [*status["conditions"],
                                      {"type": SIZE_ANOMALY, "status": "True", "reason": "SizeJump", "message": ""}]}
    assert [c["type"] for c in size_anomaly_conditions(stale, None, 1, NOW)] == ["Ready"]


def test_event_is_due_only_on_the_transition_to_true_and_ready_is_untouched() -> None:
    before = status_with(100 * MIB, 100 * MIB, 100 * MIB, 100 * MIB)
    recorded = status_with(300 * MIB, 100 * MIB, 100 * MIB, 100 * MIB, 100 * MIB)
    patch, due = with_size_anomaly(before, {"backups": recorded["backups"]}, 3, NOW, 0.5)
    assert due is not None and due.reason == "SizeJump"
    by_type = {c["type"]: c for c in patch["conditions"]}
    assert by_type[SIZE_ANOMALY]["status"] == "True" and by_type[SIZE_ANOMALY]["observedGeneration"] == 3
    assert by_type["Ready"]["status"] == "True"

    again = {**before, "conditions": patch["conditions"]}
    _, due_again = with_size_anomaly(again, {"backups": recorded["backups"]}, 3, NOW, 0.5)
    assert due_again is None  # still anomalous: no second Event


def test_normal_size_sets_false_size_normal() -> None:
    patch, due = with_size_anomaly(status_with(100 * MIB, 100 * MIB, 100 * MIB, 100 * MIB), {}, None, NOW, 0.5)
    condition = next(c for c in patch["conditions"] if c["type"] == SIZE_ANOMALY)
    assert (condition["status"], condition["reason"], due) == ("False", "SizeNormal", None)
