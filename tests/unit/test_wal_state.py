"""The WAL streamer's state -> status.wal, status.recoverability and WALArchiving (plain dicts, no cluster),
and the RPO of ObjectivesMet with WAL archiving on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgbackup.api.policy import BackupPolicyStatus
from pgbackup.api.wal import WalStreamState
from pgbackup.builders.conditions import find_condition
from pgbackup.builders.objectives import evaluate_objectives
from pgbackup.builders.wal_state import (
    STARTUP_GRACE_SECONDS,
    WAL_ARCHIVING,
    WalReport,
    clear_wal_patch,
    evaluate_wal,
    human_bytes,
    parse_size,
    transition,
    wal_patch,
)

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
STAMP = "2026-11-23T12:00:00Z"
SPEC: dict[str, Any] = {"wal": {"enabled": True, "slotName": "orders_slot", "maxSlotRetained": "10Gi"}}
GIB = 1024**3


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def state(**overrides: Any) -> WalStreamState:
    body: dict[str, Any] = {
        "streaming": True, "slotName": "orders_slot", "slotExists": True, "slotRetainedBytes": 50 * 1024**2,
        "lastArchivedSegment": "000000010000000A000000F3", "lastArchivedAt": iso(NOW - timedelta(seconds=20)),
        "lastPartialAt": iso(NOW - timedelta(seconds=3)), "serverLsn": "A/F3001000", "archivedLsn": "A/F3000800",
        "lagBytes": 2048, "lagSeconds": 4.4, "gaps": [], "spoolBytes": 32 * 1024**2,
        "firstRecoverablePoint": iso(NOW - timedelta(days=2)), "lastRecoverablePoint": iso(NOW - timedelta(seconds=3)),
        "timeline": 1, "error": None, "updatedAt": iso(NOW - timedelta(seconds=1)),
    }
    body.update(overrides)
    return WalStreamState.model_validate(body)


def report(current: WalStreamState | None, status: dict[str, Any] | None = None, error: str | None = None,
           spec: dict[str, Any] = SPEC, now: datetime = NOW) -> WalReport:
    return evaluate_wal("orders", "shop", spec, status or {}, current, error, now)


def applied(status: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A merge patch applied as the API server would (nested for wal/recoverability)."""
    result = dict(status)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            merged = {**result[key], **value}
            result[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            result[key] = value
    return result


def write(status: dict[str, Any], made: WalReport, progress_due: bool = True) -> dict[str, Any]:
    return applied(status, wal_patch(SPEC, status, made, 1, STAMP, progress_due))


def test_a_healthy_stream_is_streaming_with_wal_state_and_the_recoverability_window() -> None:
    status = write({}, report(state()))
    condition = find_condition(status["conditions"], WAL_ARCHIVING)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", "Streaming")
    assert "lag 4s" in condition["message"] and "000000010000000A000000F3" in condition["message"]
    assert status["wal"] == {"lastArchivedSegment": "000000010000000A000000F3",
                             "lastArchivedAt": iso(NOW - timedelta(seconds=20)), "lagSeconds": 4.0,
                             "lagBytes": 2048, "slotRetainedBytes": 50 * 1024**2, "gaps": [],
                             "spoolBytes": 32 * 1024**2}
    assert status["recoverability"] == {"firstPoint": iso(NOW - timedelta(days=2)),
                                        "lastPoint": iso(NOW - timedelta(seconds=3))}
    BackupPolicyStatus.model_validate(status)  # what the CRD schema accepts


def test_lag_above_the_threshold_is_lagging_with_the_lag_in_the_message() -> None:
    made = report(state(lagSeconds=185, lagBytes=300 * 1024**2))
    assert (made.status, made.reason) == ("False", "Lagging")
    assert "3m" in made.message and "300 MiB" in made.message and "more than 1m" in made.message
    lower = evaluate_wal("orders", "shop", SPEC, {}, state(lagSeconds=185), None, NOW, lag_threshold_seconds=600)
    assert lower.reason == "Streaming"


def test_a_gap_names_the_missing_range_and_says_the_window_ends_before_it() -> None:
    gap = "000000010000000A000000F5-000000010000000A000000F7"
    before = NOW - timedelta(hours=1)
    status = write({}, report(state(gaps=[gap], lastRecoverablePoint=iso(before))))
    condition = find_condition(status["conditions"], WAL_ARCHIVING)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", "Gap")
    assert gap in condition["message"]
    assert f"recoverability window ends before it (last restorable point {iso(before)})" in condition["message"]
    assert "physical base backup" in condition["message"]
    assert status["wal"]["gaps"] == [gap]
    assert status["recoverability"]["lastPoint"] == iso(before)


def test_a_missing_slot_is_slot_missing() -> None:
    made = report(state(slotExists=False, streaming=False, error="replication slot \"orders_slot\" does not exist"))
    assert (made.status, made.reason) == ("False", "SlotMissing")
    assert "replication slot orders_slot does not exist on the database server" in made.message
    assert "REPLICATION" in made.message


def test_a_streamer_that_has_not_found_its_slot_yet_is_starting_even_after_streaming_before() -> None:
    streaming = write({}, report(state()))
    made = report(state(starting=True, streaming=False, slotRetainedBytes=None, archivedLsn=None, lagBytes=None,
                        lagSeconds=None), streaming)  # a restarted streamer pod, before it has created its slot
    assert (made.status, made.reason) == ("Unknown", "Starting")
    assert "replication slot" in made.message and "deployment/orders-wal" in made.message
    assert transition(streaming, made) is None  # no WALArchivingFailed event, no notification
    failing = report(state(starting=True, streaming=False, error="cannot create the slot: permission denied"),
                     streaming)
    assert (failing.status, failing.reason) == ("False", "Failed")
    assert "permission denied" in failing.message


def test_a_new_streamer_that_cannot_create_its_slot_is_starting_with_the_reason_then_failed() -> None:
    first = write({}, report(state(starting=True, streaming=False, error="cannot create the slot: permission denied")))
    condition = find_condition(first["conditions"], WAL_ARCHIVING)
    assert condition is not None and (condition["status"], condition["reason"]) == ("Unknown", "Starting")
    assert "permission denied" in condition["message"]
    later = report(state(starting=True, streaming=False, error="cannot create the slot: permission denied"), first,
                   now=NOW + timedelta(seconds=STARTUP_GRACE_SECONDS + 1))
    assert (later.status, later.reason) == ("False", "Failed") and "permission denied" in later.message


def test_an_error_reported_by_the_streamer_is_failed_and_names_the_deployment() -> None:
    made = report(state(streaming=False, error="upload of 000000010000000A000000F4 to s3://backups failed: 403"))
    assert (made.status, made.reason) == ("False", "Failed")
    assert "403" in made.message and "deployment/orders-wal" in made.message and "-n shop" in made.message


def test_a_stale_state_is_failed() -> None:
    made = report(state(updatedAt=iso(NOW - timedelta(minutes=20))))
    assert (made.status, made.reason) == ("False", "Failed")
    assert "last refreshed" in made.message


def test_an_unreachable_streamer_is_starting_at_first_then_failed_and_keeps_the_last_state() -> None:
    refused = "GET http://orders-wal.shop.svc:8081/status failed: [Errno 111] Connection refused"
    first = report(None, error=refused)
    assert (first.status, first.reason, first.reachable) == ("Unknown", "Starting", False)
    starting = write({}, first)
    still = report(None, starting, error=refused, now=NOW + timedelta(seconds=STARTUP_GRACE_SECONDS - 10))
    assert still.reason == "Starting"
    late = report(None, starting, error=refused, now=NOW + timedelta(seconds=STARTUP_GRACE_SECONDS + 10))
    assert (late.status, late.reason) == ("False", "Failed")

    streaming = write({}, report(state()))
    down = report(None, streaming, error=refused)
    assert (down.status, down.reason) == ("False", "Failed")  # was streaming: no grace
    assert "Connection refused" in down.message and "Deployment shop/orders-wal" in down.message
    after = write(streaming, down)
    assert after["wal"] == streaming["wal"] and after["recoverability"] == streaming["recoverability"]


def test_a_slot_holding_back_more_than_max_slot_retained_warns_whatever_the_reason() -> None:
    made = report(state(slotRetainedBytes=12 * GIB))
    assert (made.status, made.reason) == ("True", "Streaming")
    assert ("replication slot orders_slot holds back 12 GiB on the server (maxSlotRetained 10Gi): a stuck archiver "
            "fills the database server's disk") in made.message
    lagging = report(state(slotRetainedBytes=12 * GIB, lagSeconds=3600))
    assert lagging.reason == "Lagging" and "holds back 12 GiB" in lagging.message
    assert "holds back" not in report(state(slotRetainedBytes=9 * GIB)).message


def test_the_warning_is_written_at_once_even_when_progress_is_not_due() -> None:
    status = write({}, report(state()))
    patch = wal_patch(SPEC, status, report(state(slotRetainedBytes=12 * GIB)), 1, STAMP, progress_due=False)
    assert "holds back 12 GiB" in find_condition(patch["conditions"], WAL_ARCHIVING)["message"]


def test_an_unchanged_state_writes_nothing_and_progress_waits_until_due() -> None:
    status = write({}, report(state()))
    assert wal_patch(SPEC, status, report(state(updatedAt=iso(NOW))), 1, STAMP, progress_due=True) == {}
    moved = report(state(lagSeconds=7.2, lastRecoverablePoint=iso(NOW)))
    assert wal_patch(SPEC, status, moved, 1, STAMP, progress_due=False) == {}
    patch = wal_patch(SPEC, status, moved, 1, STAMP, progress_due=True)
    assert patch["wal"]["lagSeconds"] == 7.0 and patch["recoverability"]["lastPoint"] == iso(NOW)
    # A new reason or a gap is written on the tick it appears.
    assert wal_patch(SPEC, status, report(state(gaps=["000000010000000A000000F5"])), 1, STAMP, progress_due=False)


def test_fields_the_streamer_no_longer_reports_are_removed() -> None:
    status = write({}, report(state()))
    patch = wal_patch(SPEC, status, report(state(lagSeconds=None, firstRecoverablePoint=None,
                                                 lastRecoverablePoint=None)), 1, STAMP, progress_due=True)
    assert patch["wal"]["lagSeconds"] is None
    assert patch["recoverability"] is None


def test_transitions_give_events_and_a_notification_only_on_the_way_to_false() -> None:
    streaming = write({}, report(state()))
    assert transition({}, report(state())) == ("WALArchivingStarted", False)
    assert transition(streaming, report(state())) is None
    gap = report(state(gaps=["000000010000000A000000F5"]))
    assert transition(streaming, gap) == ("WALArchivingGap", True)
    gapped = write(streaming, gap)
    assert transition(gapped, report(state(streaming=False, error="boom"))) == ("WALArchivingFailed", False)
    assert transition(streaming, report(state(lagSeconds=999))) == ("WALArchivingLagging", True)
    assert transition({}, report(None, error="refused")) is None  # Starting: nothing to tell yet


def test_turning_wal_off_removes_the_condition_and_the_wal_state() -> None:
    status = write({"conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"}]}, report(state()))
    patch = clear_wal_patch(status)
    assert [c["type"] for c in patch["conditions"]] == ["Ready"]
    assert patch["wal"] is None and patch["recoverability"] is None
    assert clear_wal_patch(applied(status, patch)) == {}


