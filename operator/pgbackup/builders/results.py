"""Finished backup Jobs -> status and Event text (pure: the handlers fetch the Job and its pods)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pgbackup.api.summary import JobSummary
from pgbackup.builders.conditions import LAST_BACKUP_SUCCEEDED, set_condition
from pgbackup.builders.pod import CONTAINER_NAME
from pgbackup.builders.volumes import VOLUME_UNAVAILABLE, stuck_volume_message

MAX_BACKUPS_IN_STATUS = 20
ANNOTATION_RECORDED = "pgbackup.dev/recorded"
_IMAGE_PULL_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"}

Phase = Literal["Completed", "Failed", "Unknown"]
"""Unknown: the Job completed but left no summary, so nothing says whether a backup was stored."""
NO_SUMMARY = "NoSummary"
OOM_KILLED = "OOMKilled"
OUTCOME_UNKNOWN_EVENT = "BackupOutcomeUnknown"


@dataclass(frozen=True)
class BackupResult:
    """What one finished Job achieved: from the runner's summary when there is one, else from Job/Pod status."""

    job_name: str
    phase: Phase
    summary: JobSummary | None
    reason: str
    message: str


def job_outcome(job: dict[str, Any]) -> Phase | None:
    """Completed / Failed once the Job has finished, None while it runs."""
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Completed"
        if condition.get("type") == "Failed":
            return "Failed"
    return None


