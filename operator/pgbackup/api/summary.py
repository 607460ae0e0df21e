"""The JSON a runner Job leaves as its container termination message, read back by the operator.

Kubernetes keeps at most 4096 bytes of a termination message, so this stays small and carries no secrets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from pgbackup.api.base import StatusModel

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_SUMMARY_BYTES = 4096
MAX_ERROR_CHARS = 1500


class JobSummary(StatusModel):
    """Result of one runner invocation (backup, restore or verification)."""

    version: Literal[1] = 1
    """Schema version."""
    kind: Literal["backup", "restore", "verify"]
    """What the Job did."""
    phase: Literal["Completed", "Failed"]
    """Completed or Failed."""
    backup_id: str | None = None
    """The backup taken, restored or verified."""
    method: Literal["logical", "physical"] | None = None
    """Backup method."""
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

    def to_termination_message(self) -> str:
        """Serialise within the 4096-byte limit, shortening the error if needed."""
        text = self.model_dump_json(by_alias=True, exclude_none=True)
        if len(text.encode()) <= MAX_SUMMARY_BYTES:
            return text
        overflow = len(text.encode()) - MAX_SUMMARY_BYTES + 20
        shorter = self.model_copy(update={"error": (self.error or "")[: max(0, len(self.error or "") - overflow)] + "..."})
        return shorter.model_dump_json(by_alias=True, exclude_none=True)

    @classmethod
    def from_termination_message(cls, text: str) -> JobSummary | None:
        """Parse a termination message; None when it is not a summary (e.g. a crash trace)."""
        try:
            return cls.model_validate_json(text)
        except ValueError:
            return None
