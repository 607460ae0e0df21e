"""Recovery objectives from evidence: RPO = age of the newest verified recovery point, RTO = duration of the
latest verification restore, compared with spec.objectives (pure: plain spec/status dicts and a clock)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgbackup.api.base import parse_duration, parse_timestamp
from pgbackup.api.policy import Objectives
from pgbackup.builders.conditions import Status, find_condition, set_condition

OBJECTIVES_MET = "ObjectivesMet"
# The RPO grows every second, so status records where it is measured from (status.measured.recoveryPoint, a
# timestamp) rather than the age itself: status changes only when a new recovery point arrives or the condition
# changes, never because time passed. The age is computed by whoever shows it (metrics, the kubectl plugin).


@dataclass(frozen=True)
class ObjectivesReport:
    status: Status
    reason: str
    message: str
    rpo_seconds: float | None
    rto_seconds: float | None
    recovery_point: datetime | None = None
    """The newest verified (verification off: successful) backup's completion, recorded in
    status.measured.recoveryPoint; the RPO is measured from it or from a newer archived WAL point."""


def human(seconds: float) -> str:
    """26h, 26h5m, 45m, 30s: hours rather than days, as objectives are usually written ('24h')."""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs and minutes < 10 else f"{minutes}m"
    return f"{secs}s"


def _recovery_point(status: Mapping[str, Any], verified_only: bool) -> datetime | None:
    """completedAt of the newest completed (and, when asked, verification-passed) backup in status."""
    points: list[datetime] = []
    for record in status.get("backups") or []:
        if record.get("phase", "Completed") != "Completed":
            continue
        if verified_only and (record.get("verification") or {}).get("phase") != "Passed":
            continue
        if (point := parse_timestamp(record.get("completedAt"))) is not None:
            points.append(point)
    last = status.get("lastBackup") or {}
    if last.get("phase") == "Completed" and (last.get("verified") is True or not verified_only):
        if (point := parse_timestamp(last.get("completedAt"))) is not None:
            points.append(point)
    return max(points, default=None)


def _archived_wal_point(spec: Mapping[str, Any], status: Mapping[str, Any]) -> datetime | None:
    """With WAL archiving on, the newest restorable point in time (status.recoverability.lastPoint, which the WAL
    handler keeps before any gap and leaves as it was while the streamer does not answer)."""
    if not (spec.get("wal") or {}).get("enabled"):
        return None
    return parse_timestamp((status.get("recoverability") or {}).get("lastPoint"))


def recovery_point(spec: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[datetime | None, str]:
    """The newest point the policy can be recovered to, from its wire spec and status (the RPO is its age), and
    what it is: the newest verified backup (verification off: the newest successful one), or the newest archived
    WAL point when WAL archiving is on and that is newer."""
    verify_enabled = bool((spec.get("verify") or {}).get("enabled"))
    point = _recovery_point(status, verified_only=verify_enabled)
    kind = "verified recovery point" if verify_enabled else "recovery point (verification is off: newest successful backup)"
    wal_point = _archived_wal_point(spec, status)
    if wal_point is not None and (point is None or wal_point > point):
        return wal_point, "recovery point (archived WAL)"
    return point, kind


def rpo_seconds(spec: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> float | None:
    """The measured RPO at `now`: the age of recovery_point(), None without one."""
    point, _kind = recovery_point(spec, status)
    return max(0.0, (now - point).total_seconds()) if point is not None else None


def evaluate_objectives(spec: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> ObjectivesReport:
    """ObjectivesMet and the measured values for a policy's wire spec and status at `now` (timezone-aware).
    Raises ValueError (pydantic) when spec.objectives is invalid."""
    objectives = Objectives.model_validate(spec.get("objectives") or {})
    verify_enabled = bool((spec.get("verify") or {}).get("enabled"))
    backup_point = _recovery_point(status, verified_only=verify_enabled)
    point, kind = recovery_point(spec, status)
    rpo = max(0.0, (now - point).total_seconds()) if point is not None else None
    rto_value = (status.get("measured") or {}).get("rtoSeconds")
    rto = float(rto_value) if isinstance(rto_value, int | float) else None

    if objectives.rpo is None and objectives.rto is None:
        return ObjectivesReport("True", "NotConfigured",
                                "no objectives set (spec.objectives.rpo / rto); measured values are in status.measured",
                                rpo, rto, backup_point)
    missed: list[tuple[str, str]] = []
    if objectives.rpo is not None:
        limit = parse_duration(objectives.rpo).total_seconds()
        if rpo is None:
            what = "verified " if verify_enabled else "successful "
            return ObjectivesReport("False", "NoRecoveryPoint",
                                    f"no {what}backup yet, so nothing to recover to; rpo {objectives.rpo} cannot be met "
                                    f"until one {'passes verification' if verify_enabled else 'completes'}",
                                    None, rto, backup_point)
        if rpo > limit:
            missed.append(("RPOExceeded", f"newest {kind} {human(rpo)} old > rpo {objectives.rpo} "
                                          f"(over by {human(rpo - limit)})"))
    if objectives.rto is not None and rto is not None:
        limit = parse_duration(objectives.rto).total_seconds()
        if rto > limit:
            missed.append(("RTOExceeded", f"latest verification restore took {human(rto)} > rto {objectives.rto} "
                                          f"(over by {human(rto - limit)})"))
    if missed:
        return ObjectivesReport("False", missed[0][0], "; ".join(message for _, message in missed), rpo, rto,
                                backup_point)
    parts = []
    if objectives.rpo is not None and rpo is not None:
        parts.append(f"newest {kind} {human(rpo)} old <= rpo {objectives.rpo}")
    if objectives.rto is not None:
        parts.append(f"latest verification restore took {human(rto)} <= rto {objectives.rto}" if rto is not None
                     else f"rto {objectives.rto} not measured yet (no verification restore recorded)")
    return ObjectivesReport("True", "ObjectivesMet", "; ".join(parts), rpo, rto, backup_point)


def objectives_patch(status: Mapping[str, Any], report: ObjectivesReport, generation: int | None,
                     now: str) -> dict[str, Any]:
    """The status fields to write for `report`; empty when nothing a user would care about changed (same
    condition status and reason, same recovery point): time passing alone never causes a write."""
    conditions = list(status.get("conditions") or [])
    previous = find_condition(conditions, OBJECTIVES_MET)
    measured = dict(status.get("measured") or {})
    point = _timestamp(report.recovery_point)
    stored = measured.get("recoveryPoint")
    point_moved = point != stored
    condition_changed = previous is None or (previous.get("status"), previous.get("reason")) != (report.status,
                                                                                                report.reason)
    # Without objectives there is nothing to meet: no condition is added (one left from earlier objectives is
    # updated to NotConfigured), the measurements are still kept up to date.
    wants_condition = report.reason != "NotConfigured" or previous is not None
    patch: dict[str, Any] = {}
    if condition_changed and wants_condition:
        patch["conditions"] = set_condition(conditions, OBJECTIVES_MET, report.status, report.reason, report.message,
                                            generation, now)
    # A merge patch of measured.recoveryPoint only (null removes it): rtoSeconds is the verification handler's.
    if point_moved:
        patch["measured"] = {"recoveryPoint": point}
    if "rpoSeconds" in measured:  # the ever-growing age earlier versions stored: removed once
        patch["measured"] = {**patch.get("measured", {}), "rpoSeconds": None}
    return patch


def _timestamp(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def became_missed(status: Mapping[str, Any], report: ObjectivesReport) -> bool:
    """True on the transition to False only (a notification per incident, not per timer tick)."""
    previous = find_condition(list(status.get("conditions") or []), OBJECTIVES_MET)
    return report.status == "False" and (previous is None or previous.get("status") != "False")
