"""The manifest: one versioned JSON document per backup, written LAST as its commit marker.

Everything the operator shows about a backup can be rebuilt from these. Keys are snake_case (a file
format of ours, read with jq), unknown fields from newer versions are ignored, `version` changes only on
incompatible changes.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.storage.pipeline import StoredObject
from pgbackup.runner.common.timestamps import as_utc

MANIFEST_NAME = "manifest.json"
VERIFICATION_NAME = "verification.json"  # reserved for restore verification, written beside the manifest

Verification = Literal["passed", "failed"]
"""The outcome verification.json records; a backup without one has not been verified (yet)."""

BACKUP_ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")

ObjectKind = Literal["database", "globals", "base", "wal", "other", "volume"]

BackupPurpose = Literal["scheduled", "on-demand", "pre-restore", "imported"]
"""Why a backup exists. 'scheduled' and 'on-demand' are the policy's own full backups: only they become
`latest` and count for the retention rules. 'pre-restore' (the safety backup a RestoreRequest takes before an
overwrite) and 'imported' (`pgbackup import`) have their own retention (runner/catalog/retention.py)."""
OWN_PURPOSES: frozenset[str] = frozenset({"scheduled", "on-demand"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ManifestObject(_Model):
    """One stored object of a backup."""

    key: str
    """Key relative to the backup's directory, e.g. 'orders.dump.zst.age'."""
    size: int = Field(ge=0)
    """Stored bytes (after compression and encryption)."""
    raw_size: int = Field(ge=0)
    """Bytes before compression."""
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 of the stored bytes (`sha256sum` of the downloaded object matches it)."""
    compression: Literal["zstd", "gzip", "none"]
    encrypted: bool
    kind: ObjectKind
    database: str | None = None
    """The database a 'database' object holds."""
    volume: str | None = None
    """The claim a 'volume' object holds (BackupPolicy spec.volumes[].claimName)."""

    @classmethod
    def from_stored(
        cls, stored: StoredObject, backup_id: str, *, kind: ObjectKind, database: str | None = None,
        volume: str | None = None,
    ) -> ManifestObject:
        """The manifest entry for what store_stream returned (key made relative to '<backup_id>/')."""
        prefix = f"{backup_id}/"
        if not stored.key.startswith(prefix):
            raise ValueError(f"object {stored.key} is not inside backup {backup_id}/")
        return cls(
            key=stored.key[len(prefix):],
            size=stored.size,
            raw_size=stored.raw_size,
            sha256=stored.sha256,
            compression=stored.compression,  # type: ignore[arg-type]
            encrypted=stored.encrypted,
            kind=kind,
            database=database,
            volume=volume,
        )


class DatabaseGrant(_Model):
    """One entry of a database's access privileges (GRANT ... ON DATABASE)."""

    grantee: str
    """Role name, or 'PUBLIC'."""
    privileges: list[str] = Field(default_factory=list)
    """CREATE, CONNECT, TEMPORARY."""
    grantable: list[str] = Field(default_factory=list)
    """The privileges held WITH GRANT OPTION."""


class DatabaseProperties(_Model):
    """Database-level properties that a dump restored without --create does not carry: recorded at backup
    time from pg_database / pg_db_role_setting and re-applied to the database a restore creates."""

    owner: str | None = None
    encoding: str | None = None
    collate: str | None = None
    ctype: str | None = None
    locale_provider: Literal["libc", "icu", "builtin"] | None = None
    locale: str | None = None
    """ICU (or, from PostgreSQL 17, builtin) locale: daticulocale / datlocale."""
    icu_rules: str | None = None
    connection_limit: int = -1
    acl: list[DatabaseGrant] | None = None
    """GRANTs on the database; None = never changed (the default privileges: PUBLIC may CONNECT and TEMPORARY)."""
    settings: list[str] = Field(default_factory=list)
    """ALTER DATABASE ... SET, as 'name=value' (pg_db_role_setting.setconfig)."""
    role_settings: dict[str, list[str]] = Field(default_factory=dict)
    """ALTER ROLE r IN DATABASE ... SET, per role, as 'name=value'."""
    comment: str | None = None


class DatabaseInfo(_Model):
    """What a logical backup recorded about one database (for verification and restore)."""

    name: str
    size_bytes: int = Field(ge=0)
    """pg_database_size at backup time."""
    extensions: dict[str, str] = Field(default_factory=dict)
    """Extension name -> version."""
    row_counts: dict[str, int] = Field(default_factory=dict)
    """Exact row counts keyed 'schema.table'."""
    dump_format: str = "custom"
    """pg_dump format: custom, directory or plain (SQL, imported dumps)."""
    properties: DatabaseProperties | None = None
    """Owner, encoding and locale, privileges, settings, comment (None in backups taken before they were recorded)."""


BACKUP_MANIFEST_OBJECT = "backup_manifest"
"""pg_basebackup's own backup_manifest, stored beside base.tar (kind 'other'): an incremental backup of the next
run is taken against it (`pg_basebackup --incremental`)."""


class PhysicalInfo(_Model):
    """What pg_basebackup reported, and where the backup stands in its chain of incremental backups."""

    start_lsn: str
    stop_lsn: str
    timeline: int
    start_wal_segment: str | None = None
    stop_wal_segment: str | None = None
    backup_label: str = ""
    system_identifier: str | None = None
    """The cluster's system identifier (from pg_basebackup's backup_manifest; None before PostgreSQL 13 manifests
    carried it, and in backups taken before it was recorded)."""
    incremental_of: str | None = None
    """The backup this one is an incremental of (its parent); None for a full backup."""
    chain_root: str | None = None
    """The full backup the chain starts with (its own id for a full backup; None in backups taken before chains)."""
    chain_length: int = Field(default=1, ge=1)
    """Position in the chain: 1 for the full backup, 2 for its first incremental, ..."""
    full_reason: str | None = None
    """Why a full backup was taken although spec.physical.fullEvery asked for an incremental (None otherwise)."""

    @property
    def incremental(self) -> bool:
        return self.incremental_of is not None


