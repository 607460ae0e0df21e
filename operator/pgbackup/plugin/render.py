"""Pure formatting of BackupPolicy and RestoreRequest objects (wire dicts, as the API returns them) for
`kubectl pgbackup`. No I/O: every function takes the objects (and `now`) and returns rows or text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pgbackup.api.base import parse_duration
from pgbackup.builders.durations import duration
from pgbackup.builders.objectives import human, rpo_seconds
from pgbackup.builders.results import human_size

NONE = "-"


def condition(obj: Mapping[str, Any], type: str) -> dict[str, Any] | None:
    """The condition `type` of an object's status, None when it has none."""
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == type:
            return dict(item)
    return None


def condition_status(obj: Mapping[str, Any], type: str) -> str:
    """'True', 'False' or 'Unknown' (also when the condition is missing)."""
    found = condition(obj, type)
    return str(found.get("status", "Unknown")) if found else "Unknown"


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # the API writes UTC


def age(value: Any, now: datetime) -> str:
    """'3h', '26h5m', '-' for no time; times in the future (clock skew) show as '0s'."""
    moment = parse_time(value)
    if moment is None:
        return NONE
    return human(max(0.0, (now - moment).total_seconds()))


def size(value: int | None) -> str:
    return human_size(value) or NONE


def _seconds(value: float | None) -> str:
    return NONE if value is None else human(value)


def _versus(measured: float | None, objective: str | None) -> str:
    """'3h/24h' (measured / objective), '3h' without objective, '-/24h' when nothing was measured."""
    if objective:
        return f"{_seconds(measured)}/{objective}"
    return _seconds(measured)


def objectives_missed(policy: Mapping[str, Any]) -> list[str]:
    """The objectives a policy misses: the operator's ObjectivesMet condition when False, else measured values
    above the spec's objectives (for operators that do not write the condition yet)."""
    found = condition(policy, "ObjectivesMet")
    if found and found.get("status") == "False":
        return [str(found.get("message") or found.get("reason") or "ObjectivesMet is False")]
    objectives = (policy.get("spec") or {}).get("objectives") or {}
    measured = (policy.get("status") or {}).get("measured") or {}
    missed = []
    for key in ("rpo", "rto"):
        limit, value = objectives.get(key), measured.get(f"{key}Seconds")
        if limit and value is not None and value > parse_duration(limit).total_seconds():
            missed.append(f"{key.upper()} {human(value)} exceeds the objective {limit}")
    return missed


def problems(policy: Mapping[str, Any]) -> list[str]:
    """Why a policy needs attention (empty when it is Ready and meets its objectives)."""
    name = (policy.get("metadata") or {}).get("name", "?")
    found = []
    ready = condition(policy, "Ready")
    if ready is None:
        found.append(f"{name}: not reconciled yet (no Ready condition)")
    elif ready.get("status") != "True":
        detail = ready.get("message") or ready.get("reason") or ""
        found.append(f"{name}: not Ready: {detail}".rstrip(": "))
    found.extend(f"{name}: {text}" for text in objectives_missed(policy))
    return found


def _rpo(spec: Mapping[str, Any], status: Mapping[str, Any], now: datetime) -> float | None:
    """The age of the newest recovery point now: status records the point, not its age (earlier operator versions
    stored the age in measured.rpoSeconds, read when there is no point)."""
    measured = rpo_seconds(spec, status, now)
    return measured if measured is not None else (status.get("measured") or {}).get("rpoSeconds")


def verified(last: Mapping[str, Any]) -> str:
    """status.lastBackup.verified for people: passed, failed, not yet (a completed backup no verification has
    reported on), or '-' (no backup, or a failed one: nothing to verify)."""
    if last.get("phase") != "Completed":
        return NONE
    outcome = last.get("verified")
    return "not yet" if outcome is None else ("passed" if outcome else "failed")


