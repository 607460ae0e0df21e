"""Finished verification Jobs -> the policy's status and Event text (pure: the handlers fetch Job and pods)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pgbackup.api.summary import JobSummary
from pgbackup.builders.conditions import Status, set_condition
from pgbackup.builders.results import failure_without_summary, job_outcome, termination_message
from pgbackup.builders.verify_job import ANNOTATION_VERIFY_BACKUP_ID

VERIFIED = "Verified"
VERDICT_REASONS = frozenset({"RestoreVerified", "RowCountMismatch", "CheckFailed", "RestoreFailed"})
# This image cannot verify the backup at all (no server of its major): no verdict on the backup, nothing to retry.
NOT_POSSIBLE_REASONS = frozenset({"ServerBinariesMissing"})

VerificationPhase = Literal["Passed", "Failed", "NotPossible"]
_CONDITION: dict[VerificationPhase, Status] = {"Passed": "True", "Failed": "False", "NotPossible": "Unknown"}


@dataclass(frozen=True)
class VerificationOutcome:
    """What one finished verification Job found out, about which backup (None when it never got that far)."""

    job_name: str
    backup_id: str | None
    phase: VerificationPhase
    reason: str
    message: str
    restore_seconds: float | None
    checked_at: str | None


def _iso(summary: JobSummary) -> str | None:
    return summary.completed_at.isoformat().replace("+00:00", "Z") if summary.completed_at else None


def read_verification(job: dict[str, Any], pods: list[dict[str, Any]]) -> VerificationOutcome | None:
    """The outcome of a finished verification Job; None while it runs."""
    outcome = job_outcome(job)
    if outcome is None:
        return None
    name = job["metadata"]["name"]
    requested = (job["metadata"].get("annotations") or {}).get(ANNOTATION_VERIFY_BACKUP_ID)
    text = termination_message(pods)
    summary = JobSummary.from_termination_message(text) if text else None
    if summary is not None and summary.kind == "verify":
        passed = outcome == "Completed" and summary.phase == "Completed" and summary.reason == "RestoreVerified"
        reason = summary.reason or ("RestoreVerified" if passed else "VerificationFailed")
        message = summary.error or ("restored and checked" if passed else f"the verification failed ({reason})")
        phase: VerificationPhase = ("Passed" if passed else
                                    "NotPossible" if reason in NOT_POSSIBLE_REASONS else "Failed")
        return VerificationOutcome(name, summary.backup_id or requested, phase, reason,
                                   message, summary.restore_seconds, _iso(summary))
    if outcome == "Completed":
        return VerificationOutcome(name, requested, "Failed", "NoSummary",
                                   f"Job {name} completed but left no verification summary; "
                                   f"see `kubectl logs job/{name}`", None, None)
    reason, message = failure_without_summary(job, pods)
    return VerificationOutcome(name, requested, "Failed", reason, message, None, None)


def _seconds(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else "an unknown time"


def describe(outcome: VerificationOutcome) -> tuple[str, str]:
    """(Event reason, message): which backup, and what failed."""
    backup = f"backup {outcome.backup_id}" if outcome.backup_id else "the newest backup"
    if outcome.phase == "Passed":
        return "VerificationSucceeded", (f"{backup} restored into a throwaway PostgreSQL in "
                                         f"{_seconds(outcome.restore_seconds)} and passed its checks "
                                         f"(Job {outcome.job_name})")
    if outcome.phase == "NotPossible":
        return "VerificationNotPossible", (f"{backup} cannot be verified by this image ({outcome.reason}); the "
                                           f"backup itself was not judged. Job {outcome.job_name}: {outcome.message}")
    if outcome.reason in VERDICT_REASONS:
        what = f"{backup} failed verification ({outcome.reason})"
    else:  # the environment, not the backup: the verdict on the backup is still open
        what = f"{backup} could not be verified ({outcome.reason})"
    return "VerificationFailed", f"{what} in Job {outcome.job_name}: {outcome.message}"


def _newer_verification_recorded(backups: list[dict[str, Any]], backup_id: str | None) -> bool:
    """A newer backup's verification is already in status: an older one finishing late must not replace
    the condition and the measured RTO it set."""
    if not backup_id:
        return False
    return any(str(b.get("id") or "") > backup_id and b.get("verification") for b in backups)


def record_verification(status: dict[str, Any], outcome: VerificationOutcome, generation: int | None,
                        now: str) -> dict[str, Any]:
    """The status fields to patch: backups[id].verification, lastBackup.verified, condition Verified and
    measured.rtoSeconds (the latter two only when no newer backup's verification is recorded)."""
    checked_at = outcome.checked_at or now
    result = {"phase": outcome.phase, "reason": outcome.reason, "restoreSeconds": outcome.restore_seconds,
              "checkedAt": checked_at}
    if outcome.phase != "Passed":
        result["message"] = outcome.message
    result = {key: value for key, value in result.items() if value is not None}

    patch: dict[str, Any] = {}
    backups = [dict(b) for b in status.get("backups") or []]
    for record in backups:
        if outcome.backup_id and record.get("id") == outcome.backup_id:
            record["verification"] = result
    if backups != list(status.get("backups") or []):
        patch["backups"] = backups

    last = status.get("lastBackup")
    if last and outcome.backup_id and last.get("id") == outcome.backup_id:
        patch["lastBackup"] = {**last, "verified": outcome.phase == "Passed"}

    if not _newer_verification_recorded(list(status.get("backups") or []), outcome.backup_id):
        _, message = describe(outcome)
        patch["conditions"] = set_condition(list(status.get("conditions") or []), VERIFIED,
                                            _CONDITION[outcome.phase],
                                            outcome.reason, message, generation, now)
        if outcome.restore_seconds is not None:
            patch["measured"] = {"rtoSeconds": outcome.restore_seconds}  # merge patch: recoveryPoint is kept
    return patch
