"""BackupPolicy (pgbackup.dev/v1alpha1): what to back up, when, where, how long to keep it, how to prove it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from pgbackup.api.base import (
    ApiModel,
    Condition,
    CronSchedule,
    DnsName,
    Duration,
    StatusModel,
)
from pgbackup.api.hooks import BackupHooks
from pgbackup.api.refs import DatabaseCredentialsRef, S3CredentialsRef, SecretKeyRef

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
ChecksumMode = Literal["when_supported", "when_required"]


class DatabaseSpec(ApiModel):
    """The PostgreSQL server to back up: in the cluster, on a VM or a managed service."""

    host: str = Field(min_length=1, max_length=253)
    """Host name or IP address of the server."""
    port: int = Field(default=5432, ge=1, le=65535)
    """TCP port of the server."""
    databases: list[str] = Field(default_factory=list, max_length=500, json_schema_extra={"x-kubernetes-list-type": "set"})
    """Databases to back up; empty means every non-template database (logical method) plus globals."""
    credentials_secret: DatabaseCredentialsRef
    """Secret with the user and password the backup connects as."""
    ssl_mode: SslMode = "prefer"
    """libpq sslmode."""
    ssl_root_cert_secret: SecretKeyRef | None = None
    """Optional Secret key holding the CA certificate for verify-ca / verify-full."""

    @model_validator(mode="after")
    def _databases_are_names(self) -> DatabaseSpec:
        for name in self.databases:
            if not name or len(name) > 63:
                raise ValueError(f"database name {name!r} must be 1 to 63 characters")
        if len(set(self.databases)) != len(self.databases):
            raise ValueError("databases lists a name twice")
        return self


class S3Storage(ApiModel):
    """An S3-compatible bucket: AWS, MinIO, Ceph RGW, Hetzner, Cloudflare R2, ..."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "!has(self.kmsKeyId) || (has(self.serverSideEncryption) && self.serverSideEncryption == 'aws:kms')",
         "message": "kmsKeyId is set but serverSideEncryption is not 'aws:kms'"},
    ]}}

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-_]*[a-z0-9]$")
    """Bucket name; it must exist."""
    prefix: str | None = Field(default=None, max_length=512, pattern=r"^[^/].*[^/]$|^[^/]?$")
    """Key prefix; backups live under <prefix>/<backup-id>/... (no leading or trailing '/'). Unset:
    '<namespace>/<policy name>', so policies sharing a bucket never share a location; '' is the bucket root."""
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/.*)?$")
    """Endpoint URL for non-AWS services, e.g. https://minio.minio.svc:9000; empty for AWS."""
    region: str = Field(default="us-east-1", min_length=1, max_length=64)
    """Region name; most non-AWS services accept any value."""
    force_path_style: bool = False
    """Use path-style addressing (bucket in the path), as MinIO and Ceph usually need."""
    credentials_secret: S3CredentialsRef | None = None
    """Secret with accessKeyId / secretAccessKey; empty to use the pod's identity (IRSA, instance profile)."""
    part_size_mib: int = Field(default=64, ge=5, le=5120)
    """Multipart upload part size in MiB (S3 allows 5 MiB to 5 GiB; 10000 parts at most per object)."""
    storage_class: str | None = Field(default=None, pattern=r"^[A-Z_]+$")
    """Storage class of uploaded objects, e.g. STANDARD_IA."""
    server_side_encryption: Literal["AES256", "aws:kms"] | None = None
    """Ask the service to encrypt objects at rest."""
    kms_key_id: str | None = None
    """KMS key for server-side encryption aws:kms."""
    request_checksum_calculation: ChecksumMode = "when_required"
    """boto3 request checksums; 'when_required' keeps MinIO, Ceph, Hetzner and R2 working."""
    response_checksum_validation: ChecksumMode = "when_required"
    """boto3 response checksum validation; 'when_required' for the same services."""
    ca_bundle_secret: SecretKeyRef | None = None
    """Secret key with a CA bundle (PEM) for endpoints with a private certificate authority."""

    @model_validator(mode="after")
    def _kms_needs_sse(self) -> S3Storage:
        if self.kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError("kmsKeyId is set but serverSideEncryption is not 'aws:kms'")
        return self


