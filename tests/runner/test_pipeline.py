"""The streaming pipeline: every compression x encryption on both backends, the stock `age`/`zstd` tools
reading our objects, integrity and identity errors, aborts, and bounded memory."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbackup.api.policy import Compression
from pgbackup.runner.storage.identity import load_identity
from pgbackup.runner.storage.pipeline import IdentityError, IntegrityError, StoredObject, store_stream
from pgbackup.runner.storage.readback import open_stored
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.runner.storage_support import (  # noqa: F401 - fixtures
    AgeKey,
    age_key,
    fs_storage,
    other_age_key,
    s3_storage,
    storage,
)

MIB = 1024 * 1024


def sample(size: int = 3 * MIB) -> bytes:
    """Half random, half repetitive: compresses somewhat, like a real dump."""
    random_part = os.urandom(size // 2)
    return random_part + (b"INSERT INTO orders VALUES (42, 'pending');\n" * (size // 2 // 43 + 1))[: size - size // 2]


def read_all(storage: Storage, obj: StoredObject, identity: str | None = None) -> bytes:
    with open_stored(storage, obj, identity=identity) as stream:
        return stream.read()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
@pytest.mark.parametrize("algorithm", ["zstd", "gzip", "none"])
def test_round_trip(storage: Storage, algorithm: str, encrypted: bool, age_key: AgeKey) -> None:
    data = sample()
    stored = store_stream(
        io.BytesIO(data),
        storage,
        "20260101T000000Z/orders.dump",
        compression=Compression(algorithm=algorithm),  # type: ignore[arg-type]
        recipients=[age_key.recipient] if encrypted else [],
    )
    suffix = {"zstd": ".zst", "gzip": ".gz", "none": ""}[algorithm] + (".age" if encrypted else "")
    assert stored.key == f"20260101T000000Z/orders.dump{suffix}"
    assert [info.key for info in storage.list()] == [stored.key]
    assert stored.raw_size == len(data)
    assert stored.size == len(storage.get_bytes(stored.key))
    if algorithm != "none":
        assert stored.size < len(data) * 0.8 + (1024 if encrypted else 0)
    assert read_all(storage, stored, age_key.identity if encrypted else None) == data


def test_iterable_source_and_empty_source(fs_storage: FilesystemStorage, age_key: AgeKey) -> None:
    chunks = [b"a" * 1000, b"", b"b" * 5000]
    stored = store_stream(iter(chunks), fs_storage, "x/iter", compression=Compression(), recipients=[age_key.recipient])
    assert read_all(fs_storage, stored, age_key.identity) == b"".join(chunks)
    empty = store_stream(iter([]), fs_storage, "x/empty", compression=Compression(), recipients=[age_key.recipient])
    assert empty.raw_size == 0 and read_all(fs_storage, empty, age_key.identity) == b""


def test_stock_age_and_zstd_decrypt_a_backup_without_our_code(fs_storage: FilesystemStorage, age_key: AgeKey) -> None:
    data = sample()
    stored = store_stream(
        io.BytesIO(data), fs_storage, "b/orders.dump", compression=Compression(threads=2), recipients=[age_key.recipient]
    )
    path = fs_storage.root / stored.key
    result = subprocess.run(
        f"age -d -i {age_key.identity_file} {path} | zstd -d -c", shell=True, capture_output=True, check=True
    )
    assert result.stdout == data
    digest = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert digest == stored.sha256, "the recorded checksum is `sha256sum` of the stored file"


def test_gzip_objects_are_plain_gzip(fs_storage: FilesystemStorage) -> None:
    data = sample(MIB)
    stored = store_stream(io.BytesIO(data), fs_storage, "b/globals.sql", compression=Compression(algorithm="gzip", level=1))
    assert gzip.decompress((fs_storage.root / stored.key).read_bytes()) == data


def test_every_recipient_can_decrypt(fs_storage: FilesystemStorage, age_key: AgeKey, other_age_key: AgeKey) -> None:
    """Key rotation: objects are encrypted for the old and the new key until the old one is retired."""
    data = sample(MIB)
    stored = store_stream(
        io.BytesIO(data), fs_storage, "b/x", compression=Compression(), recipients=[age_key.recipient, other_age_key.recipient]
    )
    assert read_all(fs_storage, stored, age_key.identity) == data
    assert read_all(fs_storage, stored, other_age_key.identity) == data


def test_wrong_identity_is_a_clear_error(fs_storage: FilesystemStorage, age_key: AgeKey, other_age_key: AgeKey) -> None:
    stored = store_stream(io.BytesIO(b"secret rows"), fs_storage, "b/x", compression=Compression(), recipients=[age_key.recipient])
    with pytest.raises(IdentityError) as failure:
        with open_stored(fs_storage, stored, identity=other_age_key.identity, recipients=[age_key.recipient]) as stream:
            stream.read()
    message = str(failure.value)
    assert "b/x.zst.age" in message and age_key.recipient in message and "identity Secret" in message
    assert other_age_key.recipient in message, "names the public key of the identity that was tried"
    assert "AGE-SECRET-KEY" not in message


def test_missing_identity_is_a_clear_error(fs_storage: FilesystemStorage, age_key: AgeKey) -> None:
    stored = store_stream(io.BytesIO(b"rows"), fs_storage, "b/x", compression=Compression(), recipients=[age_key.recipient])
    with pytest.raises(IdentityError, match=r"b/x.zst.age is encrypted.*mount the identity Secret"):
        with open_stored(fs_storage, stored):
            pass


def test_load_identity_from_the_mounted_secret(
    tmp_path: Path, age_key: AgeKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGBACKUP_AGE_IDENTITY_FILE", str(age_key.identity_file))
    assert load_identity() == age_key.identity
    assert load_identity(age_key.identity_file) == age_key.identity
    monkeypatch.delenv("PGBACKUP_AGE_IDENTITY_FILE")
    with pytest.raises(IdentityError, match="PGBACKUP_AGE_IDENTITY_FILE is not set"):
        load_identity()
    (tmp_path / "bad").write_text("age1notaprivatekey\n")
    with pytest.raises(IdentityError, match="no age identity"):
        load_identity(tmp_path / "bad")


@pytest.mark.parametrize(
    ("algorithm", "encrypted"), [("zstd", True), ("zstd", False), ("gzip", False), ("none", False), ("none", True)]
)
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_objects_raise_integrity_error(
    storage: Storage, algorithm: str, encrypted: bool, damage: str, age_key: AgeKey
) -> None:
    data = sample(MIB)
    stored = store_stream(
        io.BytesIO(data),
        storage,
        "b/orders.dump",
        compression=Compression(algorithm=algorithm),  # type: ignore[arg-type]
        recipients=[age_key.recipient] if encrypted else [],
    )
    raw = bytearray(storage.get_bytes(stored.key))
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
    else:
        del raw[len(raw) * 3 // 4 :]
    storage.put_bytes(stored.key, bytes(raw))
    with pytest.raises(IntegrityError, match="b/orders.dump") as failure:
        read_all(storage, stored, age_key.identity if encrypted else None)
    assert ("truncated" if damage == "truncate" else "corrupted") in str(failure.value)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
def test_failing_source_leaves_nothing_behind(fs_storage: FilesystemStorage, encrypted: bool, age_key: AgeKey) -> None:
    def killed_dump() -> Iterator[bytes]:
        yield os.urandom(2 * MIB)
        raise ChildProcessError("pg_dump exited with 1: connection lost")

    with pytest.raises(ChildProcessError, match="connection lost"):
        store_stream(
            killed_dump(), fs_storage, "b/orders.dump", compression=Compression(), recipients=[age_key.recipient] if encrypted else []
        )
    assert list(fs_storage.root.rglob("*.*")) == []


def test_invalid_recipient_is_rejected_before_anything_is_written(fs_storage: FilesystemStorage) -> None:
    from pgbackup.runner.storage.base import StorageError

    with pytest.raises(StorageError, match="not a valid age public key"):
        store_stream(io.BytesIO(b"x"), fs_storage, "b/x", compression=Compression(), recipients=["age1nope-not-a-key"])
    assert list(fs_storage.root.iterdir()) == []


def test_memory_stays_bounded_for_200_mib(tmp_path: Path, age_key: AgeKey) -> None:
    """200 MiB through zstd + age into a volume and back, in a child process whose peak RSS we read."""
    script = textwrap.dedent(
        f"""
        import os, resource
        from pathlib import Path
        from pgbackup.api.policy import Compression
        from pgbackup.runner.storage.pipeline import store_stream
        from pgbackup.runner.storage.readback import open_stored
        from pgbackup.runner.storage.fs import FilesystemStorage
        def source():
            for n in range(200):
                yield os.urandom(1 << 20)  # incompressible: 200 MiB stored, too
        storage = FilesystemStorage(Path({str(tmp_path)!r}))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stored = store_stream(source(), storage, "b/big", compression=Compression(threads=2), recipients=[{age_key.recipient!r}])
        total = 0
        with open_stored(storage, stored, identity={age_key.identity!r}) as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(stored.raw_size, stored.size, total, before // 1024, after // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    raw_size, stored_size, read_back, rss_before_mib, rss_peak_mib = map(int, result.stdout.split())
    assert raw_size == read_back == 200 * MIB
    assert stored_size > raw_size
    assert rss_peak_mib - rss_before_mib < 100, f"peak RSS grew by {rss_peak_mib - rss_before_mib} MiB for 200 MiB"


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
def test_reader_closed_early_releases_everything(storage: Storage, encrypted: bool, age_key: AgeKey) -> None:
    """pg_restore may stop reading (e.g. it failed); closing the stream must not hang or leak threads."""
    import threading

    stored = store_stream(
        io.BytesIO(sample(4 * MIB)), storage, "b/x", compression=Compression(), recipients=[age_key.recipient] if encrypted else []
    )
    before = threading.active_count()
    with open_stored(storage, stored, identity=age_key.identity if encrypted else None) as stream:
        assert len(stream.read(1000)) == 1000
    assert threading.active_count() <= before


def test_undecodable_object_with_a_matching_checksum_is_a_decryption_error(fs_storage: FilesystemStorage) -> None:
    from dataclasses import replace

    from pgbackup.runner.storage.pipeline import DecryptionError

    stored = store_stream(io.BytesIO(sample(MIB)), fs_storage, "b/x", compression=Compression(algorithm="none"))
    mislabelled = replace(stored, compression="zstd")  # bytes intact, wrong codec recorded
    with pytest.raises(DecryptionError, match="b/x") as failure:
        read_all(fs_storage, mislabelled)
    assert not isinstance(failure.value, IntegrityError)
