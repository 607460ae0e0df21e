"""A real storage with hooks in front of it, so a test can act at a chosen point of a run (imported explicitly)."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from typing import BinaryIO

from pgbackup.runner.storage.base import ObjectInfo, ObjectWriter, Storage


class _HookedWriter(ObjectWriter):
    def __init__(self, inner: ObjectWriter, on_write: Callable[[], None]) -> None:
        self.inner = inner
        self.on_write = on_write

    def write(self, data: bytes) -> None:
        self.on_write()
        self.inner.write(data)

    def commit(self) -> None:
        self.inner.commit()

    def abort(self) -> None:
        self.inner.abort()


class DelegatingStorage(Storage):
    """Every operation of a real storage, passed through; subclasses step in where a test needs to. The listing
    variants (list_after, list_dirs) keep the base class's versions built on list(), so a hook on list() sees them."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    @property
    def url(self) -> str:
        return self.inner.url

    def open_writer(self, key: str) -> ObjectWriter:
        return self.inner.open_writer(key)

    def open_reader(self, key: str) -> BinaryIO:
        return self.inner.open_reader(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, keys: builtins.list[str]) -> None:
        self.inner.delete(keys)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        return self.inner.create_exclusive(key, data)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)


class HookedStorage(DelegatingStorage):
    """Delegates every operation (exclusive creation included) to a real storage; `on_list(prefix)` runs before
    each listing and `on_write(key)` before each write, so a test can hold a runner at a chosen point."""

    def __init__(self, inner: Storage, *, on_list: Callable[[str], None] | None = None,
                 on_write: Callable[[str], None] | None = None) -> None:
        super().__init__(inner)
        self.on_list = on_list
        self.on_write = on_write

    def open_writer(self, key: str) -> ObjectWriter:
        writer = self.inner.open_writer(key)
        hook = self.on_write
        return writer if hook is None else _HookedWriter(writer, lambda: hook(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if self.on_list is not None:
            self.on_list(prefix)
        return self.inner.list(prefix)
