"""One small interface for every place backups live (S3-compatible buckets, a mounted volume).

Keys are '/'-separated and relative to the backend's root (bucket+prefix, or a directory); backends never
see a secret: they take credentials from the environment (boto3) or need none (filesystem).
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

# The storage errors are part of this interface; they are defined with the runner's other errors, where their
# exit codes are decided.
from pgbackup.runner.common.errors import ExclusiveCreateUnsupported as ExclusiveCreateUnsupported
from pgbackup.runner.common.errors import ObjectNotFound as ObjectNotFound
from pgbackup.runner.common.errors import StorageError as StorageError
from pgbackup.runner.common.errors import StorageUnreachable as StorageUnreachable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class ObjectWriter(abc.ABC):
    """A streaming upload. Nothing is visible under `key` until commit(); abort() leaves no trace."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def abort(self) -> None: ...

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class Storage(abc.ABC):
    """A backup repository."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Human/machine readable root, e.g. 's3://backups/shop/orders-db' or 'file:///backups/orders-db'."""

    def location(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    @abc.abstractmethod
    def open_writer(self, key: str) -> ObjectWriter:
        """Start a streaming upload of `key` (multipart on S3, temp file + fsync + rename on a volume)."""

    @abc.abstractmethod
    def open_reader(self, key: str) -> BinaryIO:
        """Stream an object; raises ObjectNotFound."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`."""

    def list_after(self, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        """The objects of list(prefix) whose key sorts after `start_after` (by code point, as S3 orders keys):
        what was added beyond a key seen before, without returning what precedes it again (S3: StartAfter).
        This default filters a full listing; the backends override it."""
        return (info for info in self.list(prefix) if info.key > start_after)

    def list_dirs(self, prefix: str = "") -> Iterator[str]:
        """The "directories" at the level of `prefix`: the distinct `<prefix><name>/` (sorted) of the keys under
        `prefix` that have a '/' after it, without listing what lies inside them (S3: Delimiter='/' and its
        CommonPrefixes; a volume: one directory read). `prefix` is a directory ('wal/', '' for the root) or the
        start of names in one ('2026' lists '2026.../'). This default derives them from a full listing; the
        backends override it."""
        seen: set[str] = set()
        for info in self.list(prefix):
            head, slash, _ = info.key[len(prefix):].partition("/")
            if slash and head not in seen:
                seen.add(head)
        return iter(sorted(f"{prefix}{name}/" for name in seen))

    @abc.abstractmethod
    def delete(self, keys: builtins.list[str]) -> None:
        """Delete keys; missing keys are not an error."""

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create `key` holding `data` only if no object has that key, atomically: True if this call created
        it, False if it existed. Backends that cannot raise ExclusiveCreateUnsupported (this default)."""
        raise ExclusiveCreateUnsupported(f"{self.url} cannot create an object only if it is absent")

    def put_bytes(self, key: str, data: bytes) -> None:
        with self.open_writer(key) as writer:
            writer.write(data)

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as reader:
            return reader.read()

    def exists(self, key: str) -> bool:
        return any(info.key == key for info in self.list(key))
