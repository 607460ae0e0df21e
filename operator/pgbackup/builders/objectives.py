"""Recovery objectives from evidence: RPO = age of the newest verified recovery point, RTO = duration of the
latest verification restore, compared with spec.objectives (pure: plain spec/status dicts and a clock)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgbackup.api.base import parse_duration, parse_timestamp
from pgbackup.api.policy import Objectives
from pgbackup.builders.conditions import Status, find_condition, set_condition

OBJECTIVES_MET = "ObjectivesMet"
# status.measured.rpoSeconds grows every second. It is stored in whole minutes and rewritten only when it moved
# by this much (or the condition changed): a handful of writes an hour per policy instead of one per timer
# tick, while the condition itself is decided from the exact age on every tick.
RPO_WRITE_STEP_SECONDS = 300


@dataclass(frozen=True)
class ObjectivesReport:
    status: Status
    reason: str
    message: str
    rpo_seconds: float | None
    rto_seconds: float | None


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


def evaluate_objectives(spec: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> ObjectivesReport:
    """ObjectivesMet and the measured values for a policy's wire spec and status at `now` (timezone-aware).
    Raises ValueError (pydantic) when spec.objectives is invalid."""
    objectives = Objectives.model_validate(spec.get("objectives") or {})
    verify_enabled = bool((spec.get("verify") or {}).get("enabled"))
    point = _recovery_point(status, verified_only=verify_enabled)
    rpo = max(0.0, (now - point).total_seconds()) if point is not None else None
    rto_value = (status.get("measured") or {}).get("rtoSeconds")
    rto = float(rto_value) if isinstance(rto_value, int | float) else None
    kind = "verified recovery point" if verify_enabled else "recovery point (verification is off: newest successful backup)"
    wal_point = _archived_wal_point(spec, status)
    if wal_point is not None and (point is None or wal_point > point):
        point, kind = wal_point, "recovery point (archived WAL)"
        rpo = max(0.0, (now - point).total_seconds())

    if objectives.rpo is None and objectives.rto is None:
        return ObjectivesReport("True", "NotConfigured",
                                "no objectives set (spec.objectives.rpo / rto); measured values are in status.measured",
                                rpo, rto)
    missed: list[tuple[str, str]] = []
    if objectives.rpo is not None:
        limit = parse_duration(objectives.rpo).total_seconds()
        if rpo is None:
            what = "verified " if verify_enabled else "successful "
            return ObjectivesReport("False", "NoRecoveryPoint",
                                    f"no {what}backup yet, so nothing to recover to; rpo {objectives.rpo} cannot be met "
                                    f"until one {'passes verification' if verify_enabled else 'completes'}",
                                    None, rto)
        if rpo > limit:
            missed.append(("RPOExceeded", f"newest {kind} {human(rpo)} old > rpo {objectives.rpo} "
                                          f"(over by {human(rpo - limit)})"))
    if objectives.rto is not None and rto is not None:
        limit = parse_duration(objectives.rto).total_seconds()
        if rto > limit:
            missed.append(("RTOExceeded", f"latest verification restore took {human(rto)} > rto {objectives.rto} "
                                          f"(over by {human(rto - limit)})"))
    if missed:
        return ObjectivesReport("False", missed[0][0], "; ".join(message for _, message in missed), rpo, rto)
    parts = []
    if objectives.rpo is not None and rpo is not None:
        parts.append(f"newest {kind} {human(rpo)} old <= rpo {objectives.rpo}")
    if objectives.rto is not None:
        parts.append(f"latest verification restore took {human(rto)} <= rto {objectives.rto}" if rto is not None
                     else f"rto {objectives.rto} not measured yet (no verification restore recorded)")
    return ObjectivesReport("True", "ObjectivesMet", "; ".join(parts), rpo, rto)


def objectives_patch(status: Mapping[str, Any], report: ObjectivesReport, generation: int | None,
                     now: str) -> dict[str, Any]:
    """The status fields to write for `report`; empty when nothing a user would care about changed (same
    condition status and reason, same RTO, RPO moved by less than RPO_WRITE_STEP_SECONDS)."""
    conditions = list(status.get("conditions") or [])
    previous = find_condition(conditions, OBJECTIVES_MET)
    measured = dict(status.get("measured") or {})
    rpo = float(int(report.rpo_seconds // 60) * 60) if report.rpo_seconds is not None else None
    stored_rpo = measured.get("rpoSeconds")
    rpo_moved = (rpo is None) != (stored_rpo is None) or (
        rpo is not None and stored_rpo is not None and abs(rpo - float(stored_rpo)) >= RPO_WRITE_STEP_SECONDS)
    condition_changed = previous is None or (previous.get("status"), previous.get("reason")) != (report.status,
                                                                                                report.reason)
    # Without objectives there is nothing to meet: no condition is added (one left from earlier objectives is
    # updated to NotConfigured), the measurements are still kept up to date.
    wants_condition = report.reason != "NotConfigured" or previous is not None
    if not (rpo_moved or (condition_changed and wants_condition)):
        return {}
    patch: dict[str, Any] = {}
    if wants_condition:
        patch["conditions"] = set_condition(conditions, OBJECTIVES_MET, report.status, report.reason, report.message,
                                            generation, now)
    if rpo != stored_rpo and not (rpo is None and "rpoSeconds" not in measured):
        # A merge patch of measured.rpoSeconds only (null removes it): rtoSeconds is the verification handler's.
        patch["measured"] = {"rpoSeconds": rpo}
    return patch


def became_missed(status: Mapping[str, Any], report: ObjectivesReport) -> bool:
    """True on the transition to False only (a notification per incident, not per timer tick)."""
    previous = find_condition(list(status.get("conditions") or []), OBJECTIVES_MET)
    return report.status == "False" and (previous is None or previous.get("status") != "False")