class VolumeStorage(ApiModel):
    """A PersistentVolumeClaim (e.g. NFS or a ReadWriteMany volume) mounted into backup Jobs."""

    claim_name: DnsName
    """Name of the PersistentVolumeClaim in the policy's namespace."""
    path: str = Field(default="", max_length=512, pattern=r"^[^/].*$|^$")
    """Directory inside the volume (relative); backups live under <path>/<backup-id>/..."""


class Storage(ApiModel):
    """Where backups go: exactly one of s3 or volume."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "has(self.s3) != has(self.volume)", "message": "set exactly one of storage.s3 or storage.volume"}
    ]}}

    s3: S3Storage | None = None
    """An S3-compatible bucket."""
    volume: VolumeStorage | None = None
    """A PersistentVolumeClaim."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Storage:
        if (self.s3 is None) == (self.volume is None):
            raise ValueError("set exactly one of storage.s3 or storage.volume")
        return self


class Compression(ApiModel):
    """Compression of every object before encryption and upload."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "!(has(self.level) && has(self.algorithm) && self.algorithm == 'gzip' && self.level > 9)",
         "message": "compression.level is out of range for gzip (1-9)"},
        {"rule": "!(has(self.level) && has(self.algorithm) && self.algorithm == 'none')",
         "message": "compression.level makes no sense with algorithm 'none'"},
    ]}}

    algorithm: Literal["zstd", "gzip", "none"] = "zstd"
    """zstd (fast, recommended), gzip (compatible) or none."""
    level: int | None = Field(default=None, ge=1, le=22)
    """zstd: 1-22 (default 3); gzip: 1-9 (default 6); not allowed with none."""
    threads: int = Field(default=0, ge=0, le=64)
    """zstd worker threads; 0 = one per available CPU."""

    @model_validator(mode="after")
    def _level_fits(self) -> Compression:
        if self.level is not None:
            if self.algorithm == "gzip" and self.level > 9:
                raise ValueError(f"compression.level {self.level} is out of range for gzip (1-9)")
            if self.algorithm == "none":
                raise ValueError("compression.level makes no sense with algorithm 'none'")
        return self

    def effective_level(self) -> int:
        if self.level is not None:
            return self.level
        return {"zstd": 3, "gzip": 6, "none": 0}[self.algorithm]


class Encryption(ApiModel):
    """age encryption (age-encryption.org); decryptable in an emergency with the stock `age` tool."""

    recipients: list[str] = Field(min_length=1, max_length=16)
    """Public age keys (age1...); a backup Job needs only these. Several keys allow rotation."""
    identity_secret: SecretKeyRef | None = None
    """Secret key holding the private age identity; only restore and verification Jobs mount it."""

    @model_validator(mode="after")
    def _recipients_look_right(self) -> Encryption:
        for recipient in self.recipients:
            if not recipient.startswith("age1") or len(recipient) < 20:
                raise ValueError(f"encryption.recipients: {recipient[:12]!r}... is not an age public key (age1...)")
        return self


class Retention(ApiModel):
    """Which backups to keep. A backup is kept if any rule keeps it; the newest successful and the newest
    verified backup are never deleted."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "has(self.keepLast) || has(self.daily) || has(self.weekly) || has(self.monthly) || has(self.maxAge)",
         "message": "retention needs at least one rule: keepLast, daily, weekly, monthly or maxAge"},
    ]}}

    keep_last: int | None = Field(default=None, ge=1, le=10000)
    """Keep the N newest backups."""
    daily: int | None = Field(default=None, ge=1, le=10000)
    """Keep the newest backup of each of the last N days that have one."""
    weekly: int | None = Field(default=None, ge=1, le=10000)
    """Keep the newest backup of each of the last N ISO weeks that have one."""
    monthly: int | None = Field(default=None, ge=1, le=10000)
    """Keep the newest backup of each of the last N months that have one."""
    max_age: Duration | None = None
    """Keep every backup younger than this, e.g. '90d'."""

    @model_validator(mode="after")
    def _at_least_one_rule(self) -> Retention:
        if all(v is None for v in (self.keep_last, self.daily, self.weekly, self.monthly, self.max_age)):
            raise ValueError("retention needs at least one rule: keepLast, daily, weekly, monthly or maxAge")
        return self


