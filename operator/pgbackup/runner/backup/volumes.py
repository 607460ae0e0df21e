"""Application volumes (BackupPolicy spec.volumes) in the same backup as the databases.

Backup: each claim, mounted read-only at $PGBACKUP_APP_VOLUMES_ROOT/<claimName>, is written as one tar
(tarfile stream mode 'w|', PAX format: modes, mtimes, owners, symlinks and hard links kept; sockets, devices
and FIFOs skipped) into a pipe that store_stream reads: bounded memory, no temporary copy, the same
compression, encryption and SHA-256 as every other object (`volumes/<claimName>.tar.zst[.age]`, kind 'volume').

Restored by pgbackup.runner.restore.volumes.
"""

from __future__ import annotations

import fnmatch
import os
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pgbackup.api import jobenv
from pgbackup.api.policy import AppVolume, Compression
from pgbackup.runner.catalog.manifest import volume_object_name
from pgbackup.runner.common.config import CHUNK, LOST_AND_FOUND, app_volumes_root
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.common.log import Progress, log, log_warning
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.pipeline import StoredObject, store_stream


# ---------------------------------------------------------------- backup


@dataclass
class TarStats:
    files: int = 0
    directories: int = 0
    links: int = 0
    skipped: int = 0
    excluded: int = 0


def _excluded(arcname: str, exclude: Sequence[str]) -> bool:
    name = arcname.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(arcname, p) or fnmatch.fnmatchcase(name, p) for p in exclude)


# ext4 puts it at the root of every fresh volume, owned by root and unreadable for the Job's user.
def walk_volume(root: Path, paths: Sequence[str], exclude: Sequence[str], stats: TarStats,
                claim: str) -> Iterator[tuple[Path, str]]:
    """(file system path, name in the tar) of everything to copy, in a stable order; excluded directories
    are not descended into, symlinks are never followed, lost+found is left out."""
    for rel in paths:
        start = root if rel == "." else root / rel
        if not os.path.lexists(start):
            raise UsageError(f"volume {claim}: path {rel!r} does not exist in the claim (mounted at {root}); "
                             f"fix BackupPolicy spec.volumes[{claim}].paths", reason="VolumePathMissing")
        yield from _walk(start, "" if rel == "." else rel, [*exclude, LOST_AND_FOUND], stats, claim)


def _walk(path: Path, arcname: str, exclude: Sequence[str], stats: TarStats,
          claim: str) -> Iterator[tuple[Path, str]]:
    if arcname:
        yield path, arcname
    if not path.is_symlink() and path.is_dir():
        try:
            names = sorted(os.listdir(path))
        except PermissionError as exc:
            raise _unreadable(claim, arcname or ".", exc) from None
        for name in names:
            child = f"{arcname}/{name}" if arcname else name
            if _excluded(child, exclude):
                stats.excluded += 1
                continue
            yield from _walk(path / name, child, exclude, stats, claim)


def _unreadable(claim: str, arcname: str, exc: OSError) -> RunnerError:
    return RunnerError(
        f"volume {claim}: cannot read {arcname!r} ({exc.strerror}); the backup Job runs as uid {os.geteuid()}: "
        f"make it readable for that user (e.g. world- or group-readable) or leave it out with "
        f"spec.volumes[{claim}].exclude", reason="VolumeUnreadable")


class _ExactReader:
    """Exactly `size` bytes of a file that may change while it is read (a live volume): a shrunken file is
    padded with zeros, a grown one cut at the size recorded in its header."""

    def __init__(self, file: BinaryIO, size: int, path: Path) -> None:
        self.file, self.left, self.path, self.changed = file, size, path, False

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if n is None or n < 0 else min(n, self.left)
        data = self.file.read(want)
        if len(data) < want:
            self.changed = True
            data += b"\0" * (want - len(data))
        self.left -= len(data)
        return data


