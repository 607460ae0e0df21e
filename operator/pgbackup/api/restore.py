"""RestoreRequest (pgbackup.dev/v1alpha1): restore one backup, or a point in time, once."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from pgbackup.api.base import ApiModel, Condition, DnsName, StatusModel
from pgbackup.api.hooks import Quiesce, RestoreHooks
from pgbackup.api.policy import SqlCheck, relative_volume_path
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


class VolumeRestore(ApiModel):
    """Bring one application volume of the backup back into a PersistentVolumeClaim (mounted read-write)."""

    claim_name: DnsName
    """The claim as named in the backup (BackupPolicy spec.volumes[].claimName)."""
    target_claim_name: DnsName | None = None
    """PersistentVolumeClaim to restore into; default the same claim."""
    path: str = Field(default="", max_length=512)
    """Directory inside the target claim to restore into (relative, no '..'); default its root."""
    overwrite: bool = False
    """Restore into a non-empty directory, replacing files of the same name; without it a non-empty target
    is an error."""

    @model_validator(mode="after")
    def _path_stays_inside(self) -> VolumeRestore:
        if self.path:
            normalised = relative_volume_path(self.path, f"volumes[{self.claim_name}].path")
            self.path = "" if normalised == "." else normalised
        return self

    @property
    def target_claim(self) -> str:
        return self.target_claim_name or self.claim_name


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


class RestoreInclude(ApiModel):
    """Restore only some objects of a logical backup (a selective restore via pg_restore's list)."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "(has(self.schemas) && size(self.schemas) > 0) || (has(self.tables) && size(self.tables) > 0)",
         "message": "include: name at least one schema or table"}
    ]}}

    schemas: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(default_factory=list, max_length=100)
    """Schemas whose tables and sequences are restored, e.g. [sales]."""
    tables: list[Annotated[str, Field(min_length=1, max_length=127, pattern=r"^[^.]+(\.[^.]+)?$")]] = Field(
        default_factory=list, max_length=500)
    """Tables to restore as 'schema.table' or 'table' (= public.table), with their data, sequences, indexes,
    constraints, defaults and triggers; foreign keys only when the referenced table is restored too."""

    @model_validator(mode="after")
    def _names_something(self) -> RestoreInclude:
        if not self.schemas and not self.tables:
            raise ValueError("include: name at least one schema or table")
        return self


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
    no_owner: bool = False
    """Do not give the restored objects (and the database) their original owners: everything belongs to the
    restoring user (pg_restore --no-owner). Needed when that user is not a superuser and not a member of the
    owners' roles; off by default, so a restore never changes ownership without being asked to. Point-in-time
    copies are always restored this way."""
    no_privileges: bool = False
    """Do not restore the backup's GRANTs and REVOKEs (pg_restore --no-privileges), on the objects and on the
    database: everything gets the default privileges, which can be wider than before (a REVOKE from PUBLIC is
    not replayed). Off by default. Also for point-in-time copies."""
    include: RestoreInclude | None = None
    """Restore only these schemas/tables of a logical backup (into a new database, or with target.overwrite
    replacing just those tables of the existing one); the rest of the target is left untouched."""
    extensions: list[str] = Field(default_factory=list, max_length=64)
    """Extensions to create before data is loaded when missing, e.g. vector, pg_trgm."""
    checks: list[SqlCheck] = Field(default_factory=list, max_length=100)
    """SQL checks to run after the restore."""
    jobs: int = Field(default=2, ge=1, le=32)
    """pg_restore runs working side by side. A custom-format dump is staged in the Job's scratch volume when it
    fits (jobTemplate.scratchSizeLimit of the policy, and the node's disk) and loaded while it arrives, big tables
    split across the jobs; otherwise it is streamed from storage with one job. A directory-format dump is always
    extracted into scratch first (pg_restore -j). 1: always stream, no scratch needed for custom-format dumps."""
    dry_run: bool = False
    """Resolve and report the plan, change nothing."""
    volumes: list[VolumeRestore] = Field(default_factory=list, max_length=20)
    """Application volumes of the backup to restore (after the databases), each into a claim of your choice."""

    @model_validator(mode="after")
    def _volume_targets_once(self) -> RestoreRequestSpec:
        targets = [(volume.target_claim, volume.path) for volume in self.volumes]
        if len(set(targets)) != len(targets):
            raise ValueError("volumes restores two claims into the same targetClaimName and path")
        return self
    quiesce: Quiesce | None = None
    """Workloads to scale to zero while an overwrite restore (target.overwrite) runs; their replica counts are
    recorded in status first and put back afterwards, also when the restore fails."""
    hooks: RestoreHooks | None = None
    """Containers run as Jobs before (preRestore) and after (postRestore) the restore Job."""
    from_copy: str | None = Field(default=None, min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Read the backup from this copy (BackupPolicy.spec.copies[].name) instead of the primary storage, e.g.
    when the primary bucket is lost; a name the policy does not have fails the restore with the known names."""


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


class QuiescedWorkload(StatusModel):
    """A workload stopped for the restore, with the replica count it gets back."""

    kind: Literal["Deployment", "StatefulSet"]
    """Deployment or StatefulSet."""
    name: str
    """Its name (same namespace)."""
    replicas: int
    """Replicas it had before the restore; it is scaled back to this."""
    restored: bool = False
    """True once it was scaled back."""


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
    """Ready (reason names the step or the failure), SpecChanged, Quiesced, Hooks."""
    plan: RestorePlan | None = None
    """The plan."""
    result: RestoreResult | None = None
    """The result."""
    job_name: str | None = None
    """The restore Job."""
    duration: str | None = None
    """How long the restore took, for people ('1.6s', '1m13s', '2h3m'; the DURATION column); the exact
    seconds are in result.restoreSeconds."""
    quiesce: list[QuiescedWorkload] | None = None
    """Workloads scaled to zero for the restore and their previous replica counts (recorded before scaling)."""
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