class LogicalOptions(ApiModel):
    """Options of the logical method (pg_dump per database)."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "!has(self.jobs) || self.jobs == 1 || (has(self.format) && self.format == 'directory')",
         "message": "logical.jobs > 1 needs logical.format 'directory'"},
    ]}}

    format: Literal["custom", "directory"] = "custom"
    """pg_dump format: custom streams without a temporary copy; directory allows parallel dumps (needs scratch space)."""
    jobs: int = Field(default=1, ge=1, le=32)
    """Parallel pg_dump jobs (directory format only)."""
    globals: bool = True
    """Also dump roles and tablespaces with pg_dumpall --globals-only."""
    no_role_passwords: bool = False
    """Dump roles without passwords (needed on managed services that forbid reading pg_authid)."""

    @model_validator(mode="after")
    def _jobs_need_directory(self) -> LogicalOptions:
        if self.jobs > 1 and self.format != "directory":
            raise ValueError("logical.jobs > 1 needs logical.format 'directory'")
        return self


class PhysicalOptions(ApiModel):
    """Options of the physical method (pg_basebackup of the whole cluster)."""

    full_every: int | None = Field(default=None, ge=1, le=1000)
    """Incremental backups: a chain is one full backup followed by at most fullEvery-1 incremental backups
    (`pg_basebackup --incremental`), then the next backup is full again. Unset (or 1): every backup is full.
    Needs PostgreSQL 17+ with `summarize_wal = on` on the source; when an incremental is not possible (older
    server, summarize_wal off, no earlier full backup, ...) the backup is taken as a full backup, and the run's
    log and the manifest (physical.full_reason) say why: a backup never fails for that. Restores combine the
    chain with pg_combinebackup; retention keeps every backup a kept incremental builds on."""


class WalSpec(ApiModel):
    """Continuous WAL archiving for point-in-time recovery."""

    enabled: bool = False
    """Run a WAL streaming Deployment (pg_receivewal) for this policy."""
    slot_name: str | None = Field(default=None, max_length=63, pattern=r"^[a-z0-9_]+$")
    """Physical replication slot that keeps the server's WAL until storage holds it (the streamer advances it only
    to the end of the newest segment stored); default derived from the policy name. pg_receivewal streams through
    a second slot, `<slotName>_recv`: allow two slots per policy in max_replication_slots."""
    partial_upload_interval: Duration = "30s"
    """How often the current .partial segment is shipped (bounds the RPO)."""
    max_slot_retained: str = Field(default="10Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$")
    """Warn when the replication slot holds back more WAL than this on the database server."""


class SqlCheck(ApiModel):
    """A SQL query run after a restore; it passes when it returns a non-empty result whose first value is not false."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-zA-Z0-9]([-_a-zA-Z0-9]*[a-zA-Z0-9])?$")
    """Name shown in results."""
    database: str = Field(min_length=1, max_length=63)
    """Database to run the query in."""
    sql: str = Field(min_length=1, max_length=4096)
    """The query, e.g. `select count(*) > 0 from orders`."""


class VerifySpec(ApiModel):
    """Prove backups by restoring them into a throwaway PostgreSQL and checking them."""

    enabled: bool = False
    """Verify backups."""
    schedule: str = ""
    """Cron schedule for verification; empty = right after each successful backup."""
    checks: list[SqlCheck] = Field(default_factory=list, max_length=100)
    """SQL checks to run against the restored copy."""
    compare_row_counts: bool = True
    """Compare row counts per table with those recorded at backup time."""

    @model_validator(mode="after")
    def _schedule_is_cron(self) -> VerifySpec:
        if self.schedule:
            from pgbackup.api.base import _check_cron

            _check_cron(self.schedule)
        return self