def _backup_container_statuses(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The backup container's statuses, newest pod first."""
    ordered = sorted(pods, key=lambda pod: pod.get("metadata", {}).get("creationTimestamp") or "", reverse=True)
    return [
        status
        for pod in ordered
        for status in pod.get("status", {}).get("containerStatuses") or []
        if status.get("name") == CONTAINER_NAME
    ]


def termination_message(pods: list[dict[str, Any]]) -> str | None:
    """The newest termination message the backup container left."""
    for status in _backup_container_statuses(pods):
        for state_key in ("state", "lastState"):
            message = (status.get(state_key) or {}).get("terminated", {}).get("message")
            if message:
                return str(message)
    return None


def failure_without_summary(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, str]:
    for status in _backup_container_statuses(pods):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL_REASONS:
            return waiting["reason"], waiting.get("message") or f"the backup container could not start ({waiting['reason']})"
        for state_key in ("state", "lastState"):
            if ((status.get(state_key) or {}).get("terminated") or {}).get("reason") == OOM_KILLED:
                return OOM_KILLED, (f"the runner container was killed for using more memory than its limit "
                                    f"({OOM_KILLED}, exit 137) and left no summary; raise the BackupPolicy's "
                                    f"spec.jobTemplate.resources.limits.memory (or lower logical.jobs)")
    stuck = stuck_volume_message(job, pods)
    for condition in job.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            reason = condition.get("reason") or "JobFailed"
            message = condition.get("message") or f"the Job failed ({reason})"
            if stuck:  # a pod that never got its volumes: say so rather than only 'DeadlineExceeded'
                return VOLUME_UNAVAILABLE, f"{message}: {stuck}"
            return reason, message
    return "JobFailed", "the Job failed without a summary; see `kubectl logs job/" + job["metadata"]["name"] + "`"


def read_result(job: dict[str, Any], pods: list[dict[str, Any]]) -> BackupResult | None:
    """The result of a finished Job, None while it still runs."""
    outcome = job_outcome(job)
    if outcome is None:
        return None
    name = job["metadata"]["name"]
    text = termination_message(pods)
    summary = JobSummary.from_termination_message(text) if text else None
    if summary is not None and summary.kind == "backup":
        phase: Phase = "Failed" if outcome == "Failed" else summary.phase
        reason = summary.reason or ("BackupSucceeded" if phase == "Completed" else "BackupFailed")
        return BackupResult(name, phase, summary, reason, summary.error or "")
    if outcome == "Completed":
        return BackupResult(name, "Unknown", None, NO_SUMMARY,
                            f"Job {name} completed but left no backup summary, so it is not known whether it stored a "
                            f"backup; status.lastBackup and the recovery point are left as they were. See `kubectl "
                            f"logs job/{name}`, and `kubectl pgbackup list` (or `pgbackup list`) for what storage holds")
    reason, message = failure_without_summary(job, pods)
    return BackupResult(name, "Failed", None, reason, message)


def human_size(size: int | None) -> str | None:
    if size is None:
        return None
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return None  # unreachable


def retries_note(summary: JobSummary | None, job_name: str) -> str:
    """'; 40 storage requests were retried ...' when the run needed retries (a flaky store), else ''."""
    retries = summary.storage_retries if summary is not None else None
    if not retries:
        return ""
    return (f"; {retries} storage request{'s were' if retries != 1 else ' was'} retried after errors (a flaky or "
            f"overloaded store? see the s3.retry lines of `kubectl logs job/{job_name}`)")


def event_for(result: BackupResult) -> tuple[str, str]:
    """(reason, message) of the Event on the policy."""
    summary = result.summary
    if result.phase == "Completed":
        size = human_size(summary.size_bytes) if summary else None
        duration = f"{summary.duration_seconds:.0f}s" if summary and summary.duration_seconds is not None else None
        what = f"backup {summary.backup_id}" if summary and summary.backup_id else "backup"
        details = ", ".join(part for part in (size, f"in {duration}" if duration else None) if part)
        message = f"{what} completed by Job {result.job_name}" + (f": {details}" if details else "")
        return "BackupSucceeded", message + retries_note(summary, result.job_name)
    if result.phase == "Unknown":
        return OUTCOME_UNKNOWN_EVENT, result.message
    return "BackupFailed", f"backup Job {result.job_name} failed ({result.reason}): {result.message}"


def record_result(status: dict[str, Any], result: BackupResult, generation: int | None, now: str) -> dict[str, Any]:
    """The status fields to patch for a finished Job: lastBackup, backups (newest first, deduplicated by id,
    at most 20) and the LastBackupSucceeded condition. An Unknown outcome (no summary) only sets the condition
    to Unknown: without evidence, lastBackup (and so the RPO) does not move."""
    summary = result.summary
    if result.phase == "Unknown":
        conditions = set_condition(list(status.get("conditions") or []), LAST_BACKUP_SUCCEEDED, "Unknown",
                                   result.reason, result.message, generation, now)
        return {"conditions": conditions}
    last: dict[str, Any] = {"phase": result.phase, "jobName": result.job_name, "completedAt": now}
    if summary is not None:
        last.update({
            "id": summary.backup_id,
            "completedAt": summary.completed_at.isoformat().replace("+00:00", "Z") if summary.completed_at else now,
            "sizeBytes": summary.size_bytes,
            "size": human_size(summary.size_bytes),
        })
    if result.phase == "Failed":
        last["error"] = result.message or result.reason
    last = {key: value for key, value in last.items() if value is not None}

    backups = list(status.get("backups") or [])
    if summary is not None and summary.backup_id:
        record = summary.model_dump(mode="json", by_alias=True, exclude_none=True,
                                    include={"method", "backup_type", "incremental_of", "phase", "started_at",
                                             "completed_at", "size_bytes", "duration_seconds", "manifest"})
        record.update({"id": summary.backup_id, "phase": result.phase, "jobName": result.job_name})
        if summary.manifest_sha256:
            record["sha256"] = summary.manifest_sha256
        backups = [b for b in backups if b.get("id") != summary.backup_id]
        if summary.stored_backups is not None:  # status follows storage: ids retention deleted go
            stored = set(summary.stored_backups)
            backups = [b for b in backups if b.get("id") in stored]
        backups.insert(0, record)
        backups.sort(key=lambda b: str(b.get("id") or ""), reverse=True)
        backups = backups[:MAX_BACKUPS_IN_STATUS]

    reason, message = event_for(result)
    conditions = set_condition(
        list(status.get("conditions") or []), LAST_BACKUP_SUCCEEDED,
        "True" if result.phase == "Completed" else "False",
        reason if result.phase == "Completed" else result.reason, message, generation, now,
    )
    patch: dict[str, Any] = {"lastBackup": last, "conditions": conditions}
    if backups != list(status.get("backups") or []):
        patch["backups"] = backups
    if summary is not None and summary.copies is not None:
        patch["copies"] = copies_status(status, summary)
    return patch


def copies_status(status: dict[str, Any], summary: JobSummary) -> list[dict[str, Any]]:
    """status.copies from a backup summary; a copy not written to this run keeps its previous lastCopiedAt."""
    previous = {c.get("name"): c for c in status.get("copies") or [] if isinstance(c, dict)}
    copies = []
    for state in summary.copies or []:
        entry = state.model_dump(mode="json", by_alias=True, exclude_none=True)
        earlier = previous.get(state.name, {}).get("lastCopiedAt")
        if "lastCopiedAt" not in entry and earlier:
            entry["lastCopiedAt"] = earlier
        copies.append(entry)
    return copies
