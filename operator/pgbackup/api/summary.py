"""The JSON a runner Job leaves as its container termination message, read back by the operator.

Kubernetes keeps at most 4096 bytes of a termination message, so this stays small and carries no secrets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from pgbackup.api.base import StatusModel
from pgbackup.api.restore import CheckResult, RestorePlan, RestoreResult

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_SUMMARY_BYTES = 4096
MAX_ERROR_CHARS = 1500


MAX_COPY_ERROR_CHARS = 300
MAX_STORED_BACKUPS = 20  # as many as status.backups holds


class CopySummary(StatusModel):
    """One copy (BackupPolicy.spec.copies[]) after a backup Job: what it holds and how far behind it is."""

    name: str
    """The copy's name."""
    last_copied_backup: str | None = None
    """Newest backup present in the copy."""
    last_copied_at: datetime | None = None
    """When this run finished copying a backup there."""
    lag_backups: int | None = None
    """Primary backups not in the copy after this run."""
    error: str | None = Field(default=None, max_length=MAX_COPY_ERROR_CHARS)
    """Why copying failed this run (the backup itself is Completed)."""


class JobSummary(StatusModel):
    """Result of one runner invocation (backup, restore or verification)."""

    version: Literal[1] = 1
    """Schema version."""
    kind: Literal["backup", "restore", "verify", "catalog"]
    """What the Job did ('catalog': a catalog-sync Job read what storage holds; backup_id is the newest backup)."""
    phase: Literal["Completed", "Failed"]
    """Completed or Failed."""
    backup_id: str | None = None
    """The backup taken, restored or verified."""
    method: Literal["logical", "physical"] | None = None
    """Backup method."""
    backup_type: Literal["full", "incr"] | None = None
    """Backup Jobs: 'incr' for an incremental physical backup (spec.physical.fullEvery), else 'full'."""
    incremental_of: str | None = None
    """Backup Jobs: the backup an incremental builds on."""
    started_at: datetime | None = None
    """When the work started."""
    completed_at: datetime | None = None
    """When it ended."""
    size_bytes: int | None = None
    """Bytes stored (backup) or read (restore)."""
    duration_seconds: float | None = None
    """Wall time."""
    manifest: str | None = None
    """Location of the manifest."""
    manifest_sha256: str | None = None
    """SHA-256 of the manifest."""
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)
    """Why it failed: what, where, and what to do next."""
    reason: str | None = None
    """One CamelCase word for the failure or verification outcome."""
    restore_seconds: float | None = None
    """Verification Jobs: wall time of the restore into the throwaway server (the measured RTO)."""
    plan: RestorePlan | None = None
    """Restore Jobs: what the restore did or (dry run) would do; lists may be shortened to fit 4096 bytes."""
    result: RestoreResult | None = None
    """Restore Jobs: what the restore did; failed checks are kept first when the list has to be shortened."""
    copies: list[CopySummary] | None = None
    """Backup Jobs with spec.copies: the state of each copy after this run (errors cut to fit 4096 bytes)."""
    stored_backups: list[str] | None = Field(default=None, max_length=MAX_STORED_BACKUPS)
    """Backup Jobs: ids of the backups in storage after this run's retention, newest first (at most 20); absent
    when retention did not finish (catalog-sync Jobs: the ids storage holds). The operator drops every other id from status.backups."""

    storage_retries: int | None = None
    """Storage requests of this run that failed (throttling, 5xx, timeouts) and were retried; absent when none. The
    run's outcome does not depend on it, but a count that keeps growing means a flaky or overloaded store."""

    def to_termination_message(self) -> str:
        """Serialise within the 4096-byte limit: shorten a restore's plan/result lists, then the error."""
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) <= MAX_SUMMARY_BYTES:
            return text
        shrunk = _shrink_restore_details(self)
        text = shrunk.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) <= MAX_SUMMARY_BYTES:
            return text
        overflow = len(text.encode()) - MAX_SUMMARY_BYTES + 20
        error = shrunk.error or ""
        shorter = shrunk.model_copy(update={"error": error[: max(0, len(error) - overflow)] + "..."})
        return shorter.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_termination_message(cls, text: str) -> JobSummary | None:
        """Parse a termination message; None when it is not a summary (e.g. a crash trace)."""
        try:
            return cls.model_validate_json(text)
        except ValueError:
            return None


def _fits(summary: JobSummary) -> bool:
    return len(summary.model_dump_json(by_alias=True, exclude_none=True).encode()) <= MAX_SUMMARY_BYTES


def _cut_strings(items: list[str], keep: int) -> list[str]:
    return items if len(items) <= keep else [*items[:keep], f"... {len(items) - keep} more (see the Job's log)"]


def _with_checks(result: RestoreResult, checks: list[CheckResult], keep: int) -> RestoreResult:
    """`checks` cut to `keep` entries plus one '...' entry counting what was left out."""
    kept, dropped = checks[:keep], checks[keep:]
    if dropped:
        kept = [*kept, CheckResult(name="...", passed=all(c.passed for c in dropped),
                                   message=f"{len(dropped)} more check(s) not shown: see the Job's log")]
    return result.model_copy(update={"checks": kept, "row_counts": dict(list(result.row_counts.items())[:keep])})


def _shrink_restore_details(summary: JobSummary) -> JobSummary:
    """Shorten a restore's plan and result step by step until the summary fits: first the messages of passed
    checks, then passed checks, row counts and plan lists together; failed checks go last."""
    plan, result = summary.plan, summary.result
    if plan is None and result is None:
        return summary
    ordered: list[CheckResult] = []
    if result is not None:
        # failed first, otherwise in order; passed ones lose their message first
        ordered = [c if not c.passed else c.model_copy(update={"message": ""})
                   for c in sorted(result.checks, key=lambda c: c.passed)]
        summary = summary.model_copy(update={"result": result.model_copy(update={"checks": ordered})})
    failures = sum(1 for c in ordered if not c.passed)
    for keep in (64, 32, 16, 8, 4, 2, 1, 0):
        if _fits(summary):
            return summary
        update: dict[str, object] = {}
        if result is not None:
            update["result"] = _with_checks(result, ordered, failures + keep)
        if plan is not None:
            update["plan"] = plan.model_copy(update={"objects": _cut_strings(plan.objects, keep),
                                                     "steps": _cut_strings(plan.steps, keep)})
        summary = summary.model_copy(update=update)
    if result is not None:
        for keep in (16, 8, 4, 2, 1, 0):
            if _fits(summary):
                return summary
            summary = summary.model_copy(update={"result": _with_checks(result, ordered, min(keep, failures))})
    return summary