class Objectives(ApiModel):
    """Recovery objectives measured against real backups, WAL and verification restores."""

    rpo: Duration | None = None
    """Recovery point objective: the newest verified recovery point may be at most this old."""
    rto: Duration | None = None
    """Recovery time objective: the latest verification restore may take at most this long."""


NotificationEvent = Literal["BackupFailed", "BackupSucceeded", "VerificationFailed", "ObjectivesMissed", "WALArchivingFailed"]


def _default_notification_events() -> list[NotificationEvent]:
    return ["BackupFailed", "VerificationFailed"]


class WebhookNotification(ApiModel):
    """A webhook that receives JSON events."""

    url_secret: SecretKeyRef
    """Secret key holding the webhook URL (URLs often embed tokens)."""
    events: list[NotificationEvent] = Field(default_factory=_default_notification_events)
    """Event types to send."""


class Notifications(ApiModel):
    """Where to tell people about failures."""

    webhook: WebhookNotification | None = None
    """A JSON webhook."""


def relative_volume_path(path: str, what: str) -> str:
    """`path` normalised ('a//b/' -> 'a/b'), refused when absolute or holding a '..' component."""
    if path.startswith("/") or "\0" in path:
        raise ValueError(f"{what} {path!r} must be relative to the volume root (no leading '/')")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{what} {path!r} must stay inside the volume (no '..')")
    return "/".join(parts) or "."


class AppVolume(ApiModel):
    """An application PersistentVolumeClaim (uploads, config, ...) copied into each backup as a tar object.
    The backup Job mounts it read-only; a ReadWriteOnce claim used by a pod on another node cannot be mounted."""

    claim_name: DnsName
    """Name of the PersistentVolumeClaim in the policy's namespace."""
    paths: list[str] = Field(default_factory=lambda: ["."], min_length=1, max_length=50)
    """Files or directories to copy, relative to the volume root (no '..'); default the whole volume ('.')."""
    exclude: list[str] = Field(default_factory=list, max_length=100)
    """Glob patterns to leave out, matched against the path relative to the volume root and against the
    file name, e.g. '*.tmp', 'cache/*'. An excluded directory is not descended into."""

    @model_validator(mode="after")
    def _paths_stay_inside(self) -> AppVolume:
        self.paths = [relative_volume_path(path, f"volumes[{self.claim_name}].paths entry") for path in self.paths]
        for pattern in self.exclude:
            if not pattern or len(pattern) > 256:
                raise ValueError(f"volumes[{self.claim_name}].exclude: {pattern!r} must be 1 to 256 characters")
        return self


class JobTemplate(ApiModel):
    """Overrides for the backup, verification and restore Jobs."""

    resources: dict[str, dict[str, int | str]] = Field(default_factory=dict)
    """Container resources (requests / limits), as in a Pod spec."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector of the Job's pod."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations of the Job's pod, as in a Pod spec."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Affinity of the Job's pod, as in a Pod spec."""
    service_account_name: DnsName | None = None
    """ServiceAccount of the Job's pod; default: the chart's backup ServiceAccount."""
    priority_class_name: DnsName | None = None
    """PriorityClass of the Job's pod."""
    active_deadline_seconds: int = Field(default=6 * 3600, ge=60, le=7 * 86400)
    """A Job running longer than this is stopped and recorded as failed."""
    backoff_limit: int = Field(default=1, ge=0, le=10)
    """Retries of a failed backup pod."""
    starting_deadline_seconds: int = Field(default=600, ge=10, le=86400)
    """A scheduled run that could not start within this many seconds is skipped."""
    successful_jobs_history_limit: int = Field(default=3, ge=0, le=100)
    """Finished successful Jobs to keep."""
    failed_jobs_history_limit: int = Field(default=3, ge=0, le=100)
    """Finished failed Jobs to keep."""
    scratch_size_limit: str = Field(default="10Gi", pattern=r"^[0-9]+(Ki|Mi|Gi|Ti)?$")
    """Size limit of the emptyDir scratch volume (used by directory-format dumps and verification)."""


