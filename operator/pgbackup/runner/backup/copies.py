"""Copies of completed backups in other storages (BackupPolicy.spec.copies, the "2" and "1" of 3-2-1).

After each successful backup every copy is brought up to date: each object is re-read from the primary, its
SHA-256 and size checked while it streams into the copy under the same key (the same bytes: no re-compression,
no re-encryption), and the manifest is written LAST, so a copy never lists a backup it does not fully hold.
Then the copy's own retention runs on the copy's catalog.

Catch-up: backups of the primary missing from a copy (a copy that was down, or added later) are copied too,
newest first and at most MAX_CATCH_UP_PER_RUN per run; only those the copy's retention would keep, so a copy
with a shorter retention never copies a backup just to delete it again.

A failing copy never fails the backup: the error is logged, reported in the summary's copies[].error (and
from there in BackupPolicy.status.copies), and the missing backups are copied at the next run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pgbackup.api.policy import CopySpec
from pgbackup.api.summary import MAX_COPY_ERROR_CHARS, CopySummary
from pgbackup.runner.backup.housekeeping import apply_retention
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.claim import claim_known_id
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.catalog.retention import BackupRef, plan_retention
from pgbackup.runner.common.config import CHUNK, PolicyConfig
from pgbackup.runner.common.log import log, log_error, redact
from pgbackup.runner.common.timestamps import utc_now
from pgbackup.runner.storage.base import ObjectNotFound, Storage, StorageError
from pgbackup.runner.storage.factory import open_copy_storage

MAX_CATCH_UP_PER_RUN = 5


class CopyFailed(StorageError):
    """An object read from the primary did not match its manifest (size or SHA-256): nothing was committed."""


def copy_backup(source: Storage, target: Storage, manifest: Manifest) -> int:
    """Copy one complete backup: every object verified against the manifest while it streams, then the manifest
    (its stored bytes, unchanged) last. Returns the bytes copied."""
    copied = 0
    for obj in manifest.objects:
        key = Catalog.object_key(manifest.id, obj.key)
        digest = hashlib.sha256()
        size = 0
        with source.open_reader(key) as reader, target.open_writer(key) as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                writer.write(chunk)
            if size != obj.size or digest.hexdigest() != obj.sha256:
                # raising inside the writer's block aborts it: the copy never holds a damaged object
                raise CopyFailed(
                    f"{source.location(key)} does not match its manifest (size {size} vs {obj.size}, SHA-256 "
                    f"{digest.hexdigest()} vs {obj.sha256}): not copied to {target.url}; run `pgbackup check "
                    f"{manifest.id}` on the primary"
                )
        copied += size
    digest_key, manifest_key = Catalog.manifest_digest_key(manifest.id), Catalog.manifest_key(manifest.id)
    try:  # the manifest's recorded SHA-256 travels with it, written just before it as on the primary
        target.put_bytes(digest_key, source.get_bytes(digest_key))
    except ObjectNotFound:
        pass  # a backup from before manifests carried a SHA-256
    target.put_bytes(manifest_key, source.get_bytes(manifest_key))
    return copied


@dataclass(frozen=True)
class CopyPlan:
    """What a copy is missing (newest first) and what this run copies of it."""

    wanted: list[Manifest]
    this_run: list[Manifest]


def plan_copy(primary: list[Manifest], in_copy: list[Manifest], copy: CopySpec, now: datetime,
              max_catch_up: int = MAX_CATCH_UP_PER_RUN) -> CopyPlan:
    """Primary backups not in the copy that the copy's retention would keep once they are there."""
    present = {m.id for m in in_copy}
    refs = [BackupRef(m.id, m.completed_at, False, True, m.purpose, m.incremental_of)
            for m in [*in_copy, *(m for m in primary if m.id not in present)]]
    keep = {d.id for d in plan_retention(refs, copy.retention, now) if d.keep}
    wanted = [m for m in primary if m.id not in present and m.id in keep]  # primary lists newest first
    return CopyPlan(wanted=wanted, this_run=wanted[:max_catch_up])


def sync_copy(primary: Storage, copy: CopySpec, target: Storage, *, now: datetime | None = None,
              max_catch_up: int = MAX_CATCH_UP_PER_RUN, grace: timedelta | None = None,
              policy: PolicyConfig | None = None) -> CopySummary:
    """Bring one copy up to date, then apply its retention; every failure ends up in the returned error.
    With `policy`, only its backups are copied, pruned and cleaned up (the storages may be shared)."""
    now = now or utc_now()
    copy_catalog = Catalog(target, policy)
    last_copied_at: datetime | None = None
    error: str | None = None
    wanted: list[Manifest] = []
    try:
        plan = plan_copy(Catalog(primary, policy).backups(), copy_catalog.backups(), copy, now, max_catch_up)
        wanted = list(plan.wanted)
        for manifest in plan.this_run:
            log("copy.start", copy=copy.name, backup_id=manifest.id, target=target.url)
            with claim_known_id(target, manifest.id, owner=copy_catalog.owner).held():
                size = copy_backup(primary, target, manifest)
            wanted.remove(manifest)
            last_copied_at = utc_now()
            log("copy.done", copy=copy.name, backup_id=manifest.id, target=target.url, size_bytes=size)
        apply_retention(copy_catalog, copy.retention, now, dry_run=False)
        if grace is not None:
            copy_catalog.clean_unfinished(grace, now)
    except Exception as exc:  # noqa: BLE001 - a copy never fails the backup; it is retried at the next run
        error = redact(f"copy {copy.name!r} to {target.url}: {exc}")
        log_error("copy.failed", copy=copy.name, target=target.url, error=error,
                  hint="the backup itself succeeded; missing backups are copied again after the next backup")
    try:
        newest = copy_catalog.latest()
    except Exception:  # noqa: BLE001 - already reported above when the copy is unreachable
        newest = None
    return CopySummary(
        name=copy.name,
        last_copied_backup=newest.id if newest else None,
        last_copied_at=last_copied_at,
        lag_backups=len(wanted) if error is None or wanted else None,
        error=_shorten(error),
    )


def _shorten(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_COPY_ERROR_CHARS:
        return error
    return error[: MAX_COPY_ERROR_CHARS - 3] + "..."


def sync_copies(policy: PolicyConfig, primary: Storage, *, environ: Mapping[str, str] | None = None,
                storages: Mapping[str, Storage] | None = None, grace: timedelta | None = None,
                now: datetime | None = None) -> list[CopySummary]:
    """Every copy of the policy, one after the other; `storages` overrides the storage of a copy by name."""
    results: list[CopySummary] = []
    for copy in policy.spec.copies:
        try:
            target = (storages or {}).get(copy.name) or open_copy_storage(copy, environ)
        except Exception as exc:  # noqa: BLE001 - e.g. missing credentials: reported, never fatal
            error = redact(f"copy {copy.name!r}: {exc}")
            log_error("copy.failed", copy=copy.name, error=error, hint="the backup itself succeeded")
            results.append(CopySummary(name=copy.name, error=_shorten(error)))
            continue
        results.append(sync_copy(primary, copy, target, now=now, grace=grace, policy=policy))
    return results