class VolumeTar:
    """A tar of one volume produced by a thread into a pipe; iterate it for the bytes. A failure in the
    thread (an unreadable file) is raised at the end of the iteration, so store_stream aborts the upload."""

    def __init__(self, root: Path, volume: AppVolume) -> None:
        self.root, self.volume = root, volume
        self.stats = TarStats()
        self.error: BaseException | None = None
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb", buffering=CHUNK)
        self._writer = os.fdopen(write_fd, "wb", buffering=CHUNK)
        self._thread = threading.Thread(target=self._produce, name=f"tar-{volume.claim_name}", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            with tarfile.open(fileobj=self._writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path, arcname in walk_volume(self.root, self.volume.paths, self.volume.exclude, self.stats,
                                                 self.volume.claim_name):
                    self._add(tar, path, arcname)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading side
            self.error = exc
        finally:
            try:
                self._writer.close()
            except OSError:  # the reader went away (upload aborted)
                pass

    def _add(self, tar: tarfile.TarFile, path: Path, arcname: str) -> None:
        claim = self.volume.claim_name
        try:
            info = tar.gettarinfo(str(path), arcname)
        except FileNotFoundError:  # removed since it was listed: a live volume
            self.stats.skipped += 1
            return
        if info is None or not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
            self.stats.skipped += 1  # sockets, devices, FIFOs: nothing to restore from them
            return
        if not info.isreg() or info.islnk():
            self.stats.directories += info.isdir()
            self.stats.links += info.issym() or info.islnk()
            tar.addfile(info)
            return
        try:
            with open(path, "rb") as file:
                reader = _ExactReader(file, info.size, path)
                tar.addfile(info, reader)
        except PermissionError as exc:
            raise _unreadable(claim, arcname, exc) from None
        if reader.changed:
            log_warning("volume.file_changed", claim=claim, path=arcname,
                        hint="the file shrank while it was copied; its tail is zero-filled in this backup")
        self.stats.files += 1

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._reader.read(CHUNK):
            yield chunk
        self._thread.join()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._reader.close()  # a writer still running gets EPIPE and stops
        self._thread.join()


@dataclass(frozen=True)
class StoredVolume:
    claim: str
    stored: StoredObject
    stats: TarStats


def backup_volume(root: Path, volume: AppVolume, storage: Storage, key: str, compression: Compression,
                  recipients: Sequence[str]) -> StoredVolume:
    """Stream one volume (mounted at `root`) into storage under `key` (+ suffixes)."""
    if not root.is_dir():
        raise RunnerError(f"volume {volume.claim_name} is not mounted at {root}; the backup Job mounts each "
                          f"spec.volumes claim there (set ${jobenv.ENV_APP_VOLUMES_ROOT} when running by hand)",
                          reason="VolumeNotMounted")
    log("volume.start", claim=volume.claim_name, paths=volume.paths, exclude=volume.exclude)
    tar = VolumeTar(root, volume)
    try:
        with Progress("volume", claim=volume.claim_name) as progress:
            stored = store_stream(tar, storage, key, compression=compression, recipients=tuple(recipients),
                                  progress=progress)
    finally:
        tar.close()
    stats = tar.stats
    log("volume.done", claim=volume.claim_name, key=stored.key, size=stored.size, raw_size=stored.raw_size,
        files=stats.files, directories=stats.directories, links=stats.links, excluded=stats.excluded,
        skipped=stats.skipped)
    return StoredVolume(claim=volume.claim_name, stored=stored, stats=stats)


def backup_volumes(volumes: Sequence[AppVolume], storage: Storage, key_for: Callable[[str], str], compression: Compression,
                   recipients: Sequence[str], environ: Mapping[str, str] | None = None) -> list[StoredVolume]:
    """Every spec.volumes claim, in order; `key_for` maps an object name to its storage key."""
    root = app_volumes_root(environ)
    return [backup_volume(root / volume.claim_name, volume, storage, key_for(volume_object_name(volume.claim_name)),
                          compression, recipients) for volume in volumes]