MAX_COPIES = 4
COPY_NAME_MAX = 40  # it becomes part of env names (PGBACKUP_COPY_<NAME>_...) and mount paths
COPY_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class CopySpec(ApiModel):
    """A second (third, ...) copy of every completed backup in another storage (3-2-1): exactly one of s3 or
    volume, with its own retention. Objects are copied byte for byte (SHA-256 verified), the manifest last."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "has(self.s3) != has(self.volume)", "message": "set exactly one of copies[].s3 or copies[].volume"}
    ]}}

    name: str = Field(min_length=1, max_length=COPY_NAME_MAX, pattern=COPY_NAME_PATTERN)
    """Name of the copy (a DNS label, unique in the policy); RestoreRequest.spec.fromCopy and
    `pgbackup list --copy` refer to it."""
    s3: S3Storage | None = None
    """An S3-compatible bucket (its own credentialsSecret), e.g. in another region or account."""
    volume: VolumeStorage | None = None
    """A PersistentVolumeClaim, mounted read-write into backup Jobs."""
    retention: Retention
    """Which backups the copy keeps, applied to the copy only (the primary keeps spec.retention)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> CopySpec:
        if (self.s3 is None) == (self.volume is None):
            raise ValueError(f"set exactly one of copies[].s3 or copies[].volume (copy {self.name!r})")
        return self

    @property
    def storage(self) -> Storage:
        """The copy's storage in the shape of spec.storage (for the storage factory)."""
        return Storage(s3=self.s3, volume=self.volume)


def default_s3_prefix(namespace: str, policy: str) -> str:
    """The key prefix of a policy whose s3.prefix is unset: '<namespace>/<policy>'."""
    return f"{namespace}/{policy}"


def _with_default_prefix(s3: S3Storage | None, namespace: str, policy: str) -> S3Storage | None:
    if s3 is None or s3.prefix is not None:
        return s3
    return s3.model_copy(update={"prefix": default_s3_prefix(namespace, policy)})


