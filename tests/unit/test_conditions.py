"""Conditions keep lastTransitionTime unless their status changes; Ready sums up the checks."""

from __future__ import annotations

from pgbackup.builders.conditions import Check, find_condition, set_condition, summarise_ready

T1, T2, T3 = "2026-11-23T10:00:00Z", "2026-11-23T11:00:00Z", "2026-11-23T12:00:00Z"


def test_new_condition_gets_the_current_time() -> None:
    conditions = set_condition([], "Ready", "False", "SecretNotFound", "missing", 1, T1)
    assert conditions == [{"type": "Ready", "status": "False", "reason": "SecretNotFound", "message": "missing",
                           "lastTransitionTime": T1, "observedGeneration": 1}]


def test_transition_time_is_kept_while_status_stays() -> None:
    conditions = set_condition([], "Ready", "False", "SecretNotFound", "missing a", 1, T1)
    conditions = set_condition(conditions, "Ready", "False", "SecretKeyMissing", "missing key", 2, T2)
    ready = find_condition(conditions, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == T1
    assert ready["reason"] == "SecretKeyMissing" and ready["observedGeneration"] == 2
    conditions = set_condition(conditions, "Ready", "True", "Reconciled", "ok", 2, T3)
    assert find_condition(conditions, "Ready")["lastTransitionTime"] == T3  # type: ignore[index]


def test_other_conditions_and_order_are_kept() -> None:
    conditions = set_condition([], "Ready", "True", "Reconciled", "", 1, T1)
    conditions = set_condition(conditions, "LastBackupSucceeded", "True", "BackupSucceeded", "", 1, T1)
    conditions = set_condition(conditions, "Ready", "False", "InvalidSpec", "bad", 2, T2)
    assert [c["type"] for c in conditions] == ["Ready", "LastBackupSucceeded"]
    assert conditions[1]["lastTransitionTime"] == T1


def test_ready_summarises_failing_checks() -> None:
    assert summarise_ready([Check(True, "A", "a")], "Reconciled", "fine") == ("True", "Reconciled", "fine")
    status, reason, message = summarise_ready(
        [Check(True, "A", "a"), Check(False, "SecretNotFound", "no s1"), Check(False, "SecretKeyMissing", "no k")],
        "Reconciled", "fine")
    assert (status, reason) == ("False", "SecretNotFound")
    assert "no s1" in message and "no k" in message
