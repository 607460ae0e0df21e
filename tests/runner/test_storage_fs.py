"""The volume backend: nothing visible before commit, nothing left after abort or a full disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pgbackup.api.policy import Compression, Storage as StorageSpec
from pgbackup.runner.storage.pipeline import store_stream
from pgbackup.runner.storage.base import ObjectNotFound, StorageError
from pgbackup.runner.storage.factory import open_storage
from pgbackup.runner.storage.fs import FilesystemStorage, is_temp_name
from tests.runner.storage_support import fs_storage  # noqa: F401 - fixture


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_commit_makes_object_visible_only_then(fs_storage: FilesystemStorage) -> None:
    writer = fs_storage.open_writer("20260101T000000Z/orders.dump")
    writer.write(b"hello ")
    writer.write(b"world")
    assert not fs_storage.exists("20260101T000000Z/orders.dump")
    [temp] = files_under(fs_storage.root)
    assert is_temp_name(temp)
    writer.commit()
    assert fs_storage.get_bytes("20260101T000000Z/orders.dump") == b"hello world"
    assert files_under(fs_storage.root) == ["20260101T000000Z/orders.dump"]


def test_abort_leaves_no_trace(fs_storage: FilesystemStorage) -> None:
    with pytest.raises(RuntimeError):
        with fs_storage.open_writer("20260101T000000Z/orders.dump") as writer:
            writer.write(b"partial")
            raise RuntimeError("pg_dump died")
    assert files_under(fs_storage.root) == []


def test_list_delete_and_missing_objects(fs_storage: FilesystemStorage) -> None:
    for key in ["a/1", "a/2", "b/1", "ab"]:
        fs_storage.put_bytes(key, key.encode())
    assert [info.key for info in fs_storage.list("a/")] == ["a/1", "a/2"]
    assert [info.key for info in fs_storage.list("a")] == ["a/1", "a/2", "ab"]
    assert [info.size for info in fs_storage.list("b/")] == [3]
    fs_storage.delete(["a/1", "a/2", "does/not/exist"])
    assert not (fs_storage.root / "a").exists(), "empty backup directories are removed"
    with pytest.raises(ObjectNotFound, match="a/1"):
        fs_storage.open_reader("a/1")


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_keys_cannot_escape_the_root(fs_storage: FilesystemStorage, key: str) -> None:
    with pytest.raises(StorageError, match="invalid object key"):
        fs_storage.open_writer(key)


def test_unmounted_volume_is_a_clear_error(tmp_path: Path) -> None:
    storage = FilesystemStorage(tmp_path / "not-mounted")
    with pytest.raises(StorageError, match="does not exist: check the volume is mounted"):
        storage.put_bytes("x", b"1")


def test_factory_puts_volume_backups_under_the_policy_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = StorageSpec.model_validate({"volume": {"claimName": "backups", "path": "shop/orders-db"}})
    assert open_storage(spec, volume_root=tmp_path).root == tmp_path / "shop/orders-db"  # type: ignore[attr-defined]
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(tmp_path / "mnt"))
    assert open_storage(spec).url == (tmp_path / "mnt/shop/orders-db").as_uri()


# --- disk full ---------------------------------------------------------------------------------


def test_disk_full_fails_cleanly_and_removes_the_temp_file(tiny_volume: Path) -> None:
    storage = FilesystemStorage(tiny_volume)
    storage.put_bytes("20260101T000000Z/globals.sql", b"-- roles\n")
    incompressible = (os.urandom(256 * 1024) for _ in range(16))  # 4 MiB > 2 MiB volume
    with pytest.raises(StorageError, match="volume is full") as failure:
        store_stream(incompressible, storage, "20260101T000000Z/orders.dump", compression=Compression(algorithm="none"))
    assert "20260101T000000Z/orders.dump" in str(failure.value)
    assert files_under(tiny_volume) == ["20260101T000000Z/globals.sql"], "temp file removed, earlier object intact"


def test_file_size_limit_fails_cleanly_and_removes_the_temp_file(tmp_path: Path) -> None:
    """Same path via RLIMIT_FSIZE (EFBIG) in a child process: works without root."""
    script = textwrap.dedent(
        f"""
        import os, resource, signal
        from pathlib import Path
        from pgbackup.api.policy import Compression
        from pgbackup.runner.storage.pipeline import store_stream
        from pgbackup.runner.storage.base import StorageError
        from pgbackup.runner.storage.fs import FilesystemStorage
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
        storage = FilesystemStorage(Path({str(tmp_path)!r}))
        try:
            store_stream((os.urandom(65536) for _ in range(64)), storage, "b/x", compression=Compression(algorithm="none"))
        except StorageError as exc:
            print("STORAGE_ERROR", exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "STORAGE_ERROR" in result.stdout, result.stderr
    assert "b/x" in result.stdout
    assert files_under(tmp_path) == []