class BackupPolicySpec(ApiModel):
    """What to back up, when, where to, for how long, and how to prove it restores."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "!has(self.physical) || !has(self.physical.fullEvery) || "
                 "(has(self.method) && self.method == 'physical')",
         "message": "physical.fullEvery needs method 'physical' (incremental backups are pg_basebackup's)"},
    ]}}

    database: DatabaseSpec
    """The PostgreSQL server to back up."""
    schedule: CronSchedule
    """Cron schedule of backups, e.g. '0 2 * * *' (CronJob syntax)."""
    time_zone: str = Field(default="Etc/UTC", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+\-/]+$")
    """IANA time zone the schedule is read in."""
    suspend: bool = False
    """Pause scheduled backups (on-demand backups still run)."""
    method: Literal["logical", "physical"] = "logical"
    """logical: pg_dump per database plus globals; physical: pg_basebackup of the whole cluster."""
    logical: LogicalOptions = Field(default_factory=LogicalOptions)
    """Options of the logical method."""
    physical: PhysicalOptions = Field(default_factory=PhysicalOptions)
    """Options of the physical method."""
    storage: Storage
    """Where backups are stored."""
    compression: Compression = Field(default_factory=Compression)
    """Compression of backup objects."""
    encryption: Encryption | None = None
    """Optional age encryption of backup objects."""
    retention: Retention
    """Which backups to keep."""
    wal: WalSpec = Field(default_factory=WalSpec)
    """Continuous WAL archiving."""
    verify: VerifySpec = Field(default_factory=VerifySpec)
    """Restore verification."""
    objectives: Objectives = Field(default_factory=Objectives)
    """Recovery objectives."""
    notifications: Notifications = Field(default_factory=Notifications)
    """Notifications."""
    job_template: JobTemplate = Field(default_factory=JobTemplate)
    """Overrides for the Jobs."""
    hooks: BackupHooks | None = None
    """Containers run around each backup: preBackup as an init container of the backup pod, postBackup as a
    Job the operator creates once the backup Job has been recorded."""
    volumes: list[AppVolume] = Field(default_factory=list, max_length=20)
    """Application PersistentVolumeClaims to copy into every backup after the databases (tar, same
    compression, encryption and checksums); each claim at most once."""

    @model_validator(mode="after")
    def _full_every_is_physical(self) -> BackupPolicySpec:
        if self.physical.full_every is not None and self.method != "physical":
            raise ValueError("physical.fullEvery needs method 'physical' (incremental backups are pg_basebackup's)")
        return self

    @model_validator(mode="after")
    def _volumes_once(self) -> BackupPolicySpec:
        names = [volume.claim_name for volume in self.volumes]
        if len(set(names)) != len(names):
            raise ValueError("volumes lists a claimName twice")
        return self
    copies: list[CopySpec] = Field(
        default_factory=list,
        max_length=MAX_COPIES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Further copies of every completed backup in other storages (at most 4), each with its own retention.
    A copy that fails never fails the backup: it is retried (caught up) at the next backup."""

    @model_validator(mode="after")
    def _copy_names_unique(self) -> BackupPolicySpec:
        names = [copy.name for copy in self.copies]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"copies: names must be unique, {', '.join(duplicates)} is used more than once")
        return self

    def for_policy(self, namespace: str, name: str) -> BackupPolicySpec:
        """This spec with the defaults that depend on the policy's identity filled in: an unset s3.prefix
        (of the storage and of every copy) becomes '<namespace>/<name>'."""
        storage = self.storage.model_copy(update={"s3": _with_default_prefix(self.storage.s3, namespace, name)})
        copies = [c.model_copy(update={"s3": _with_default_prefix(c.s3, namespace, name)}) for c in self.copies]
        return self.model_copy(update={"storage": storage, "copies": copies})


# ---------------------------------------------------------------- status


class VerificationResult(StatusModel):
    """The outcome of restoring one backup into a throwaway PostgreSQL."""

    phase: Literal["Pending", "Running", "Passed", "Failed", "NotPossible"]
    """Pending, Running, Passed, Failed, or NotPossible: the operator image cannot restore this backup (no
    PostgreSQL server of the backup's major version); the backup itself was not judged."""
    reason: str | None = None
    """RestoreVerified, RowCountMismatch, CheckFailed or RestoreFailed; for NotPossible ServerBinariesMissing; an
    environment problem (e.g. IdentityMissing) when the backup could not be judged."""
    message: str | None = None
    """Details when it failed."""
    restore_seconds: float | None = None
    """How long the restore took."""
    checked_at: datetime | None = None
    """When the verification finished."""


class BackupRecord(StatusModel):
    """One backup in the catalog, as summarised in status."""

    id: str
    """Backup id (UTC timestamp, e.g. 20261123T020000Z)."""
    method: Literal["logical", "physical"] | None = None
    """logical or physical."""
    phase: Literal["Completed", "Failed"] = "Completed"
    """Completed or Failed."""
    started_at: datetime | None = None
    """When the backup started."""
    completed_at: datetime | None = None
    """When the backup finished."""
    size_bytes: int | None = None
    """Stored size of all objects."""
    duration_seconds: float | None = None
    """Wall time of the backup."""
    manifest: str | None = None
    """Location of the manifest, e.g. s3://bucket/prefix/<id>/manifest.json."""
    sha256: str | None = None
    """SHA-256 of the manifest."""
    job_name: str | None = None
    """The Job that took it."""
    verification: VerificationResult | None = None
    """Restore verification of this backup."""