def test_a_streamer_without_base_backup_says_no_point_in_time_can_be_restored_yet() -> None:
    made = report(state(firstRecoverablePoint=None, lastRecoverablePoint=None))
    assert made.reason == "Streaming" and "no physical base backup yet" in made.message
    assert made.recoverability is None


def test_sizes() -> None:
    assert parse_size("10Gi") == 10 * GIB and parse_size("512") == 512
    assert human_bytes(12 * GIB) == "12 GiB" and human_bytes(300) == "300 B"
    with pytest.raises(ValueError, match="Ki, Mi, Gi or Ti"):
        parse_size("10GB")


def test_rpo_uses_the_last_archived_point_when_wal_archiving_is_on() -> None:
    status = {"backups": [{"id": "20261122T020000Z", "phase": "Completed", "completedAt": iso(NOW - timedelta(hours=34))}],
              "recoverability": {"firstPoint": iso(NOW - timedelta(hours=34)),
                                 "lastPoint": iso(NOW - timedelta(minutes=2))}}
    with_wal = evaluate_objectives({"objectives": {"rpo": "1h"}, "wal": {"enabled": True}}, status, NOW)
    assert (with_wal.status, with_wal.reason) == ("True", "ObjectivesMet")
    assert with_wal.rpo_seconds == 120 and "archived WAL" in with_wal.message
    without = evaluate_objectives({"objectives": {"rpo": "1h"}, "wal": {"enabled": False}}, status, NOW)
    assert without.reason == "RPOExceeded"


def test_times_without_a_zone_are_read_as_utc() -> None:
    made = report(state(updatedAt="2026-11-23T11:59:59", lastRecoverablePoint="2026-11-23T11:59:00"))
    assert made.reason == "Streaming"
    assert made.recoverability is not None and made.recoverability["lastPoint"] == "2026-11-23T11:59:00Z"
