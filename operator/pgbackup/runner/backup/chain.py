"""Incremental physical backups (PostgreSQL 17+): whether this run takes a full backup or an incremental one, of
which parent, and the parent's backup_manifest that `pg_basebackup --incremental` is given.

A chain is one full backup followed by at most spec.physical.fullEvery - 1 incrementals, each of the backup
before it. An incremental that is impossible (older server, summarize_wal off, no usable parent, an encrypted
parent manifest without the identity to read it, the server refusing it) becomes a full backup with the reason
recorded: a backup never fails because it could not be incremental.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pgbackup.api import jobenv
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import BackupPurpose, Manifest
from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.postgres.facts import ServerInfo
from pgbackup.runner.postgres.tools import major_of
from pgbackup.runner.storage.identity import identity_from

INCREMENTAL_MAJOR = 17
"""pg_basebackup --incremental and pg_combinebackup exist from this major on."""
REFUSED = re.compile(r"manifest|WAL summar|incremental|timeline", re.IGNORECASE)
"""What the server's refusal of an incremental backup says (basebackup_incremental.c): the run falls back to full."""


@dataclass(frozen=True)
class ChainPlan:
    """Where the backup being taken stands in its chain."""

    parent: Manifest | None = None
    """The backup to take an incremental of; None: a full backup."""
    length: int = 1
    full_reason: str | None = None
    """Why a full backup is taken although the policy asked for an incremental (None: none was asked for)."""

    @property
    def root(self) -> str | None:
        """The chain's full backup (None for a full: its own id, known once claimed)."""
        if self.parent is None or self.parent.physical is None:
            return None
        return self.parent.physical.chain_root or self.parent.id

    def as_full(self, reason: str) -> ChainPlan:
        return replace(self, parent=None, length=1, full_reason=reason)


def plan_chain(catalog: Catalog, spec: BackupPolicySpec, server: ServerInfo, *, force_full: bool,
               purpose: BackupPurpose, environ: Mapping[str, str]) -> ChainPlan:
    """Full or incremental (and of which parent) for a physical backup of `spec`, as fullEvery asks."""
    every = spec.physical.full_every
    if every is None or every == 1:
        return ChainPlan()
    plan = ChainPlan()
    reason = _full_reason(catalog, every, server, force_full=force_full, purpose=purpose, environ=environ)
    if isinstance(reason, str):
        log("backup.chain.full", reason=reason, full_every=every)
        return plan.as_full(reason)
    assert reason.physical is not None
    plan = ChainPlan(parent=reason, length=reason.physical.chain_length + 1)
    log("backup.chain.incremental", parent=reason.id, chain_root=plan.root, chain_length=plan.length,
        full_every=every)
    return plan


def _full_reason(catalog: Catalog, every: int, server: ServerInfo, *, force_full: bool, purpose: BackupPurpose,
                 environ: Mapping[str, str]) -> str | Manifest:
    """Why the backup must be full, or the parent it can be an incremental of."""
    if force_full:
        return "a full backup was asked for (pgbackup backup --full)"
    if purpose not in ("scheduled", "on-demand"):
        return f"{purpose} backups are always full"
    if server.major < INCREMENTAL_MAJOR:
        return (f"the server runs PostgreSQL {server.version}: incremental backups need PostgreSQL "
                f"{INCREMENTAL_MAJOR} or later")
    if not server.summarize_wal:
        return "summarize_wal is off on the server: set summarize_wal = on (no restart needed) for incremental backups"
    backups = catalog.backups()
    physical = [m for m in backups if m.method == "physical" and m.own_full_backup]
    if not physical:
        return "no earlier physical backup of this policy to build on: this one starts a chain"
    parent = physical[0]
    info = parent.physical
    if info is None or info.chain_root is None:
        return f"the newest backup {parent.id} was taken before incremental backups were recorded: a chain starts"
    if info.chain_length >= every:
        return (f"the chain of {info.chain_root} holds {info.chain_length} backup(s) (fullEvery {every}): "
                f"a new chain starts")
    if major_of(parent.server_version) != server.major:
        return f"the newest backup {parent.id} is of PostgreSQL {parent.server_version}, the server runs {server.version}"
    if info.system_identifier and server.system_identifier and info.system_identifier != server.system_identifier:
        return (f"the newest backup {parent.id} is of another cluster (system identifier {info.system_identifier}, "
                f"the server's is {server.system_identifier})")
    stored = {m.id for m in backups}
    missing = [b for b in chain_ids(parent, {m.id: m for m in backups}) if b not in stored]
    if missing:
        return f"the chain of the newest backup {parent.id} is incomplete (backup {missing[0]} is missing)"
    manifest_object = parent.backup_manifest_object()
    if manifest_object is None:
        return f"the newest backup {parent.id} has no stored backup_manifest to take an incremental against"
    if manifest_object.encrypted and not environ.get(jobenv.ENV_AGE_IDENTITY_FILE):
        return (f"the backup_manifest of {parent.id} is encrypted and this run has no age identity to read it: "
                f"set encryption.identitySecret for incremental backups of an encrypted policy")
    return parent


def chain_ids(manifest: Manifest, by_id: Mapping[str, Manifest]) -> list[str]:
    """The ids of `manifest`'s chain, root first, ending with `manifest` itself. A member missing from `by_id`
    ends the walk there (its id is the first of the list)."""
    ids = [manifest.id]
    current: Manifest | None = manifest
    while current is not None and current.incremental_of is not None:
        parent_id = current.incremental_of
        if parent_id in ids:  # a cycle can only come from edited manifests
            raise RunnerError(f"the chain of backup {manifest.id} loops at {parent_id}; its manifests were edited",
                              reason="ManifestInvalid")
        ids.insert(0, parent_id)
        current = by_id.get(parent_id)
    return ids


@contextmanager
def parent_manifest_file(catalog: Catalog, plan: ChainPlan, scratch: Path, environ: Mapping[str, str]
                         ) -> Iterator[tuple[ChainPlan, Path | None]]:
    """The parent's backup_manifest in a private temporary file (None and a full plan when it cannot be read)."""
    if plan.parent is None:
        yield plan, None
        return
    parent = plan.parent
    manifest_object = parent.backup_manifest_object()
    assert manifest_object is not None
    workdir = Path(tempfile.mkdtemp(prefix="pgbackup-incremental-", dir=scratch))
    path = workdir / "backup_manifest"
    try:
        try:
            identity = identity_from(None, environ) if manifest_object.encrypted else None
            with catalog.open_object(parent, manifest_object, identity=identity) as stream, path.open("wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
        except Exception as exc:  # noqa: BLE001 - an unreadable parent manifest makes a full backup, not a failure
            reason = f"the backup_manifest of {parent.id} could not be read ({str(exc)[:300]})"
            log_warning("backup.chain.full", reason=reason)
            yield plan.as_full(reason), None
            return
        yield plan, path
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def refused_incremental(exc: RunnerError) -> str | None:
    """The server's refusal of an incremental backup as a reason for a full one, else None (another failure)."""
    text = str(exc)
    if not REFUSED.search(text):
        return None
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower()] or [text.strip()]
    return f"the server refused an incremental backup: {lines[0][:300]}"