class Manifest(_Model):
    """One complete backup."""

    version: Literal[1] = 1
    id: str = Field(pattern=BACKUP_ID_PATTERN.pattern)
    policy: str
    namespace: str
    method: Literal["logical", "physical"]
    started_at: datetime
    completed_at: datetime
    duration_seconds: float = Field(ge=0)
    size_bytes: int = Field(ge=0)
    """Sum of the stored sizes of all objects (filled from objects when omitted)."""
    raw_size_bytes: int = Field(ge=0)
    """Sum of the raw sizes (filled from objects when omitted)."""
    objects: list[ManifestObject]
    databases: list[DatabaseInfo] = Field(default_factory=list)
    server_version: str
    tools: dict[str, str] = Field(default_factory=dict)
    """Tool versions: pg_dump / pg_basebackup, pgbackup."""
    compression: str
    encryption_recipients: list[str] = Field(default_factory=list)
    """Public age keys the objects are encrypted for (never a private key)."""
    physical: PhysicalInfo | None = None
    imported: bool = False
    """Registered by `pgbackup import` from an existing dump file: no row counts were recorded."""
    source: str | None = None
    """Imported backups: the file it was imported from (name and SHA-256 as given by its .sha256 file)."""
    purpose: BackupPurpose = "scheduled"
    """Why it was taken; manifests written before this field existed load as 'imported' when `imported` is
    set, else 'scheduled'."""
    verification: Verification | None = None
    """Set from verification.json: how the restore verification ended, None when none ran yet (not stored by the
    backup)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def verified(self) -> bool:
        """Whether a restore verification passed."""
        return self.verification == "passed"

    @model_validator(mode="before")
    @classmethod
    def _fill_totals(cls, data: Any) -> Any:
        if isinstance(data, dict) and "objects" in data:
            objects = [o if isinstance(o, dict) else o.model_dump() for o in data["objects"]]
            data = dict(data)
            data.setdefault("purpose", "imported" if data.get("imported") else "scheduled")
            data.setdefault("size_bytes", sum(int(o["size"]) for o in objects))
            data.setdefault("raw_size_bytes", sum(int(o["raw_size"]) for o in objects))
            if "duration_seconds" not in data and "started_at" in data and "completed_at" in data:
                started, completed = _as_datetime(data["started_at"]), _as_datetime(data["completed_at"])
                data["duration_seconds"] = max(0.0, (completed - started).total_seconds())
        return data

    @model_validator(mode="after")
    def _no_private_keys(self) -> Manifest:
        for recipient in self.encryption_recipients:
            if recipient.upper().startswith("AGE-SECRET-KEY"):
                raise ValueError("encryption_recipients holds a private age key: only public keys (age1...) belong here")
        return self

    def to_json(self) -> bytes:
        """The stored form (verification and verified are derived and never stored)."""
        return self.model_dump_json(indent=2, exclude={"verification", "verified"}).encode()

    @property
    def own_full_backup(self) -> bool:
        """A backup the policy took of what it names (scheduled or on-demand): one that can become `latest`."""
        return self.purpose in OWN_PURPOSES

    def object_by_kind(self, kind: ObjectKind) -> list[ManifestObject]:
        return [o for o in self.objects if o.kind == kind]

    @property
    def backup_type(self) -> Literal["full", "incr"]:
        """'incr' for an incremental physical backup (restored through its chain), else 'full'."""
        return "incr" if self.physical is not None and self.physical.incremental else "full"

    @property
    def incremental_of(self) -> str | None:
        """The parent of an incremental physical backup, else None."""
        return self.physical.incremental_of if self.physical is not None else None

    def backup_manifest_object(self) -> ManifestObject | None:
        """The stored copy of pg_basebackup's backup_manifest (physical backups from PostgreSQL 13 on, taken by a
        runner that stores it), else None."""
        return next((o for o in self.objects if o.kind == "other"
                     and o.key.split(".", 1)[0] == BACKUP_MANIFEST_OBJECT), None)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))  # "Z" included (Python 3.11)


def volume_object_name(claim: str) -> str:
    """The name (under the backup's id) of the object holding application volume `claim`."""
    return f"volumes/{claim}.tar"


def volume_object(manifest: Manifest, claim: str) -> ManifestObject:
    """The object of `manifest` holding application volume `claim`; a usage error listing the ones it holds."""
    for obj in manifest.object_by_kind("volume"):
        if obj.volume == claim:
            return obj
    held = sorted(str(o.volume) for o in manifest.object_by_kind("volume"))
    raise UsageError(f"backup {manifest.id} holds no volume {claim!r}"
                     + (f" (it holds: {', '.join(held)})" if held else " (it holds no volumes)"),
                     reason="VolumeNotInBackup")


def new_backup_id(now: datetime, existing: Collection[str] = ()) -> str:
    """'YYYYMMDDTHHMMSSZ' in UTC; '-1', '-2', ... appended while the id is taken."""
    base = as_utc(now).strftime("%Y%m%dT%H%M%SZ")
    taken = set(existing)
    candidate, n = base, 0
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def backup_id_sort_key(backup_id: str) -> tuple[str, int]:
    """Chronological order of ids ('...Z-10' after '...Z-2')."""
    base, _, suffix = backup_id.partition("-")
    return base, int(suffix) if suffix.isdigit() else 0


def backup_id_time(backup_id: str) -> datetime:
    """When a backup started, as encoded in its id."""
    return datetime.strptime(backup_id.partition("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
