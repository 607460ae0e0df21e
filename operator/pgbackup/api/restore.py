"""RestoreRequest (pgbackup.dev/v1alpha1): restore one backup, or a point in time, once."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from pgbackup.api.base import ApiModel, Condition, DnsName, StatusModel
from pgbackup.api.policy import SqlCheck
from pgbackup.api.refs import DatabaseCredentialsRef


class PolicyRef(ApiModel):
    """The BackupPolicy whose storage and credentials the restore reads."""

    name: DnsName
    """Name of a BackupPolicy in the same namespace."""


class PointInTime(ApiModel):
    """Recover to a moment: exactly one of targetTime or targetLSN (needs WAL archiving)."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "has(self.targetTime) != has(self.targetLSN)", "message": "set exactly one of targetTime or targetLSN"}
    ]}}

    target_time: datetime | None = None
    """RFC 3339 time to recover to, e.g. 2026-11-23T10:15:00Z."""
    target_lsn: str | None = Field(default=None, alias="targetLSN", pattern=r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
    """WAL position to recover to, e.g. 0/3000060."""

    @model_validator(mode="after")
    def _exactly_one(self) -> PointInTime:
        if (self.target_time is None) == (self.target_lsn is None):
            raise ValueError("pointInTime: set exactly one of targetTime or targetLSN")
        return self


class VolumeTarget(ApiModel):
    """A PersistentVolumeClaim to leave a recovered data directory on."""

    claim_name: DnsName
    """Name of the PersistentVolumeClaim."""
    path: str = ""
    """Directory inside the volume."""


class RestoreTarget(ApiModel):
    """Where to restore to."""

    host: str | None = Field(default=None, max_length=253)
    """Host of the target server; default: the policy's database host."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the target server; default: the policy's port."""
    credentials_secret: DatabaseCredentialsRef | None = None
    """Credentials for the target; default: the policy's."""
    database: str | None = Field(default=None, min_length=1, max_length=63)
    """Database to restore into (a new name by default)."""
    overwrite: bool = False
    """Replace an existing database of that name; without it an existing target is an error."""
    pre_restore_backup: bool = True
    """When overwriting, back up the existing database first."""
    drop_previous: bool = False
    """When overwriting, drop the replaced database instead of keeping it under a dated name."""
    terminate_connections: bool = False
    """When overwriting, end other sessions on the target database first."""
    volume: VolumeTarget | None = None
    """For physical / point-in-time restores: leave the data directory on this volume instead."""


class RestoreRequestSpec(ApiModel):
    """Restore a backup (or a point in time) once; immutable after it starts."""

    policy_ref: PolicyRef
    """The BackupPolicy the backups belong to."""
    backup: str = Field(default="latest", min_length=1, max_length=64, pattern=r"^(latest|[0-9]{8}T[0-9]{6}Z(-[0-9]+)?)$")
    """'latest' or a backup id."""
    point_in_time: PointInTime | None = None
    """Recover to a point in time (needs WAL archiving)."""
    target: RestoreTarget = Field(default_factory=RestoreTarget)
    """Where to restore to."""
    databases: list[str] = Field(default_factory=list)
    """Databases of the backup to restore; empty = all of them (a single one may be renamed with target.database)."""
    include_globals: bool = False
    """Also restore roles and tablespaces."""
    extensions: list[str] = Field(default_factory=list, max_length=64)
    """Extensions to create before data is loaded when missing, e.g. vector, pg_trgm."""
    checks: list[SqlCheck] = Field(default_factory=list, max_length=100)
    """SQL checks to run after the restore."""
    jobs: int = Field(default=2, ge=1, le=32)
    """pg_restore parallel jobs."""
    dry_run: bool = False
    """Resolve and report the plan, change nothing."""


RestorePhase = Literal["Pending", "Planning", "Running", "Succeeded", "Failed"]


class RestorePlan(StatusModel):
    """What the restore will do, written before it changes anything."""

    backup: str | None = None
    """Resolved backup id."""
    wal_from: str | None = None
    """First WAL segment needed (point-in-time restores)."""
    wal_to: str | None = None
    """Last WAL segment needed."""
    target: str | None = None
    """host:port/database."""
    objects: list[str] = Field(default_factory=list)
    """Storage objects to read."""
    steps: list[str] = Field(default_factory=list)
    """Steps in order."""


class CheckResult(StatusModel):
    """Outcome of one post-restore check."""

    name: str
    """Check name (row counts are reported as 'rowcount:<db>.<schema>.<table>')."""
    passed: bool
    """Whether it passed."""
    message: str = ""
    """Details."""


class RestoreResult(StatusModel):
    """What the restore did."""

    started_at: datetime | None = None
    """When the restore started."""
    completed_at: datetime | None = None
    """When it finished."""
    restore_seconds: float | None = None
    """Wall time of the restore."""
    row_counts: dict[str, int] = Field(default_factory=dict)
    """Rows per table after the restore."""
    checks: list[CheckResult] = Field(default_factory=list)
    """Check results."""
    pre_restore_backup: str | None = None
    """Id of the safety backup taken before overwriting."""
    previous_database: str | None = None
    """Name the overwritten database was kept under."""


class RestoreRequestStatus(StatusModel):
    """Observed state of a RestoreRequest; written only by the operator."""

    observed_generation: int | None = None
    """The metadata.generation last seen."""
    phase: RestorePhase = "Pending"
    """Pending, Planning, Running, Succeeded or Failed."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready, SpecChanged, ..."""
    plan: RestorePlan | None = None
    """The plan."""
    result: RestoreResult | None = None
    """The result."""
    job_name: str | None = None
    """The restore Job."""
    error: str | None = None
    """Why it failed."""


class RestoreRequest(ApiModel):
    """A RestoreRequest resource (for tests and tools; handlers see plain dicts)."""

    model_config = {"extra": "ignore"}
    api_version: Literal["pgbackup.dev/v1alpha1"] = "pgbackup.dev/v1alpha1"
    kind: Literal["RestoreRequest"] = "RestoreRequest"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RestoreRequestSpec
    status: RestoreRequestStatus | None = None