def policy_row(policy: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """One line of `kubectl pgbackup status`, as a dict (the JSON output) with display strings."""
    meta = policy.get("metadata") or {}
    spec = policy.get("spec") or {}
    status = policy.get("status") or {}
    last = status.get("lastBackup") or {}
    measured = status.get("measured") or {}
    objectives = spec.get("objectives") or {}
    wal = status.get("wal") or {}
    return {
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "ready": condition_status(policy, "Ready"),
        "lastBackup": last.get("id") or (f"({last['phase']})" if last.get("phase") == "Failed" else NONE),
        "lastBackupPhase": last.get("phase"),
        "age": age(last.get("completedAt"), now),
        "size": last.get("size") or size(last.get("sizeBytes")),
        "verified": verified(last),
        "rpo": _versus(_rpo(spec, status, now), objectives.get("rpo")),
        "rto": _versus(measured.get("rtoSeconds"), objectives.get("rto")),
        "walLag": _seconds(wal.get("lagSeconds")) if (spec.get("wal") or {}).get("enabled") or wal else NONE,
        "schedule": spec.get("schedule") or NONE,
        "method": spec.get("method") or NONE,
        "objectivesMet": not objectives_missed(policy),
        "problems": problems(policy),
    }


STATUS_COLUMNS = [("NAME", "name"), ("READY", "ready"), ("LAST BACKUP", "lastBackup"), ("AGE", "age"),
                  ("SIZE", "size"), ("VERIFIED", "verified"), ("RPO/OBJ", "rpo"), ("RTO/OBJ", "rto"),
                  ("WAL LAG", "walLag")]
STATUS_WIDE_COLUMNS = [("SCHEDULE", "schedule"), ("METHOD", "method")]


def table(columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]) -> str:
    """A kubectl-style table: upper-case headers, columns separated by three spaces, no trailing blanks."""
    cells = [[header for header, _ in columns]] + [[str(row.get(key, NONE)) for _, key in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


def status_screen(policies: Sequence[Mapping[str, Any]], now: datetime, all_namespaces: bool = False,
                  wide: bool = False) -> str:
    """The `status` screen: a table of policies (-o wide: with schedule and method), then one line per problem."""
    rows = [policy_row(policy, now) for policy in policies]
    columns = (([("NAMESPACE", "namespace")] if all_namespaces else []) + STATUS_COLUMNS
               + (STATUS_WIDE_COLUMNS if wide else []))
    text = table(columns, rows)
    issues = [issue for row in rows for issue in row["problems"]]
    if issues:
        text += "\n\nNeeds attention:\n" + "\n".join(f"  - {issue}" for issue in issues)
    return text


def catalog_rows(policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The backups in a policy's status (newest first), as display rows."""
    rows = []
    for record in (policy.get("status") or {}).get("backups") or []:
        verification = record.get("verification") or {}
        phase = verification.get("phase")
        if phase == "Failed" and verification.get("reason"):
            phase = f"Failed ({verification['reason']})"
        rows.append({
            "id": record.get("id", NONE),
            "method": record.get("method") or NONE,
            "type": record.get("backupType") or NONE,
            "incremental_of": record.get("incrementalOf") or NONE,
            "phase": record.get("phase") or "Completed",
            "completed": record.get("completedAt") or NONE,
            "size": size(record.get("sizeBytes")),
            "verification": phase or ("not yet" if record.get("phase", "Completed") == "Completed" else NONE),
            "duration": _seconds(record.get("durationSeconds")),
            "job": record.get("jobName") or NONE,
            "manifest": record.get("manifest") or NONE,
        })
    return rows


CATALOG_COLUMNS = [("ID", "id"), ("METHOD", "method"), ("TYPE", "type"), ("PHASE", "phase"),
                   ("COMPLETED", "completed"), ("SIZE", "size"), ("VERIFICATION", "verification")]
CATALOG_WIDE_COLUMNS = [("INCREMENTAL OF", "incremental_of"), ("DURATION", "duration"), ("JOB", "job"),
                        ("MANIFEST", "manifest")]


def catalog(policy: Mapping[str, Any], wide: bool = False) -> str:
    """The backups of a policy as a table (TYPE: full or incr; -o wide: with the backup an incremental builds on,
    duration, Job and manifest)."""
    rows = catalog_rows(policy)
    if not rows:
        name = (policy.get("metadata") or {}).get("name", "?")
        return f"BackupPolicy {name} has no backups recorded in its status yet."
    return table(CATALOG_COLUMNS + (CATALOG_WIDE_COLUMNS if wide else []), rows)


def last_backup(last: Mapping[str, Any]) -> str:
    """The outcome of one backup (status.lastBackup)."""
    lines = [f"Backup {last.get('id') or '(no id)'}: {last.get('phase', 'Unknown')}"]
    for label, value in (("Completed", last.get("completedAt")),
                         ("Size", last.get("size") or (human_size(last.get("sizeBytes")))),
                         ("Verified", None if verified(last) == NONE else verified(last)),
                         ("Job", last.get("jobName")), ("Error", last.get("error"))):
        if value is not None:
            lines.append(f"  {label}: {value}")
    return "\n".join(lines)


def restore_plan(plan: Mapping[str, Any]) -> str:
    """status.plan of a RestoreRequest."""
    lines = ["Plan:"]
    for label, key in (("Backup", "backup"), ("Target", "target"), ("WAL from", "walFrom"), ("WAL to", "walTo")):
        if plan.get(key):
            lines.append(f"  {label}: {plan[key]}")
    steps = plan.get("steps") or []
    if steps:
        lines.append("  Steps:")
        lines.extend(f"    {number}. {step}" for number, step in enumerate(steps, 1))
    return "\n".join(lines)


def restore_outcome(restore: Mapping[str, Any]) -> str:
    """The end of a RestoreRequest: phase, error, duration, row counts and checks."""
    status = restore.get("status") or {}
    name = (restore.get("metadata") or {}).get("name", "?")
    lines = [f"RestoreRequest {name}: {status.get('phase', 'Pending')}"]
    if status.get("error"):
        lines.append(f"  Error: {status['error']}")
    result = status.get("result") or {}
    if status.get("duration") or result.get("restoreSeconds") is not None:
        lines.append(f"  Duration: {status.get('duration') or duration(result['restoreSeconds'])}")
    for label, key in (("Safety backup", "preRestoreBackup"), ("Previous database kept as", "previousDatabase")):
        if result.get(key):
            lines.append(f"  {label}: {result[key]}")
    counts = result.get("rowCounts") or {}
    if counts:
        lines.append("  Row counts:")
        width = max(len(table_name) for table_name in counts)
        lines.extend(f"    {table_name.ljust(width)}  {count}" for table_name, count in sorted(counts.items()))
    checks = result.get("checks") or []
    if checks:
        lines.append("  Checks:")
        lines.extend(f"    {'PASS' if check.get('passed') else 'FAIL'}  {check.get('name', '?')}"
                     + (f": {check['message']}" if check.get("message") else "") for check in checks)
    return "\n".join(lines)
