"""Reading a backup's objects for a restore: checked against the manifest first (a damaged object is reported as
a checksum mismatch naming it, not as a decryption error), then streamed into a program's stdin or extracted."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, ManifestObject
from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.common.errors import ObjectNotFound, RunnerError, UsageError
from pgbackup.runner.common.log import Progress, log
from pgbackup.runner.postgres.tools import PgTools, find_tools
from pgbackup.runner.restore.safetar import extract_data
from pgbackup.runner.storage.pipeline import DecryptionError, IntegrityError


class BackupDamaged(RunnerError):
    """An object of the backup does not match its manifest entry (size or SHA-256): damage, not a key problem."""

    reason = "BackupDamaged"


def object_damage(catalog: Catalog, manifest: Manifest, obj: ManifestObject) -> str | None:
    """What is wrong with the stored bytes of `obj` (size, SHA-256, missing), or None when they match.
    Reads the stored bytes only: no identity is needed and nothing is decrypted."""
    digest = hashlib.sha256()
    size = 0
    try:
        with catalog.storage.open_reader(catalog.object_key(manifest.id, obj.key)) as reader:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except ObjectNotFound:
        return "missing"
    if size != obj.size:
        return f"size mismatch ({size} bytes stored, the manifest records {obj.size})"
    if digest.hexdigest() != obj.sha256:
        return f"SHA-256 mismatch (the stored bytes hash to {digest.hexdigest()}, the manifest records {obj.sha256})"
    return None


def damaged(manifest: Manifest, problems: Sequence[tuple[ManifestObject, str]], changed: str) -> BackupDamaged:
    listing = "; ".join(f"object {obj.key}: {problem}" for obj, problem in problems)
    return BackupDamaged(f"backup {manifest.id} is damaged, {changed}: {listing}. Run `pgbackup check {manifest.id}` "
                         f"to see every damaged object of it, and restore another backup (`pgbackup list` shows them)")


def verify_objects(catalog: Catalog, manifest: Manifest, objects: Sequence[ManifestObject], *,
                   changed: str = "nothing was restored or changed") -> None:
    """Compare size and SHA-256 of the stored bytes of `objects` with the manifest (before anything changes);
    raises BackupDamaged naming each damaged object."""
    problems = [(obj, problem) for obj in objects if (problem := object_damage(catalog, manifest, obj))]
    log("restore.objects_verified", backup_id=manifest.id, objects=len(objects), damaged=len(problems))
    if problems:
        raise damaged(manifest, problems, changed)


@contextmanager
def damage_reported(catalog: Catalog, manifest: Manifest, obj: ManifestObject, changed: str) -> Iterator[None]:
    """Reading `obj` failed (decryption, decompression or checksum error): if its stored bytes differ from the
    manifest, say so (checksum mismatch, the object, `pgbackup check`) instead of a decryption error."""
    try:
        yield
    except (DecryptionError, IntegrityError) as exc:
        problem = object_damage(catalog, manifest, obj)
        if problem is None:
            raise
        raise damaged(manifest, [(obj, problem)], changed) from exc


def tools_for(manifest: Manifest, server_major: int, environ: Mapping[str, str]) -> PgTools:
    """The client tools to restore `manifest` into a server of `server_major`: that major, or the pg_dump's that
    wrote the backup when it is newer (pg_restore reads only dumps of its own major or older)."""
    dump_major = int((manifest.tools.get("pg_dump") or "0").split(".")[0] or 0)
    return find_tools(max(server_major, dump_major), environ)


def pick_database(manifest: Manifest, source_database: str | None) -> ManifestObject:
    dumps = [o for o in manifest.objects if o.kind == "database"]
    names = [o.database for o in dumps]
    if source_database is None:
        if len(dumps) != 1:
            raise UsageError(f"backup {manifest.id} holds {len(dumps)} databases ({', '.join(map(str, names))}): "
                             f"choose one with --source-database")
        return dumps[0]
    for obj in dumps:
        if obj.database == source_database:
            return obj
    raise UsageError(f"backup {manifest.id} has no database {source_database!r}; it holds {', '.join(map(str, names))}")


def _feed(catalog: Catalog, manifest: Manifest, obj: ManifestObject, identity: str | None,
          proc: subprocess.Popen[bytes], progress: Progress) -> int:
    """Stream an object's original bytes into a program's stdin; returns bytes written."""
    assert proc.stdin is not None
    with catalog.open_object(manifest, obj, identity=identity) as stream:
        return feed_stdin(stream, proc.stdin, progress.add)


def feed_stdin(stream: BinaryIO, stdin: IO[bytes], on_chunk: Callable[[int], None] | None = None) -> int:
    """Copy `stream` into a program's stdin and close it; returns bytes written. `stream` is read to the end
    either way, so its checksum is still verified."""
    written = 0
    try:
        while chunk := stream.read(CHUNK):
            stdin.write(chunk)
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    except BrokenPipeError:
        # The program stopped reading: its exit status says why. Read on so the checksum is still verified.
        while stream.read(CHUNK):
            pass
    finally:
        try:
            stdin.close()
        except BrokenPipeError:
            pass
    return written


def run_with_stdin(args: list[str], env: Mapping[str, str], catalog: Catalog, manifest: Manifest,
                    obj: ManifestObject, identity: str | None, phase: str) -> tuple[int, str, int]:
    with tempfile.TemporaryFile() as errors, Progress(phase) as progress:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=dict(env))
        try:
            written = _feed(catalog, manifest, obj, identity, proc, progress)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        returncode = proc.wait()
        errors.seek(0)
        return returncode, errors.read().decode(errors="replace"), written


def extract_tar(stream: BinaryIO, into: Path) -> None:
    extract_data(stream, into)
    while stream.read(CHUNK):  # read to the end so the checksum is verified
        pass


