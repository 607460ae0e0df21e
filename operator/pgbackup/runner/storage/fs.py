"""A directory on a mounted volume as backup storage: temp file + fsync + atomic rename, so a reader never
sees half an object and a crash leaves at worst a temp file (listed, so the catalog can clean it up)."""

from __future__ import annotations

import builtins
import errno
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from pgbackup.api import jobenv
from pgbackup.runner.common.writes import write_all
from pgbackup.runner.storage.base import ObjectInfo, ObjectNotFound, ObjectWriter, Storage, StorageError

TEMP_MARKER = ".partial-"


def is_temp_name(key: str) -> bool:
    """Whether a key is an upload in progress (or left behind by a killed one)."""
    return TEMP_MARKER in key.rsplit("/", 1)[-1]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _explain(exc: OSError, what: str, path: Path) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = ("the volume is full: grow the PersistentVolumeClaim, or keep fewer backups (lower spec.retention; "
                "`pgbackup retention` applies it at once). A failed backup removes what it wrote and the next "
                "backup removes what killed runs left, so nothing needs deleting by hand")
    elif exc.errno == errno.EFBIG:
        hint = "the file is larger than the file system or process allows (file size limit)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "no permission: check the volume is mounted read-write and writable by the Job's user (fsGroup)"
    else:
        hint = "check the volume mount"
    return StorageError(f"{what} {path} failed: {exc.strerror or exc}; {hint}")


class _FileWriter(ObjectWriter):
    def __init__(self, final: Path) -> None:
        self._final = final
        self._temp = final.with_name(f".{final.name}{TEMP_MARKER}{secrets.token_hex(4)}")
        self._done = False
        try:
            self._created_dirs = _make_dirs(final.parent)
            self._fd: int | None = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise _explain(exc, "creating", self._temp) from exc

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise StorageError(f"write to {self._final} after commit/abort")
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self.abort()
            raise _explain(exc, "writing", self._final) from exc

    def commit(self) -> None:
        if self._done:
            return
        if self._fd is None:
            raise StorageError(f"commit of {self._final} after abort")
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.replace(self._temp, self._final)
            _fsync_dir(self._final.parent)
            for created in self._created_dirs:
                _fsync_dir(created.parent)
        except OSError as exc:
            self.abort()
            raise _explain(exc, "committing", self._final) from exc
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        try:
            self._temp.unlink(missing_ok=True)
        except OSError:
            pass


def _key_of(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _before(directory_key: str, start_after: str) -> bool:
    """Whether every key under `directory_key` ('a/b/') sorts at or before `start_after`."""
    return directory_key < start_after and not start_after.startswith(directory_key)


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p that reports which directories it created (their parents need an fsync)."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            pass
    return list(reversed(missing))


class FilesystemStorage(Storage):
    """Objects are files under `root`; keys map to relative paths."""

    def __init__(self, root: Path, *, volume_root: Path | None = None) -> None:
        """`volume_root`: where the volume is mounted when `root` is a directory on it. Then a missing `root`
        (the first backup to a new path) is created, while a missing volume root is reported as not mounted."""
        self.root = Path(root)
        self.volume_root = Path(volume_root) if volume_root is not None else None

    def _not_mounted(self) -> StorageError | None:
        if self.volume_root is None or self.volume_root.is_dir():
            return None
        return StorageError(
            f"the backup volume is not mounted at {self.volume_root} (backup directory {self.root}): check "
            f"storage.volume.claimName names an existing PersistentVolumeClaim and the Job mounts it there "
            f"(${jobenv.ENV_VOLUME_ROOT} overrides the mount path)"
        )

    def _ensure_root(self) -> None:
        """Create the backup directory on a mounted volume at the first backup; refuse to write elsewhere."""
        if self.root.is_dir():
            return
        unmounted = self._not_mounted()
        if unmounted is not None:
            raise unmounted
        if self.volume_root is None:
            raise StorageError(
                f"backup directory {self.root} does not exist: check the volume is mounted "
                f"(storage.volume.claimName) and the path exists"
            )
        try:
            for created in _make_dirs(self.root):
                _fsync_dir(created.parent)
        except OSError as exc:
            raise _explain(exc, "creating the backup directory", self.root) from exc

    @property
    def url(self) -> str:
        return self.root.absolute().as_uri()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise StorageError(f"invalid object key {key!r} under {self.root}: keys are relative, '/'-separated")
        return self.root.joinpath(*parts)

    def open_writer(self, key: str) -> ObjectWriter:
        path = self._path(key)
        self._ensure_root()
        return _FileWriter(path)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """O_CREAT|O_EXCL on the final name (atomic on local file systems and NFS v3+). A reader may see the
        object before its bytes are complete; the claims that use this tolerate that."""
        path = self._path(key)
        self._ensure_root()
        try:
            created = _make_dirs(path.parent)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _explain(exc, "creating", path) from exc
        try:
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(path.parent)
            for directory in created:
                _fsync_dir(directory.parent)
        except OSError as exc:
            path.unlink(missing_ok=True)
            self._remove_empty_parents(path.parent)
            raise _explain(exc, "writing", path) from exc
        return True

    def open_reader(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"object {key} not found in {self.root}") from exc
        except OSError as exc:
            raise _explain(exc, "reading", path) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._walk(prefix, None)

    def list_after(self, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        """Directories whose keys all sort before `start_after` are not entered, files there not stat()ed."""
        return self._walk(prefix, start_after)

    def list_dirs(self, prefix: str = "") -> Iterator[str]:
        """One read of the directory `prefix` names (its subdirectories, not their content)."""
        directory, head, rest = self._start(prefix)
        if not directory.is_dir():
            return iter(())
        try:
            with os.scandir(directory) as entries:
                names = [entry.name for entry in entries
                         if entry.name.startswith(rest) and entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return iter(())
        except OSError as exc:
            raise _explain(exc, "listing", directory) from exc
        return iter(sorted(f"{head}{name}/" for name in names))

    def _start(self, prefix: str) -> tuple[Path, str, str]:
        """(directory to read, its key prefix 'a/b/' or '', the start of names in it) for a listing of `prefix`."""
        unmounted = self._not_mounted()
        if unmounted is not None:
            raise unmounted
        head, slash, rest = prefix.rpartition("/")
        directory = self.root.joinpath(*head.split("/")) if head else self.root
        return directory, head + slash, rest

    def _walk(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        # Start the walk at the deepest directory the prefix names, and enter only the directories there
        # that match the rest of it (a prefix like a backup id must not walk a whole WAL archive).
        directory, _, rest = self._start(prefix)
        if not directory.is_dir():
            return
        found: builtins.list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(directory):
            if rest and dirpath == str(directory):
                dirnames[:] = [name for name in dirnames if name.startswith(rest)]
            base = Path(dirpath)
            if start_after is not None:  # skip subtrees whose every key sorts before start_after
                dirnames[:] = [name for name in dirnames if not _before(_key_of(self.root, base / name) + "/", start_after)]
            dirnames.sort()
            for name in filenames:
                path = base / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix) or (start_after is not None and key <= start_after):
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # deleted or renamed meanwhile
                found.append(ObjectInfo(key=key, size=stat.st_size, modified=datetime.fromtimestamp(stat.st_mtime, UTC)))
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, keys: builtins.list[str]) -> None:
        for key in keys:
            path = self._path(key)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise _explain(exc, "deleting", path) from exc
            self._remove_empty_parents(path.parent)

    def _remove_empty_parents(self, directory: Path) -> None:
        root = self.root.absolute()
        directory = directory.absolute()
        while directory != root and root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or gone)
            directory = directory.parent

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()
