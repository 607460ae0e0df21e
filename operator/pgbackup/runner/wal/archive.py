"""The WAL archive in a policy's storage, beside the backups: wal/<timeline 8 hex>/<file>[.zst|.gz][.age].

Every archived file has a small JSON sidecar `<file>.meta.json`, written AFTER the data object: it is the
commit marker (like a backup's manifest.json) and records the SHA-256 and size of the ORIGINAL bytes and of the
stored bytes. Why a sidecar and not object metadata: the Storage interface (S3 and a plain volume) has no
metadata, the raw hash must be readable without the age identity (wal-push only has the public recipients),
and it lets wal-fetch verify the stored bytes exactly as backups are verified. A data object without its
sidecar is an upload cut short: it is not archived, and the next push of that file replaces it.

Pushing is idempotent: the same file pushed again (same raw SHA-256) succeeds without uploading; a different
file under an archived name is a WalConflict. `<segment>.partial` (the segment being written, shipped by the
streamer so the RPO stays small) may be overwritten; the full segment supersedes and deletes it.

A push reads the file once, into memory (a temporary file beyond 16 MiB), and hashes and uploads that snapshot:
pg_receivewal keeps writing into the .partial while it is shipped, and the recorded SHA-256 must be that of the
stored bytes. The snapshot holds at least everything written to the file before the push began.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pgbackup.api import jobenv
from pgbackup.api.policy import Compression
from pgbackup.runner.common.timestamps import utc_now
from pgbackup.runner.common.config import CHUNK, PolicyConfig
from pgbackup.runner.common.log import Progress, log
from pgbackup.runner.storage.base import ObjectNotFound, Storage, StorageError
from pgbackup.runner.storage.factory import open_policy_storage
from pgbackup.runner.storage.pipeline import IntegrityError, StoredObject, store_stream
from pgbackup.runner.storage.readback import open_stored
from pgbackup.runner.wal.listing import (
    PARTIAL_SUFFIX,
    SIDECAR_SUFFIX,
    WAL_PREFIX,
    ArchivedFiles,
    ArchivedSegment,
    WalListing,
    collect_files,
    name_of_key,
    segments_of,
    wal_dir,
    wal_key,
)
from pgbackup.runner.wal.window import backups_segment_size, find_gaps, recoverability_window
from pgbackup.runner.wal.xlog import (
    DEFAULT_SEGMENT_SIZE,
    SEGMENT_SIZES,
    WalSegment,
    classify,
    parse_segment_name,
    timeline_of,
)

if TYPE_CHECKING:  # only annotations: the manifest model (pydantic) is not imported by every wal-push
    from pgbackup.runner.catalog.manifest import Manifest

_SNAPSHOT_IN_MEMORY = 16 * 1024 * 1024
"""A WAL file up to this size (the default segment size) is snapshotted in memory, a larger one in a temp file."""


class WalConflict(StorageError):
    """A different file is already archived under this name (two servers archiving into one place?)."""

    exit_code = jobenv.EXIT_FAILED


class WalFileError(StorageError):
    """The file to push is not a WAL file or cannot be read."""

    exit_code = jobenv.EXIT_FAILED


@dataclass(frozen=True)
class PushResult:
    name: str
    key: str
    uploaded: bool
    """False when an identical copy was already archived (or a partial is superseded by its full segment)."""
    raw_size: int
    raw_sha256: str
    size: int
    """Stored bytes (compressed, encrypted)."""


@dataclass(frozen=True)
class _Sidecar:
    name: str
    key: str
    size: int
    sha256: str
    compression: str
    encrypted: bool
    raw_size: int
    raw_sha256: str
    archived_at: str

    @classmethod
    def parse(cls, data: bytes, location: str) -> _Sidecar:
        try:
            doc = json.loads(data)
            return cls(**{name: doc[name] for name in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"WAL sidecar {location} is not valid ({exc}); delete it and push the file again "
                               f"(PostgreSQL retries archive_command) or restore it from another copy") from exc

    def to_json(self) -> bytes:
        return json.dumps({"version": 1, **self.__dict__}, indent=1).encode()

    def stored(self) -> StoredObject:
        return StoredObject(key=self.key, size=self.size, raw_size=self.raw_size, sha256=self.sha256,
                            compression=self.compression, encrypted=self.encrypted)


@dataclass(frozen=True)
class _Snapshot:
    """The bytes of a WAL file as read once (in memory, or in `spill` beyond 16 MiB), their SHA-256 and size."""

    held: list[bytes]
    spill: IO[bytes] | None
    raw_sha256: str
    raw_size: int

    def chunks(self) -> Iterator[bytes]:
        yield from self.held
        if self.spill is not None:
            self.spill.seek(0)
            while chunk := self.spill.read(CHUNK):
                yield chunk


class WalArchive:
    """WAL files of one policy in its storage: push (archive_command / streamer), fetch (restore_command),
    and the archive's state (segments, gaps, recoverability window)."""

    def __init__(self, storage: Storage, *, compression: Compression | None = None, recipients: Sequence[str] = (),
                 identity: str | None = None) -> None:
        self.storage = storage
        self.compression = compression or Compression()
        self.recipients = list(recipients)
        self.identity = identity

    # -- writing ---------------------------------------------------------------------------------

    def push(self, path: Path) -> PushResult:
        """Archive a WAL file (segment, .history, .backup; a .partial goes through push_partial)."""
        name = path.name
        kind = classify(name)
        if kind == "unknown":
            raise WalFileError(f"{path} is not a WAL file (segment, .partial, .history or .backup name); "
                               f"archive_command must pass %p, the path of the file PostgreSQL archives")
        if kind == "partial":
            return self.push_partial(path)
        with self._snapshot(path) as snapshot:
            existing = self._sidecar(name)
            if existing is not None:
                if existing.raw_sha256 == snapshot.raw_sha256:
                    log("wal.push.already_archived", name=name, key=existing.key)
                    return PushResult(name, existing.key, False, snapshot.raw_size, snapshot.raw_sha256,
                                      existing.size)
                raise WalConflict(
                    f"WAL file {name} is already archived at {self.storage.location(existing.key)} with different "
                    f"content (SHA-256 {existing.raw_sha256[:16]}... vs {snapshot.raw_sha256[:16]}... of {path}): "
                    f"two servers may be archiving into the same place. Give each server its own storage prefix; "
                    f"do not delete the archived copy unless you know it belongs to another cluster")
            return self._upload(snapshot, name)

    def push_partial(self, path: Path) -> PushResult:
        """Store (or overwrite) `<segment>.partial` from a segment still being written; a no-op once the full
        segment is archived. `path` may be named `<segment>` or `<segment>.partial`.

        The file is read once, when this is called, and exactly those bytes are hashed and stored: storage then
        holds everything written to the file before the call (what pg_receivewal had flushed), and the copy
        verifies whatever pg_receivewal writes meanwhile."""
        base = path.name[: -len(PARTIAL_SUFFIX)] if path.name.endswith(PARTIAL_SUFFIX) else path.name
        if classify(base) != "segment":
            raise WalFileError(f"{path} is not a WAL segment (or its .partial); cannot ship it as a partial segment")
        name = base + PARTIAL_SUFFIX
        with self._snapshot(path) as snapshot:
            full = self._sidecar(base)
            if full is not None:
                return PushResult(name, full.key, False, snapshot.raw_size, snapshot.raw_sha256, full.size)
            existing = self._sidecar(name)
            if existing is not None and existing.raw_sha256 == snapshot.raw_sha256:
                return PushResult(name, existing.key, False, snapshot.raw_size, snapshot.raw_sha256, existing.size)
            return self._upload(snapshot, name)

    def delete(self, names: Iterable[str], *, listing: WalListing | None = None) -> list[str]:
        """Delete archived WAL files by name (with their sidecars); returns the deleted keys. With `listing` (that
        found them), their keys are taken from it instead of listing again."""
        return self._delete_names(list(names), listing)

    # -- reading ---------------------------------------------------------------------------------

    def fetch(self, name: str, dest: Path, *, allow_partial: bool = False) -> bool:
        """Write the original bytes of `name` to `dest` (atomically: temp file + rename); False when absent.

        With allow_partial, a missing full segment is served from its .partial (the end of the archive when
        the streamer shipped it: the rest of the file is zeros, which recovery reads as the end of WAL).
        """
        sidecar = self._sidecar(name) if classify(name) != "unknown" else None
        if sidecar is None and allow_partial and classify(name) == "segment":
            sidecar = self._sidecar(name + PARTIAL_SUFFIX)
        if sidecar is None:
            return False
        temp = dest.with_name(f".{dest.name}.pgbackup-{os.getpid()}")
        digest = hashlib.sha256()
        try:
            with open_stored(self.storage, sidecar.stored(), identity=self.identity,
                             recipients=self.recipients) as stream, open(temp, "wb") as out:
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sidecar.raw_sha256:
                raise IntegrityError(
                    f"WAL file {self.storage.location(sidecar.key)} decodes to bytes whose SHA-256 differs from the "
                    f"one recorded when it was archived; it cannot be used for recovery")
            os.replace(temp, dest)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        log("wal.fetched", name=name, key=sidecar.key, size=sidecar.raw_size)
        return True

    def segments(self, timeline: int | None = None) -> list[ArchivedSegment]:
        """Archived full segments and .partials (a .partial whose full segment exists is left out), sorted."""
        return segments_of(self._scan(wal_dir(timeline) if timeline is not None else WAL_PREFIX))

    def listing_before(self, position: tuple[int, int]) -> WalListing:
        """The segments, .partials and backup labels archived before WAL `position` ((log, seg), on every
        timeline): what retention may delete. Each timeline directory is listed in key order only up to the first
        file at or after `position` (on S3: no page beyond the one holding it), not the WAL that is kept."""
        files: dict[str, ArchivedFiles] = {}
        for directory in self.storage.list_dirs(WAL_PREFIX):
            for info in self.storage.list(directory):
                parsed = name_of_key(info.key)
                if parsed is None:
                    continue
                name, is_sidecar = parsed
                if classify(name) == "history":
                    continue
                if parse_segment_name(name).position >= position:
                    break
                entry = files.setdefault(name, ArchivedFiles())
                if is_sidecar:
                    entry.sidecar = info
                else:
                    entry.data.append(info)
        return WalListing(files)

    def has_wal(self) -> bool:
        """Whether anything is archived under wal/: one delimiter listing, which names the timeline directories
        and returns none of their files."""
        return next(iter(self.storage.list_dirs(WAL_PREFIX)), None) is not None

    def history_files(self) -> list[str]:
        """Names of the archived timeline history files (00000002.history, ...), sorted."""
        return sorted(name for name, stored in self._scan(WAL_PREFIX).items()
                      if classify(name) == "history" and stored.sidecar is not None and stored.data)

    def backup_labels(self) -> list[str]:
        """Names of the archived backup history files (<segment>.<offset>.backup), sorted."""
        return WalListing(self._scan(WAL_PREFIX)).labels

    def last_archived(self) -> ArchivedSegment | None:
        """The full segment furthest along the WAL (the highest timeline at equal positions)."""
        full = [s for s in self.segments() if not s.partial]
        return max(full, key=lambda s: (s.segment.position, s.timeline), default=None)

    def gaps(self, seg_size: int | None = None) -> list[tuple[WalSegment, WalSegment]]:
        """Missing ranges (first missing, last missing) between the first and last full segment per timeline.
        Without seg_size the server's wal_segment_size is read from the archive (see segment_size)."""
        segments = self.segments()
        return find_gaps(segments, seg_size or self._segment_size(segments))

    def recoverability(self, catalog_backups: Sequence[Manifest],
                       seg_size: int | None = None) -> tuple[datetime | None, datetime | None]:
        """The window that can be restored from physical base backups plus the archived WAL."""
        segments = self.segments()
        return recoverability_window(segments, catalog_backups, seg_size or self._segment_size(segments, catalog_backups))

    def segment_size(self, catalog_backups: Sequence[Manifest] = ()) -> int:
        """The server's wal_segment_size: the size of an archived full segment (recorded in its sidecar), else
        what a base backup's start LSN and segment name imply, else 16 MiB."""
        return self._segment_size(self.segments(), catalog_backups)

    def _segment_size(self, segments: Sequence[ArchivedSegment], catalog_backups: Sequence[Manifest] = ()) -> int:
        full = [s for s in segments if not s.partial]
        if full:
            sidecar = self._sidecar(full[-1].name)
            if sidecar is not None and sidecar.raw_size in SEGMENT_SIZES:
                return sidecar.raw_size
        return backups_segment_size(catalog_backups) or DEFAULT_SEGMENT_SIZE

    # -- internals -------------------------------------------------------------------------------

    @contextmanager
    def _snapshot(self, path: Path) -> Iterator[_Snapshot]:
        """`path` read once (hashed as it is read): the first 16 MiB in memory, the rest in a temporary file."""
        held: list[bytes] = []
        spill: IO[bytes] | None = None
        digest, size = hashlib.sha256(), 0
        try:
            try:
                with open(path, "rb") as source:
                    while chunk := source.read(CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        if size <= _SNAPSHOT_IN_MEMORY:
                            held.append(chunk)
                        else:
                            spill = spill or tempfile.TemporaryFile()
                            spill.write(chunk)
            except OSError as exc:
                raise WalFileError(f"cannot read WAL file {path}: {exc.strerror or exc}; archive_command must pass "
                                   f"%p and run as the server's user (or one that can read pg_wal)") from exc
            yield _Snapshot(held, spill, digest.hexdigest(), size)
        finally:
            if spill is not None:
                spill.close()

    def _sidecar(self, name: str) -> _Sidecar | None:
        key = wal_key(name) + SIDECAR_SUFFIX
        try:
            data = self.storage.get_bytes(key)
        except ObjectNotFound:
            return None
        return _Sidecar.parse(data, self.storage.location(key))

    def _upload(self, snapshot: _Snapshot, name: str) -> PushResult:
        base_key = wal_key(name)
        raw_sha256, raw_size = snapshot.raw_sha256, snapshot.raw_size
        quiet = Progress("wal.push", heartbeat=False, interval=1e9, key=base_key)
        stored = store_stream(snapshot.chunks(), self.storage, base_key, compression=self.compression,
                              recipients=self.recipients, progress=quiet)
        sidecar = _Sidecar(name=name, key=stored.key, size=stored.size, sha256=stored.sha256,
                           compression=stored.compression, encrypted=stored.encrypted, raw_size=raw_size,
                           raw_sha256=raw_sha256, archived_at=utc_now().isoformat())
        self.storage.put_bytes(base_key + SIDECAR_SUFFIX, sidecar.to_json())
        # One listing of this name's keys finds what the new copy makes obsolete: an earlier uncommitted
        # upload with other compression/encryption settings, and (for a full segment) the streamer's .partial.
        obsolete: list[str] = []
        for found, files in self._scan(base_key).items():
            if found == name:
                obsolete += [info.key for info in files.data if info.key != stored.key]
            elif found == name + PARTIAL_SUFFIX and classify(name) == "segment":
                obsolete += ([files.sidecar.key] if files.sidecar else []) + [info.key for info in files.data]
        if obsolete:
            self.storage.delete(obsolete)
        log("wal.pushed", name=name, key=stored.key, raw_size=raw_size, size=stored.size)
        return PushResult(name, stored.key, True, raw_size, raw_sha256, stored.size)

    def _scan(self, prefix: str) -> dict[str, ArchivedFiles]:
        return collect_files(self.storage.list(prefix))

    def _delete_names(self, names: list[str], listing: WalListing | None = None) -> list[str]:
        wanted = set(names)
        if not wanted:
            return []
        if listing is not None:
            found = [listing.files[name] for name in sorted(wanted) if name in listing.files]
        else:
            # a narrow listing per name when there are few, one per timeline directory otherwise
            prefixes = ({wal_key(name) for name in wanted} if len(wanted) <= 16
                        else {wal_dir(timeline_of(n)) for n in wanted})
            found = [stored for prefix in sorted(prefixes) for name, stored in self._scan(prefix).items()
                     if name in wanted]
        sidecars: list[str] = []
        data: list[str] = []
        for stored in found:
            sidecars += [stored.sidecar.key] if stored.sidecar is not None else []
            data += [info.key for info in stored.data]
        if sidecars:  # uncommit first: a crash in between leaves data that is simply not archived
            self.storage.delete(sidecars)
        if data:
            self.storage.delete(data)
        return sidecars + data


def archive_for_policy(policy: PolicyConfig, *, storage: Storage | None = None, identity: str | None = None,
                       environ: dict[str, str] | None = None) -> WalArchive:
    """The WAL archive of a policy: its storage, compression and encryption recipients."""
    if storage is None:
        storage = open_policy_storage(policy, environ)
    recipients = list(policy.spec.encryption.recipients) if policy.spec.encryption else []
    return WalArchive(storage, compression=policy.spec.compression, recipients=recipients, identity=identity)
