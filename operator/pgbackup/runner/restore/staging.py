"""Staging a backup's dump in scratch space for a parallel restore: `pg_restore -j N` needs a seekable file, a pipe
from storage restores one table at a time. The dump is downloaded, decrypted and decompressed into a file of its
own (its SHA-256 verified at the end, as when streaming) only when scratch has room for it; the file is removed
whatever happens.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from pgbackup.api import jobenv
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, ManifestObject
from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.common.writes import write_all
from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.common.log import Progress

HEADROOM = 64 * 1024 * 1024
"""Bytes of scratch left free beyond a staged dump (pg_restore's and the runner's own small files)."""


class ScratchFull(RunnerError):
    """Scratch space ran out while staging a dump (the disk filled up meanwhile); the partial file is removed."""

    reason = "ScratchFull"
_SIZE = re.compile(r"^(?P<number>[0-9]+)(?P<unit>Ki|Mi|Gi|Ti)?$")
_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def scratch_limit_for(policy: BackupPolicySpec, scratch: Path) -> int | None:
    """The size limit of `scratch` in bytes when it is a Job's scratch volume (an emptyDir of
    jobTemplate.scratchSizeLimit: exceeding it evicts the pod), else None (a directory of the caller's: its disk)."""
    if scratch != Path(jobenv.SCRATCH_DIR):
        return None
    match = _SIZE.match(policy.job_template.scratch_size_limit.strip())
    return int(match["number"]) * _UNITS[match["unit"]] if match else None


@dataclass(frozen=True)
class ScratchRoom:
    """How much a restore may put into its scratch directory."""

    directory: Path
    free: int
    """Bytes free on the filesystem, less what the scratch size limit (jobTemplate.scratchSizeLimit) leaves."""

    def fits(self, size: int) -> bool:
        return size + HEADROOM <= self.free

    def describe(self) -> str:
        return f"{self.free // (1024 * 1024)} MiB free in {self.directory}"


def scratch_room(scratch: Path | None, limit: int | None = None) -> ScratchRoom:
    """The room in `scratch` (the system temp directory when None): the filesystem's free bytes and, under a
    `limit` (a pod's emptyDir sizeLimit, which evicts the pod when exceeded rather than failing a write), what
    the limit leaves after the files already there."""
    directory = scratch if scratch is not None else Path(tempfile.gettempdir())
    free = shutil.disk_usage(directory).free
    if limit is not None:
        free = min(free, max(0, limit - _used(directory)))
    return ScratchRoom(directory, free)


def _used(directory: Path) -> int:
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@contextmanager
def staged_object(catalog: Catalog, manifest: Manifest, obj: ManifestObject, identity: str | None,
                  scratch: Path, observe: Callable[[bytes], None] | None = None,
                  opened: Callable[[Path], None] | None = None,
                  convert: Callable[[BinaryIO], Readable] | None = None) -> Iterator[Path]:
    """The original bytes of `obj` in a file under `scratch`, verified against the manifest (size, SHA-256) before
    it is handed out; the file and its directory are removed on leaving, on success and on every failure.
    `opened` is told the file's path once it exists; `observe` sees every chunk once it is written there (in the
    writing thread; what it raises ends the staging). `convert`: what is staged is what it reads from the
    object's bytes (it must read them to the end, where they are verified)."""
    workdir = Path(tempfile.mkdtemp(prefix="pgbackup-restore-", dir=scratch))
    try:
        path = workdir / "dump"
        try:
            with Progress("download", obj.raw_size) as progress, \
                    catalog.open_object(manifest, obj, identity=identity) as stream:
                _stage(convert(stream) if convert else stream, path, obj.raw_size, progress.add, observe, opened)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ScratchFull(f"staging database {obj.database!r} of backup {manifest.id} for a parallel "
                              f"restore filled the scratch space ({workdir.parent}): {exc.strerror}; nothing "
                              f"was restored. Give the restore more scratch (jobTemplate.scratchSizeLimit and "
                              f"the node's disk) or restore with jobs: 1, which streams without scratch"
                              ) from exc
        yield path
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _stage(stream: Readable, path: Path, size: int, on_chunk: Callable[[int], None],
           observe: Callable[[bytes], None] | None, opened: Callable[[Path], None] | None = None) -> None:
    """Copy `stream` (download, checksum, decryption, decompression: this thread) into a new file at `path`
    (written by a thread of its own, so that writing overlaps decompressing: a third of the staging time of a
    950 MB dump). The file's `size` bytes are reserved first, so a scratch too small fails before the download."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _reserve(fd, size)
        if opened is not None:
            opened(path)
        writer = _StagingWriter(fd, observe)
        try:
            while chunk := stream.read(CHUNK):
                writer.put(chunk)
                on_chunk(len(chunk))
        finally:
            written = writer.close()
        if written < size:
            os.ftruncate(fd, written)
    finally:
        os.close(fd)


def _reserve(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        # EOPNOTSUPP/EINVAL: the filesystem cannot reserve space; the writes find out instead


class _StagingWriter:
    """Writes chunks handed over a bounded queue to a file descriptor, in a thread; its error (an OSError: a full
    disk) is raised to the reading thread at its next put() or at close()."""

    _QUEUE_CHUNKS = 4

    def __init__(self, fd: int, observe: Callable[[bytes], None] | None = None) -> None:
        self._fd = fd
        self._observe = observe
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self._QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._written = 0
        self._thread = threading.Thread(target=self._run, name="stage-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain, so that the reading thread never blocks on a full queue
            try:
                write_all(self._fd, chunk)
                self._written += len(chunk)
                if self._observe is not None:
                    self._observe(chunk)
            except BaseException as exc:  # handed to the reading thread, which would otherwise wait forever
                self._error = exc

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> int:
        """Wait for the writes to finish; bytes written. Raises the writer's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._written
