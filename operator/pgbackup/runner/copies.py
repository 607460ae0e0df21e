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
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgbackup.api import jobenv
from pgbackup.api.policy import CopySpec
from pgbackup.api.summary import MAX_COPY_ERROR_CHARS, CopySummary
from pgbackup.runner.catalog import Catalog
from pgbackup.runner.claim import claim_known_id
from pgbackup.runner.config import PolicyConfig, UsageError
from pgbackup.runner.log import log, log_error, redact
from pgbackup.runner.manifest import Manifest
from pgbackup.runner.retention import BackupRef, apply_retention, plan_retention
from pgbackup.runner.storage.base import ObjectNotFound, Storage, StorageError
from pgbackup.runner.storage.factory import open_storage

MAX_CATCH_UP_PER_RUN = 5
CHUNK = 1024 * 1024


class CopyFailed(StorageError):
    """An object read from the primary did not match its manifest (size or SHA-256): nothing was committed."""


def find_copy(policy: PolicyConfig, name: str) -> CopySpec:
    """The copy `name` of the policy; a RunnerError (usage) that lists the copies it has otherwise."""
    for copy in policy.spec.copies:
        if copy.name == name:
            return copy
    known = ", ".join(c.name for c in policy.spec.copies) or "none"
    raise UsageError(
        f"BackupPolicy {policy.namespace}/{policy.name} has no copy named {name!r} (its copies: {known}); "
        f"use one of spec.copies[].name, or leave the copy out to read from the primary storage",
        reason="UnknownCopy",
    )


def open_source_storage(policy: PolicyConfig, from_copy: str | None,
                        environ: Mapping[str, str] | None = None) -> Storage:
    """Where to read backups from: the copy named `from_copy`, else the policy's primary storage."""
    if not from_copy:
        from pgbackup.runner.backup import open_policy_storage

        return open_policy_storage(policy, environ)
    copy = find_copy(policy, from_copy)
    log("copy.reading_from", copy=copy.name)
    return open_copy_storage(copy, environ)


def open_copy_storage(copy: CopySpec, environ: Mapping[str, str] | None = None) -> Storage:
    """The copy's storage with its own credentials: $PGBACKUP_COPY_<NAME>_AWS_ACCESS_KEY_ID / ..._SECRET_ACCESS_KEY
    go to a boto3 session of this storage only (never an argument, never logged); a volume copy is mounted at
    $PGBACKUP_COPY_<NAME>_VOLUME_ROOT (default /var/lib/pgbackup/copies/<name>)."""
    environ = os.environ if environ is None else environ
    if copy.s3 is not None:
        from pgbackup.runner.storage.s3 import S3Credentials, S3Storage

        key_id = environ.get(jobenv.copy_access_key_env(copy.name))
        secret = environ.get(jobenv.copy_secret_key_env(copy.name))
        if copy.s3.credentials_secret is not None and not (key_id and secret):
            ref = copy.s3.credentials_secret
            raise StorageError(
                f"copy {copy.name!r}: no credentials: ${jobenv.copy_access_key_env(copy.name)} / "
                f"${jobenv.copy_secret_key_env(copy.name)} are empty; check that Secret {ref.name!r} exists in the "
                f"policy's namespace with keys {ref.access_key_id_key!r} and {ref.secret_access_key_key!r} "
                f"(copies[{copy.name}].s3.credentialsSecret); when running `pgbackup` by hand, set the two variables"
            )
        credentials = S3Credentials(key_id, secret) if key_id and secret else None
        return S3Storage(copy.s3, credentials=credentials)
    root_env = environ.get(jobenv.copy_volume_root_env(copy.name))
    root = Path(root_env) if root_env else Path(jobenv.COPY_VOLUME_ROOT) / copy.name
    return open_storage(copy.storage, volume_root=root)


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
    refs = [BackupRef(m.id, m.completed_at, False, True, m.purpose) for m in [*in_copy, *(m for m in primary if m.id not in present)]]
    keep = {d.id for d in plan_retention(refs, copy.retention, now) if d.keep}
    wanted = [m for m in primary if m.id not in present and m.id in keep]  # primary lists newest first
    return CopyPlan(wanted=wanted, this_run=wanted[:max_catch_up])


def sync_copy(primary: Storage, copy: CopySpec, target: Storage, *, now: datetime | None = None,
              max_catch_up: int = MAX_CATCH_UP_PER_RUN, grace: timedelta | None = None,
              policy: PolicyConfig | None = None) -> CopySummary:
    """Bring one copy up to date, then apply its retention; every failure ends up in the returned error.
    With `policy`, only its backups are copied, pruned and cleaned up (the storages may be shared)."""
    now = now or datetime.now(UTC)
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
            last_copied_at = datetime.now(UTC)
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
