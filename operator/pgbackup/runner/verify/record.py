"""`<backup id>/verification.json`: the record a verification leaves beside the manifest (the catalog marks the
backup verified from it), and what a verification run returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from pgbackup.api.base import StatusModel
from pgbackup.api.policy import VerificationResult
from pgbackup.api.restore import CheckResult
from pgbackup.runner.catalog.manifest import VERIFICATION_NAME
from pgbackup.runner.storage.base import Storage

VerificationReason = Literal["RestoreVerified", "RowCountMismatch", "CheckFailed", "RestoreFailed"]


class VerificationRecord(StatusModel):
    """`<backup id>/verification.json`: the evidence of one verification (camelCase keys, like the API)."""

    version: Literal[1] = 1
    backup_id: str
    """The backup verified."""
    phase: Literal["Passed", "Failed"]
    passed: bool
    """Same as phase == 'Passed'; the catalog reads this key to mark the backup verified."""
    reason: VerificationReason
    message: str
    restore_seconds: float | None = None
    """Wall time of the restore (logical: globals + every database; physical: extraction + recovery)."""
    checked_at: datetime
    method: Literal["logical", "physical"] | None = None
    server_version: str | None = None
    """Version of the throwaway server the backup was restored into."""
    checks: list[CheckResult] = Field(default_factory=list)

    def to_result(self) -> VerificationResult:
        """The per-backup status entry of the BackupPolicy."""
        return VerificationResult(phase=self.phase, reason=self.reason, message=self.message,
                                  restore_seconds=self.restore_seconds, checked_at=self.checked_at)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()


@dataclass(frozen=True)
class VerificationOutcome:
    record: VerificationRecord
    location: str | None
    """Where verification.json was written (None when writing was not asked for)."""

    @property
    def passed(self) -> bool:
        return self.record.passed

    @property
    def reason(self) -> VerificationReason:
        return self.record.reason


def verification_key(backup_id: str) -> str:
    return f"{backup_id}/{VERIFICATION_NAME}"


def read_verification(storage: Storage, backup_id: str) -> VerificationRecord:
    """The stored verification of a backup (raises ObjectNotFound when it was never verified)."""
    return VerificationRecord.model_validate_json(storage.get_bytes(verification_key(backup_id)))
