"""Prometheus samples from BackupPolicy and RestoreRequest bodies (pure: plain dicts in, samples out).

Every value comes from status (or spec), so an operator restart rebuilds the same numbers from the watch
stream. A metric whose source field is missing is left out rather than reported as zero.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from pgbackup.api.base import parse_duration, parse_timestamp
from pgbackup.builders.conditions import READY, find_condition
from pgbackup.builders.objectives import OBJECTIVES_MET, rpo_seconds
from pgbackup.builders.size_anomaly import previous_median
from pgbackup.builders.wal_state import WAL_ARCHIVING, parse_size

POLICY_LABELS = ("namespace", "policy")

# name -> help text, in exposition order; every one is a gauge labelled {namespace, policy}.
POLICY_GAUGES: dict[str, str] = {
    "pgbackup_last_backup_success_timestamp_seconds": "completedAt of the newest Completed backup (Unix seconds)",
    "pgbackup_last_backup_failure_timestamp_seconds": "completedAt of the newest Failed backup attempt (Unix seconds)",
    "pgbackup_last_backup_size_bytes": "Stored size of the newest Completed backup",
    "pgbackup_last_backup_duration_seconds": "Wall time of the newest Completed backup",
    "pgbackup_backup_schedule_interval_seconds": "Seconds between two runs of spec.schedule",
    "pgbackup_backups": "Backups listed in status.backups (the newest 20 at most)",
    "pgbackup_backups_size_bytes": "Sum of the sizes of the backups in status.backups",
    "pgbackup_backup_size_median_bytes": "Median size of the last 7 Completed backups before the newest",
    "pgbackup_last_verification_success": "1 when the newest verification passed, 0 when it failed or was not possible",
    "pgbackup_last_verification_timestamp_seconds": "When the newest verification finished (Unix seconds)",
    "pgbackup_last_verification_restore_seconds": "How long the newest verification restore took",
    "pgbackup_rpo_seconds": "Measured recovery point objective (age of the newest verified recovery point)",
    "pgbackup_rpo_objective_seconds": "spec.objectives.rpo in seconds",
    "pgbackup_rto_seconds": "Measured recovery time (duration of the latest verification restore)",
    "pgbackup_rto_objective_seconds": "spec.objectives.rto in seconds",
    "pgbackup_objectives_met": "1 when condition ObjectivesMet is True, else 0",
    "pgbackup_wal_lag_seconds": "Seconds of WAL not yet archived",
    "pgbackup_wal_lag_bytes": "Bytes of WAL not yet archived",
    "pgbackup_wal_last_archived_timestamp_seconds": "When the newest WAL segment was archived (Unix seconds)",
    "pgbackup_wal_gaps": "Missing WAL segment ranges in the archive",
    "pgbackup_wal_slot_retained_bytes": "WAL the replication slot holds back on the database server",
    "pgbackup_wal_slot_retained_limit_bytes": "spec.wal.maxSlotRetained in bytes",
    "pgbackup_wal_archiving_ok": "1 when condition WALArchiving is True, else 0",
    "pgbackup_wal_spool_bytes": "WAL in the streamer's local spool (received, not yet shipped)",
    "pgbackup_wal_spool_limit_bytes": "The spool's size limit: spec.jobTemplate.scratchSizeLimit in bytes",
    "pgbackup_policy_ready": "1 when condition Ready is True, else 0",
}
RESTORE_REQUESTS = "pgbackup_restore_requests"
RESTORE_REQUESTS_HELP = "RestoreRequests per phase"
RESTORE_LABELS = ("namespace", "phase")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str] = field(hash=False)
    value: float


def _timestamp(value: Any) -> float | None:
    parsed = parse_timestamp(value)
    return parsed.timestamp() if parsed is not None else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _condition_flag(status: Mapping[str, Any], type: str) -> float | None:
    condition = find_condition(list(status.get("conditions") or []), type)
    return None if condition is None else float(condition.get("status") == "True")


def _seconds(duration: Any) -> float | None:
    try:
        return parse_duration(str(duration)).total_seconds() if duration else None
    except ValueError:
        return None


def schedule_interval(schedule: Any, time_zone: Any, now: datetime) -> float | None:
    """Seconds between the next two runs of a cron schedule (None when it does not parse)."""
    if not schedule:
        return None
    try:
        zone = ZoneInfo(str(time_zone or "Etc/UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("Etc/UTC")
    try:
        runs = croniter(str(schedule), now.astimezone(zone))
        first, second = runs.get_next(datetime), runs.get_next(datetime)
    except (ValueError, KeyError):
        return None
    return float((second - first).total_seconds())


def _newest(records: list[dict[str, Any]], phase: str) -> dict[str, Any] | None:
    matching = [r for r in records if r.get("phase", "Completed") == phase]
    return max(matching, key=lambda r: str(r.get("id") or ""), default=None)


def _failure_time(status: Mapping[str, Any], records: list[dict[str, Any]]) -> float | None:
    times = [_timestamp(r.get("completedAt")) for r in records if r.get("phase") == "Failed"]
    last = status.get("lastBackup") or {}
    if last.get("phase") == "Failed":
        times.append(_timestamp(last.get("completedAt")))
    return max((t for t in times if t is not None), default=None)


def _newest_verification(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    for record in sorted(records, key=lambda r: str(r.get("id") or ""), reverse=True):
        verification = record.get("verification") or {}
        if verification.get("phase") in ("Passed", "Failed", "NotPossible"):  # NotPossible: unverified, 0
            return dict(verification)
    return None


def policy_values(policy: Mapping[str, Any], now: datetime) -> dict[str, float]:
    """Metric name -> value for one policy; names whose source is missing are absent."""
    spec: Mapping[str, Any] = policy.get("spec") or {}
    status: Mapping[str, Any] = policy.get("status") or {}
    records = [dict(r) for r in status.get("backups") or []]
    newest = _newest(records, "Completed")
    verification = _newest_verification(records)
    measured: Mapping[str, Any] = status.get("measured") or {}
    objectives: Mapping[str, Any] = spec.get("objectives") or {}
    wal_spec: Mapping[str, Any] = spec.get("wal") or {}
    wal: Mapping[str, Any] = status.get("wal") or {}
    wal_on = bool(wal_spec.get("enabled"))
    last = status.get("lastBackup") or {}
    success_time = _timestamp((newest or {}).get("completedAt"))
    if success_time is None and last.get("phase") == "Completed":
        success_time = _timestamp(last.get("completedAt"))  # a backup without an id is not in status.backups

    values: dict[str, float | None] = {
        "pgbackup_last_backup_success_timestamp_seconds": success_time,
        "pgbackup_last_backup_failure_timestamp_seconds": _failure_time(status, records),
        "pgbackup_last_backup_size_bytes": _number((newest or {}).get("sizeBytes")),
        "pgbackup_last_backup_duration_seconds": _number((newest or {}).get("durationSeconds")),
        "pgbackup_backup_schedule_interval_seconds": schedule_interval(spec.get("schedule"), spec.get("timeZone"), now),
        "pgbackup_backups": float(len(records)),
        "pgbackup_backups_size_bytes": float(sum(_number(r.get("sizeBytes")) or 0 for r in records)),
        "pgbackup_backup_size_median_bytes": previous_median(status),
        "pgbackup_last_verification_success": (None if verification is None
                                               else float(verification.get("phase") == "Passed")),
        "pgbackup_last_verification_timestamp_seconds": _timestamp((verification or {}).get("checkedAt")),
        "pgbackup_last_verification_restore_seconds": _number((verification or {}).get("restoreSeconds")),
        "pgbackup_rpo_seconds": rpo_seconds(spec, status, now),  # at scrape time: status holds the point
        "pgbackup_rpo_objective_seconds": _seconds(objectives.get("rpo")),
        "pgbackup_rto_seconds": _number(measured.get("rtoSeconds")),
        "pgbackup_rto_objective_seconds": _seconds(objectives.get("rto")),
        "pgbackup_objectives_met": _condition_flag(status, OBJECTIVES_MET),
        "pgbackup_wal_lag_seconds": _number(wal.get("lagSeconds")),
        "pgbackup_wal_lag_bytes": _number(wal.get("lagBytes")),
        "pgbackup_wal_last_archived_timestamp_seconds": _timestamp(wal.get("lastArchivedAt")),
        "pgbackup_wal_gaps": float(len(wal.get("gaps") or [])) if status.get("wal") is not None else None,
        "pgbackup_wal_slot_retained_bytes": _number(wal.get("slotRetainedBytes")),
        "pgbackup_wal_slot_retained_limit_bytes": _slot_limit(wal_spec) if wal_on else None,
        "pgbackup_wal_archiving_ok": (_condition_flag(status, WAL_ARCHIVING) or 0.0) if wal_on else None,
        "pgbackup_wal_spool_bytes": _number(wal.get("spoolBytes")),
        "pgbackup_wal_spool_limit_bytes": _spool_limit(spec) if wal_on else None,
        "pgbackup_policy_ready": _condition_flag(status, READY),
    }
    return {name: value for name, value in values.items() if value is not None}


def _spool_limit(spec: Mapping[str, Any]) -> float | None:
    try:
        return float(parse_size(str((spec.get("jobTemplate") or {}).get("scratchSizeLimit") or "10Gi")))
    except ValueError:
        return None


def _slot_limit(wal_spec: Mapping[str, Any]) -> float | None:
    try:
        return float(parse_size(str(wal_spec.get("maxSlotRetained") or "10Gi")))
    except ValueError:
        return None


def policy_samples(policies: Iterable[Mapping[str, Any]], now: datetime) -> list[Sample]:
    samples: list[Sample] = []
    for policy in policies:
        meta = policy.get("metadata") or {}
        labels = {"namespace": str(meta.get("namespace") or ""), "policy": str(meta.get("name") or "")}
        samples += [Sample(name, labels, value) for name, value in policy_values(policy, now).items()]
    return samples


def restore_request_samples(requests: Iterable[Mapping[str, Any]]) -> list[Sample]:
    """Count of RestoreRequests per namespace and phase (a request without status is Pending)."""
    counts = Counter(
        (str((r.get("metadata") or {}).get("namespace") or ""), str((r.get("status") or {}).get("phase") or "Pending"))
        for r in requests
    )
    return [Sample(RESTORE_REQUESTS, {"namespace": ns, "phase": phase}, float(count))
            for (ns, phase), count in sorted(counts.items())]
