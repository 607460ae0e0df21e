"""The catalog: the set of manifests in a storage. Layout: <id>/manifest.json + <id>/<objects>.

A backup exists once its manifest does; objects without a manifest are an unfinished (or failed) backup:
never listed, removed once their run is provably over (its claim, pgbackup.runner.catalog.claim). Only directories named like backup ids are touched, so other
data beside the backups (e.g. a wal/ archive) is safe.

The manifest's own SHA-256 is written just before it, as <id>/manifest.json.sha256 (`sha256sum -c` format), so a
manifest edited later (a row count, an object checksum) is detected by every reader instead of being trusted.

A catalog opened for a policy sees only that policy's backups (the manifest's namespace and policy), and its
clean-up skips unfinished backups whose claim (written first, pgbackup.runner.catalog.claim) names another policy, so
policies that share a location never list, prune or clean up each other's backups.

Listings stay within the backup directories (scan): one delimiter listing names them, one listing of their
common id prefix reads their objects, so a WAL archive beside them (wal/, thousands of objects) is never listed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import BinaryIO

from pydantic import ValidationError

from pgbackup.runner.catalog.check import CheckReport, ObjectCheck, check_object
from pgbackup.runner.catalog.claim import is_claim_name, read_claim, run_is_dead
from pgbackup.runner.common.config import PolicyConfig
from pgbackup.runner.common.log import Progress, log, log_warning
from pgbackup.runner.catalog.manifest import (
    BACKUP_ID_PATTERN,
    MANIFEST_NAME,
    VERIFICATION_NAME,
    Manifest,
    ManifestObject,
    Verification,
    backup_id_sort_key,
    backup_id_time,
    new_backup_id,
)
from pgbackup.runner.storage.pipeline import StoredObject
from pgbackup.runner.storage.readback import open_stored
from pgbackup.runner.storage.base import ObjectInfo, ObjectNotFound, Storage, StorageError


class BackupNotFound(StorageError):
    """No complete backup with that id."""


MANIFEST_DIGEST_NAME = f"{MANIFEST_NAME}.sha256"


class ManifestChanged(StorageError):
    """A manifest that does not match the SHA-256 recorded beside it when the backup was taken."""

    reason = "ManifestChanged"

    def __init__(self, message: str, *, recorded: str, actual: str, size: int) -> None:
        super().__init__(message)
        self.recorded = recorded
        self.actual = actual
        self.size = size


@dataclass(frozen=True)
class BackupScan:
    """The objects of every backup directory of a storage, by backup id, as one scan found them (Catalog.scan)."""

    objects: dict[str, list[ObjectInfo]]

    def names(self, backup_id: str) -> set[str]:
        """Names of the objects directly in `<id>/` (manifest.json, claim.json, ...)."""
        return {info.key.split("/", 1)[1] for info in self.objects.get(backup_id, []) if info.key.count("/") == 1}

    def complete(self) -> set[str]:
        """Ids whose directory holds a manifest (readable or not)."""
        return {backup_id for backup_id in self.objects if MANIFEST_NAME in self.names(backup_id)}


class Catalog:
    """Backups in one storage (a policy's bucket prefix or volume directory); with `policy`, only that
    policy's backups (None: every backup in the storage, e.g. for tools that inspect a location)."""

    def __init__(self, storage: Storage, policy: PolicyConfig | None = None) -> None:
        self.storage = storage
        self.owner = (policy.namespace, policy.name) if policy is not None else None

    def owns(self, manifest: Manifest) -> bool:
        """Whether a backup belongs to this catalog's policy (always, for a catalog of every policy)."""
        return self.owner is None or (manifest.namespace, manifest.policy) == self.owner

    # -- naming ---------------------------------------------------------------------------------

    @staticmethod
    def object_key(backup_id: str, name: str) -> str:
        """Storage key of an object of a backup: '<id>/<name>'."""
        return f"{backup_id}/{name}"

    @staticmethod
    def manifest_key(backup_id: str) -> str:
        return f"{backup_id}/{MANIFEST_NAME}"

    @staticmethod
    def manifest_digest_key(backup_id: str) -> str:
        """Where the manifest's SHA-256 is recorded (written just before the manifest)."""
        return f"{backup_id}/{MANIFEST_DIGEST_NAME}"

    def new_id(self, now: datetime) -> str:
        """A fresh backup id for `now`, not used by any complete or unfinished backup (e.g. a run that failed
        in the same second). Only keys starting with the id's time are listed: every candidate ('<time>',
        '<time>-1', ...) shares that prefix, and the rest of the storage (other backups, a WAL archive) can be big."""
        base = new_backup_id(now)
        taken = {info.key.split("/", 1)[0] for info in self.storage.list(base) if "/" in info.key}
        return new_backup_id(now, taken)

    # -- reading --------------------------------------------------------------------------------

    def _load(self, backup_id: str, *, has_verification: bool = True, sealed: bool | None = None) -> Manifest:
        """`sealed`: True = check the recorded SHA-256, None = check it when there is one (warn when not),
        False = do not check (old backups found by a listing, or `check` reading a changed manifest).
        `has_verification`: False = a listing found no verification.json (not read then)."""
        data = self.storage.get_bytes(self.manifest_key(backup_id))
        if sealed is not False:
            self._check_manifest_digest(backup_id, data, required=sealed is True)
        manifest = Manifest.model_validate_json(data)
        verification = self._read_verification(backup_id) if has_verification else None
        return manifest.model_copy(update={"verification": verification})

    def _check_manifest_digest(self, backup_id: str, data: bytes, *, required: bool) -> None:
        """Raise ManifestChanged when `data` is not the manifest the backup wrote."""
        digest_key = self.manifest_digest_key(backup_id)
        try:
            recorded_text = self.storage.get_bytes(digest_key).decode(errors="replace")
        except ObjectNotFound:
            if required:
                raise
            log_warning("catalog.manifest_unsealed", backup_id=backup_id,
                        hint=f"backup {backup_id} was written before manifests carried a SHA-256 "
                             f"({MANIFEST_DIGEST_NAME}): later edits of its manifest cannot be detected")
            return
        recorded = (recorded_text.split() or [""])[0].lower()
        actual = hashlib.sha256(data).hexdigest()
        if recorded == actual:
            return
        where = self.storage.location(self.manifest_key(backup_id))
        if not re.fullmatch(r"[0-9a-f]{64}", recorded):
            problem = f"its recorded SHA-256 ({self.storage.location(digest_key)}) is unreadable"
        else:
            problem = f"does not match its recorded SHA-256 ({actual} != {recorded})"
        raise ManifestChanged(
            f"{MANIFEST_NAME} of backup {backup_id} ({where}) {problem}: the manifest was changed after the backup, "
            f"so its row counts and object checksums cannot be trusted; restore another backup (or the backup "
            f"from a copy), and if the edit was deliberate write the manifest's new SHA-256 to "
            f"{self.storage.location(digest_key)}",
            recorded=recorded, actual=actual, size=len(data),
        )

    def _read_verification(self, backup_id: str) -> Verification | None:
        try:
            data = json.loads(self.storage.get_bytes(f"{backup_id}/{VERIFICATION_NAME}"))
        except (ValueError, StorageError):  # ObjectNotFound included: never verified
            return None
        if not isinstance(data, dict):
            return None
        return "passed" if data.get("passed", data.get("verified", False)) else "failed"

    def scan(self) -> BackupScan:
        """The objects of every backup directory, without listing anything else in the storage: one delimiter
        listing of the top level names the directories (backup ids, and e.g. wal/), then one listing of the
        prefix all ids share ('2026...': every id starts with its date) returns their objects and nothing of a
        WAL archive. Ids without a common prefix are listed one directory each."""
        ids = sorted(name[:-1] for name in self.storage.list_dirs() if BACKUP_ID_PATTERN.match(name[:-1]))
        objects: dict[str, list[ObjectInfo]] = {backup_id: [] for backup_id in ids}
        common = os.path.commonprefix(ids)
        for prefix in ([common] if common else [f"{backup_id}/" for backup_id in ids]):
            for info in self.storage.list(prefix):
                head, slash, _ = info.key.partition("/")
                if slash and BACKUP_ID_PATTERN.match(head):
                    objects.setdefault(head, []).append(info)
        return BackupScan(objects)

    def backups(self, scan: BackupScan | None = None) -> list[Manifest]:
        """The policy's complete backups (every purpose), newest first. Unreadable manifests are logged and
        skipped. `scan`: a scan() the caller already holds (none: one is made)."""
        return [m for m in self.location_backups(scan) if self.owns(m)]

    def location_backups(self, scan: BackupScan | None = None) -> list[Manifest]:
        """Complete backups of every policy in the storage, newest first (e.g. for the WAL a shared archive
        must keep). Unreadable manifests are logged and skipped."""
        scan = scan if scan is not None else self.scan()
        manifests: list[str] = []
        verifications: set[str] = set()
        sealed: set[str] = set()
        for backup_id in scan.objects:
            names = scan.names(backup_id)
            if MANIFEST_NAME in names:
                manifests.append(backup_id)
            if VERIFICATION_NAME in names:
                verifications.add(backup_id)
            if MANIFEST_DIGEST_NAME in names:
                sealed.add(backup_id)
        found: list[Manifest] = []
        for backup_id in manifests:
            try:
                found.append(self._load(backup_id, has_verification=backup_id in verifications,
                                        sealed=backup_id in sealed))
            except ManifestChanged as exc:
                log_warning("catalog.manifest_changed", backup_id=backup_id, error=str(exc)[:800],
                            hint=f"the backup is left out of the catalog (not listed, never chosen as latest, not "
                                 f"deleted by retention); `pgbackup check {backup_id}` shows it")
            except (ValidationError, ValueError, StorageError) as exc:
                log_warning(
                    "catalog.manifest_unreadable",
                    location=self.storage.location(self.manifest_key(backup_id)),
                    error=str(exc)[:500],
                    hint="the backup is ignored; inspect or delete it",
                )
        unsealed = sorted(set(manifests) - sealed, key=backup_id_sort_key)
        if unsealed:
            log_warning("catalog.manifest_unsealed", backups=len(unsealed), ids=unsealed[:10],
                        hint=f"written before manifests carried a SHA-256 ({MANIFEST_DIGEST_NAME}): later edits of "
                             f"their manifests cannot be detected")
        found.sort(key=lambda m: (m.completed_at, backup_id_sort_key(m.id)), reverse=True)
        return found

    def ids(self) -> list[str]:
        return [m.id for m in self.backups()]

    def find(self, backup_id: str) -> Manifest | None:
        """get(), or None when the policy has no such backup."""
        try:
            return self.get(backup_id)
        except BackupNotFound:
            return None

    def get(self, backup_id: str) -> Manifest:
        """The manifest of a complete backup of the policy; BackupNotFound lists the nearest ids."""
        try:
            manifest = self._load(backup_id)
            if self.owns(manifest):
                return manifest
            raise BackupNotFound(
                f"backup {backup_id!r} in {self.storage.url} belongs to BackupPolicy {manifest.namespace}/"
                f"{manifest.policy}, not {'/'.join(self.owner or ())}: use that policy to read it"
            )
        except ObjectNotFound:
            pass
        except (ValidationError, ValueError) as exc:
            raise StorageError(
                f"manifest {self.storage.location(self.manifest_key(backup_id))} is unreadable: {str(exc)[:300]}"
            ) from exc
        known = self.ids()
        nearest = difflib.get_close_matches(backup_id, known, n=5, cutoff=0.0) if known else []
        hint = f"nearest ids: {', '.join(nearest)}" if nearest else "the catalog is empty"
        raise BackupNotFound(
            f"no complete backup {backup_id!r} in {self.storage.url} ({hint}); `pgbackup list` shows them all"
        )

    def latest(self) -> Manifest | None:
        """The newest of the policy's own full backups (scheduled or on-demand): never a pre-restore safety
        backup or an imported dump."""
        return next((m for m in self.backups() if m.own_full_backup), None)

    @contextmanager
    def open_object(
        self, manifest: Manifest, obj: ManifestObject, *, identity: str | None = None
    ) -> Iterator[BinaryIO]:
        """Original bytes of one object of a backup (decrypted, decompressed, verified at the end)."""
        stored = StoredObject(
            key=self.object_key(manifest.id, obj.key),
            size=obj.size,
            raw_size=obj.raw_size,
            sha256=obj.sha256,
            compression=obj.compression,
            encrypted=obj.encrypted,
        )
        with open_stored(self.storage, stored, identity=identity, recipients=manifest.encryption_recipients) as stream:
            yield stream

    # -- writing --------------------------------------------------------------------------------

    def _foreign(self, backup_id: str, claims: list[ObjectInfo] | None = None) -> bool:
        """Whether an unfinished backup provably belongs to another policy: one of its claims (written first, see
        pgbackup.runner.catalog.claim) names another policy. An unreadable claim counts as foreign: leave it alone.
        `claims`: the directory's claims from a scan (none: `<id>/` is listed)."""
        if self.owner is None:
            return False
        found: Iterable[ObjectInfo] = claims if claims is not None else self.storage.list(f"{backup_id}/")
        for info in found:
            if not is_claim_name(info.key.split("/", 1)[1]):
                continue
            record = read_claim(self.storage, info)
            if record is None or (record.policy is not None and (record.namespace, record.policy) != self.owner):
                return True
        return False

    def write_manifest(self, manifest: Manifest) -> tuple[str, str]:
        """Commit a backup: write its manifest's SHA-256, then the manifest (call LAST). Returns (location,
        SHA-256 of the manifest)."""
        data = manifest.to_json()
        key = self.manifest_key(manifest.id)
        digest = hashlib.sha256(data).hexdigest()
        self.storage.put_bytes(self.manifest_digest_key(manifest.id), f"{digest}  {MANIFEST_NAME}\n".encode())
        self.storage.put_bytes(key, data)
        location = self.storage.location(key)
        log("catalog.manifest_written", backup_id=manifest.id, location=location, sha256=digest)
        return location, digest

    # -- checking -------------------------------------------------------------------------------

    def check(self, backup_id: str) -> CheckReport:
        """Re-read every object of a backup and compare its size and SHA-256 with the manifest; a manifest changed
        after the backup is reported first (its objects are still checked against what it now says)."""
        report = CheckReport(backup_id=backup_id)
        try:
            manifest = self.get(backup_id)
        except ManifestChanged as exc:
            manifest = self._load(backup_id, sealed=False)
            report.objects.append(ObjectCheck(MANIFEST_NAME, "changed", exc.size, exc.size, exc.recorded, exc.actual,
                                              str(exc)))
        progress = Progress("check", total=manifest.size_bytes, backup_id=backup_id)
        for obj in manifest.objects:
            report.objects.append(check_object(self.storage, self.object_key(manifest.id, obj.key), obj, progress))
        progress.done()
        level = log if report.ok else log_warning
        level(
            "catalog.check",
            backup_id=backup_id,
            ok=report.ok,
            objects=len(report.objects),
            problems=[f"{p.key}: {p.status}" for p in report.problems],
        )
        return report

    # -- deleting -------------------------------------------------------------------------------

    def delete(self, backup_id: str) -> None:
        """Remove a backup: the manifest first (it stops being a backup at once), then its objects."""
        if not BACKUP_ID_PATTERN.match(backup_id):
            raise StorageError(f"refusing to delete {backup_id!r}: not a backup id")
        self.storage.delete([self.manifest_key(backup_id)])
        keys = [info.key for info in self.storage.list(f"{backup_id}/")]
        if keys:
            self.storage.delete(keys)
        log("catalog.deleted", backup_id=backup_id, objects=len(keys))

    def unfinished(self, grace: timedelta, now: datetime) -> list[str]:
        """Ids of backup directories without a manifest whose run is over: its claims show the run ended or
        stopped renewing its lease (pgbackup.runner.catalog.claim). Directories without a claim (written by an older
        runner, or a copy) count once their newest object is older than `grace`."""
        newest: dict[str, datetime] = {}
        complete: set[str] = set()
        claims: dict[str, list[ObjectInfo]] = defaultdict(list)
        for backup_id, objects in self.scan().objects.items():
            for info in objects:
                name = info.key.split("/", 1)[1]
                if name == MANIFEST_NAME:
                    complete.add(backup_id)
                elif is_claim_name(name):
                    claims[backup_id].append(info)
                if backup_id not in newest or info.modified > newest[backup_id]:
                    newest[backup_id] = info.modified
        over = []
        for backup_id, modified in newest.items():
            if backup_id in complete:
                continue
            if backup_id in claims:
                if not self._foreign(backup_id, claims[backup_id]) and run_is_dead(self.storage, claims[backup_id], now):
                    over.append(backup_id)
            elif now - modified > grace:
                over.append(backup_id)
        return sorted(over, key=backup_id_sort_key)

    def clean_unfinished(self, grace: timedelta, now: datetime, *, dry_run: bool = False) -> list[str]:
        """Delete the objects of unfinished backups whose run is over (see unfinished()), their claims last;
        returns their ids."""
        stale = self.unfinished(grace, now)
        by_id: dict[str, list[str]] = defaultdict(list)
        for backup_id in stale:
            keys = [info.key for info in self.storage.list(f"{backup_id}/")]
            by_id[backup_id] = sorted(keys, key=lambda key: is_claim_name(key.split("/", 1)[1]))
        for backup_id, keys in by_id.items():
            log("catalog.unfinished", backup_id=backup_id, objects=len(keys), dry_run=dry_run)
            if not dry_run and keys:
                self.storage.delete(keys)
        if not dry_run:
            self._abort_stale_uploads(grace, now, set(stale))
        return stale

    def _abort_stale_uploads(self, grace: timedelta, now: datetime, dead: set[str]) -> None:
        """S3 only: multipart uploads of killed Jobs are invisible to list() but cost storage. Those of `dead`
        runs are aborted at once, others once older than `grace`."""
        list_uploads = getattr(self.storage, "incomplete_uploads", None)
        if list_uploads is None:
            return
        for upload in list_uploads():
            backup_id = upload.key.split("/", 1)[0]
            if not BACKUP_ID_PATTERN.match(backup_id) or self._foreign(backup_id):
                continue
            # The id is the backup's start time; some servers report a bogus upload initiation time.
            started = max(upload.initiated, backup_id_time(backup_id))
            if backup_id in dead or now - started > grace:
                log("catalog.abort_upload", key=upload.key, initiated=upload.initiated)
                self.storage.abort_upload(upload)  # type: ignore[attr-defined]