class LastBackup(StatusModel):
    """The most recent backup attempt, successful or not."""

    id: str | None = None
    """Backup id (none when the attempt failed before it got one)."""
    phase: Literal["Completed", "Failed"]
    """Completed or Failed."""
    completed_at: datetime | None = None
    """When it finished."""
    size_bytes: int | None = None
    """Stored size."""
    size: str | None = None
    """Stored size, human readable (shown by kubectl get)."""
    verified: bool | None = None
    """Whether a restore verification passed."""
    job_name: str | None = None
    """The Job that ran it."""
    error: str | None = None
    """Why it failed."""


class WalStatus(StatusModel):
    """State of continuous WAL archiving."""

    last_archived_segment: str | None = None
    """Name of the newest archived segment."""
    last_archived_at: datetime | None = None
    """When it was archived."""
    lag_seconds: float | None = None
    """Seconds between the server's current WAL position and the archive."""
    lag_bytes: int | None = None
    """Bytes of WAL not yet archived."""
    slot_retained_bytes: int | None = None
    """WAL the replication slot holds back on the server."""
    gaps: list[str] = Field(default_factory=list)
    """Missing segment ranges, e.g. 000000010000000A000000F3-000000010000000A000000F5."""
    spool_bytes: int | None = None
    """WAL in the streamer's local spool (its scratch emptyDir, limited by jobTemplate.scratchSizeLimit); it grows
    while storage is unreachable; near the limit receiving pauses, which loses nothing: the slot keeps the WAL."""


class Recoverability(StatusModel):
    """The window of time that can be restored."""

    first_point: datetime | None = None
    """Oldest point in time that can be restored."""
    last_point: datetime | None = None
    """Newest point in time that can be restored."""


class Measured(StatusModel):
    """Measured recovery point and time."""

    recovery_point: datetime | None = None
    """Completion time of the newest verified backup (the newest successful one when verification is off): the
    measured RPO is its age, or the age of status.recoverability.lastPoint when WAL archiving is on and that is
    newer. A time rather than an age, so status changes only when a new backup arrives; the metric
    pgbackup_rpo_seconds and `kubectl pgbackup status` show the age."""
    rto_seconds: float | None = None
    """Duration of the latest verification restore."""


class CopyStatus(StatusModel):
    """How far one copy (spec.copies[]) is behind the primary storage, as of the latest backup."""

    name: str
    """The copy's name."""
    last_copied_backup: str | None = None
    """Id of the newest backup present in the copy."""
    last_copied_at: datetime | None = None
    """When the runner last finished copying a backup there."""
    lag_backups: int | None = None
    """Backups in the primary storage not (yet) in the copy; copied at the next backup (catch-up)."""
    error: str | None = None
    """Why the latest copy attempt failed (the backup itself is unaffected)."""


class BackupPolicyStatus(StatusModel):
    """Observed state of a BackupPolicy; written only by the operator."""

    observed_generation: int | None = None
    """The metadata.generation last reconciled."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Ready, LastBackupSucceeded, Verified, WALArchiving, ObjectivesMet, SizeAnomaly (True means look at this)."""
    cron_job_name: str | None = None
    """Name of the CronJob that runs scheduled backups."""
    last_backup: LastBackup | None = None
    """The most recent backup attempt."""
    backups: list[BackupRecord] = Field(default_factory=list, max_length=20)
    """Newest first, at most 20; the full catalog lives in storage."""
    wal: WalStatus | None = None
    """WAL archiving state."""
    recoverability: Recoverability | None = None
    """Restorable time window."""
    measured: Measured | None = None
    """Measured RPO and RTO."""
    backup_now_handled: str | None = None
    """The last pgbackup.dev/backup-now annotation value a Job was created for."""
    copies: list[CopyStatus] = Field(default_factory=list, max_length=MAX_COPIES)
    """State of each copy (spec.copies) as of the latest backup."""


class BackupPolicy(ApiModel):
    """A BackupPolicy resource (for tests and tools; handlers see plain dicts)."""

    model_config = {"extra": "ignore"}
    api_version: Literal["pgbackup.dev/v1alpha1"] = "pgbackup.dev/v1alpha1"
    kind: Literal["BackupPolicy"] = "BackupPolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: BackupPolicySpec
    status: BackupPolicyStatus | None = None
