"""The contract between the WAL streamer pod (`pgbackup wal-stream`) and the operator.

The streamer serves its state as JSON (`WalStreamState`, camelCase) at `http://<pod>:8081/status`; the
operator polls it through the policy's `<policy>-wal` Service and is the only writer of the policy's status.
The operator holds no database or storage credentials: everything it reports comes from this document.

Endpoints the streamer serves on WAL_STATUS_PORT (plain HTTP, no credentials in any answer):
- GET /status  -> 200 with a WalStreamState body, whenever the HTTP server runs, also while streaming fails
                  (the failure goes into `error`); this is the readiness probe.
- GET /healthz -> 200 while the streamer's main loop is alive, 5xx (or no answer) when it is stuck, so that
                  Kubernetes restarts the pod; this is the liveness probe.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import Field, field_validator

from pgbackup.api.base import StatusModel

WAL_STATUS_PORT = 8081
WAL_STATUS_PORT_NAME = "status"
WAL_STATUS_PATH = "/status"
WAL_HEALTH_PATH = "/healthz"
# Set in the streamer pod, so that the runner needs no constant of its own (it may also use WAL_STATUS_PORT).
ENV_WAL_STATUS_PORT = "PGBACKUP_WAL_STATUS_PORT"
# The spool's size limit in bytes (the scratch emptyDir's sizeLimit): receiving pauses before the spool reaches it.
ENV_WAL_SPOOL_LIMIT = "PGBACKUP_WAL_SPOOL_LIMIT_BYTES"


class WalStreamState(StatusModel):
    """What the WAL streamer knows, as of `updatedAt`. Unknown fields are ignored (newer runners may add some)."""

    starting: bool = False
    """True from the streamer's start until its loop has created (or found) the replication slot: the slot fields
    say nothing yet, and the operator reports WALArchiving Unknown/Starting rather than a missing slot. With
    `error` set, the loop cannot create the slot and keeps retrying (Failed once the startup grace is over)."""
    streaming: bool = False
    """True while pg_receivewal is connected (or reconnecting within its retry loop); False with `error` set
    when streaming has stopped."""
    slot_name: str | None = None
    """The physical replication slot streamed from."""
    slot_exists: bool = True
    """False when the slot is missing on the server (dropped by someone: WAL written meanwhile may be lost)."""
    slot_retained_bytes: int | None = Field(default=None, ge=0)
    """WAL the slot holds back on the database server: pg_current_wal_lsn() - restart_lsn."""
    last_archived_segment: str | None = None
    """Name of the newest complete segment stored, e.g. 000000010000000A000000F3."""
    last_archived_at: datetime | None = None
    """When that segment was stored."""
    last_partial_at: datetime | None = None
    """When the current .partial segment was last stored."""
    server_lsn: str | None = None
    """pg_current_wal_lsn() on the server, e.g. 0/A000F3E8."""
    archived_lsn: str | None = None
    """The WAL position up to which storage holds everything (complete and .partial segments)."""
    lag_bytes: int | None = Field(default=None, ge=0)
    """serverLsn - archivedLsn in bytes."""
    lag_seconds: float | None = Field(default=None, ge=0)
    """Age of the oldest WAL written by the server that is not yet in storage; 0 when archivedLsn == serverLsn."""
    spool_bytes: int | None = Field(default=None, ge=0)
    """Bytes in the streamer's local spool (its scratch emptyDir): WAL received and not yet shipped, plus the
    segment being written and the newest shipped one. It grows while storage is unreachable."""
    gaps: list[str] = Field(default_factory=list)
    """Missing segment ranges in storage, each 'first-last' (one name when first == last)."""
    first_recoverable_point: datetime | None = None
    """Oldest point in time that can be restored (end of the oldest retained physical base backup); None
    when there is no base backup to replay WAL onto."""
    last_recoverable_point: datetime | None = None
    """Newest point in time that can be restored (the newest WAL record in storage before the first gap after
    the base backup)."""
    timeline: int | None = Field(default=None, ge=1)
    """The server's current timeline."""
    error: str | None = None
    """What went wrong and what to do, when streaming or shipping fails; None when all is well."""
    updated_at: datetime | None = None
    """When the streamer last refreshed this state."""

    @field_validator("last_archived_at", "last_partial_at", "first_recoverable_point", "last_recoverable_point",
                     "updated_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """Times are UTC ('...Z'); one without a zone is read as UTC rather than rejected."""
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
