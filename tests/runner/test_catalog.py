"""The catalog: manifests as commit markers, check, delete order, unfinished backups, ids."""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from pgbackup.api.policy import Compression
from pgbackup.runner.catalog.catalog import BackupNotFound, Catalog, ManifestChanged
from pgbackup.runner.catalog.manifest import DatabaseInfo, Manifest, ManifestObject, PhysicalInfo, new_backup_id
from pgbackup.runner.storage.pipeline import IntegrityError, store_stream
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.s3 import S3Bucket
from tests.runner.storage_support import (  # noqa: F401 - fixtures
    AgeKey,
    age_key,
    fs_storage,
    s3_storage,
    storage,
)

T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


def take_backup(catalog: Catalog, when: datetime, recipients: list[str] | None = None, *, commit: bool = True) -> Manifest:
    """What the backup command does, minus PostgreSQL: objects first, the manifest last."""
    backup_id = catalog.new_id(when)
    orders = store_stream(
        io.BytesIO(b"orders rows\n" * 5000 + os.urandom(2000)),
        catalog.storage,
        catalog.object_key(backup_id, "orders.dump"),
        compression=Compression(),
        recipients=recipients or [],
    )
    globals_ = store_stream(
        io.BytesIO(b"CREATE ROLE app;\n"), catalog.storage, catalog.object_key(backup_id, "globals.sql"), compression=Compression()
    )
    manifest = Manifest(
        id=backup_id,
        policy="orders-db",
        namespace="shop",
        method="logical",
        started_at=when - timedelta(seconds=30),
        completed_at=when,
        objects=[
            ManifestObject.from_stored(orders, backup_id, kind="database", database="orders"),
            ManifestObject.from_stored(globals_, backup_id, kind="globals"),
        ],
        databases=[DatabaseInfo(name="orders", size_bytes=8_000_000, extensions={"vector": "0.8.0"}, row_counts={"public.orders": 5000})],
        server_version="18.3",
        tools={"pg_dump": "18.3", "pgbackup": "0.1.0"},
        compression="zstd",
        encryption_recipients=recipients or [],
    )
    if commit:
        catalog.write_manifest(manifest)
    return manifest


def test_manifest_fills_totals_and_round_trips() -> None:
    obj = ManifestObject(key="a.zst", size=10, raw_size=40, sha256="0" * 64, compression="zstd", encrypted=False, kind="other")
    manifest = Manifest(
        id="20261120T020000Z", policy="p", namespace="n", method="physical",
        started_at=T0 - timedelta(minutes=2), completed_at=T0, objects=[obj, obj], server_version="15.8",
        compression="zstd", physical=PhysicalInfo(start_lsn="0/2000028", stop_lsn="0/2000100", timeline=1),
    )  # fmt: skip
    assert (manifest.size_bytes, manifest.raw_size_bytes, manifest.duration_seconds) == (20, 80, 120.0)
    stored = json.loads(manifest.to_json())
    assert stored["version"] == 1 and "verified" not in stored
    assert Manifest.model_validate_json(manifest.to_json()) == manifest
    with pytest.raises(ValidationError, match="private age key"):
        Manifest.model_validate({**stored, "encryption_recipients": ["AGE-SECRET-KEY-1ABC"]})


def test_backup_ids_sort_and_never_collide() -> None:
    assert new_backup_id(datetime(2026, 11, 23, 2, 0, 5, tzinfo=UTC)) == "20261123T020005Z"
    taken = {"20261123T020005Z", "20261123T020005Z-1"}
    assert new_backup_id(datetime(2026, 11, 23, 2, 0, 5, 999, tzinfo=UTC), taken) == "20261123T020005Z-2"


def test_catalog_lists_complete_backups_newest_first(storage: Storage) -> None:
    catalog = Catalog(storage)
    first = take_backup(catalog, T0)
    second = take_backup(catalog, T0 + timedelta(days=1))
    same_second = take_backup(catalog, T0 + timedelta(days=1))
    take_backup(catalog, T0 + timedelta(days=2), commit=False)  # killed before its manifest
    assert same_second.id == f"{second.id}-1"
    assert catalog.ids() == [same_second.id, second.id, first.id]
    assert catalog.latest() == catalog.get(same_second.id)
    assert catalog.get(first.id).databases[0].row_counts == {"public.orders": 5000}


def test_write_manifest_returns_location_and_checksum(storage: Storage) -> None:
    catalog = Catalog(storage)
    manifest = take_backup(catalog, T0, commit=False)
    location, digest = catalog.write_manifest(manifest)
    assert location == f"{storage.url}/{manifest.id}/manifest.json"
    assert digest == hashlib.sha256(storage.get_bytes(f"{manifest.id}/manifest.json")).hexdigest()


def edit_row_count(storage: Storage, backup_id: str, rows: int) -> None:
    """What a person (or a bug) editing manifest.json in the bucket does: one recorded row count changed."""
    document = json.loads(storage.get_bytes(f"{backup_id}/manifest.json"))
    document["databases"][0]["row_counts"]["public.orders"] = rows
    storage.put_bytes(f"{backup_id}/manifest.json", json.dumps(document, indent=2).encode())


def test_a_manifest_edited_in_storage_is_named_by_check_get_and_listing(storage: Storage,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    catalog = Catalog(storage)
    older = take_backup(catalog, T0)
    edited = take_backup(catalog, T0 + timedelta(days=1))
    assert storage.get_bytes(f"{edited.id}/manifest.json.sha256").decode() == (
        f"{hashlib.sha256(storage.get_bytes(f'{edited.id}/manifest.json')).hexdigest()}  manifest.json\n")
    edit_row_count(storage, edited.id, 4999)
    capsys.readouterr()

    report = catalog.check(edited.id)
    assert not report.ok
    assert [(p.key, p.status) for p in report.problems] == [("manifest.json", "changed")]
    assert (f"manifest.json of backup {edited.id} ({storage.url}/{edited.id}/manifest.json) does not match its "
            f"recorded SHA-256") in report.summary()
    assert "the manifest was changed after the backup" in report.summary()
    with pytest.raises(ManifestChanged, match=f"manifest.json of backup {edited.id} .* was changed after the backup"):
        catalog.get(edited.id)
    # the listing does not break: the changed backup is left out (never 'latest', never pruned) with a warning
    assert catalog.ids() == [older.id]
    assert catalog.latest() == catalog.get(older.id)
    err = capsys.readouterr().err
    assert "catalog.manifest_changed" in err and edited.id in err


def test_a_backup_from_before_manifest_checksums_loads_with_a_warning(fs_storage: FilesystemStorage,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    catalog = Catalog(fs_storage)
    old = take_backup(catalog, T0)
    fs_storage.delete([f"{old.id}/manifest.json.sha256"])
    capsys.readouterr()
    assert catalog.get(old.id).databases[0].row_counts == {"public.orders": 5000}
    assert catalog.ids() == [old.id]
    assert catalog.check(old.id).ok
    err = capsys.readouterr().err
    assert "catalog.manifest_unsealed" in err and old.id in err


def test_unknown_id_names_the_nearest_ones(fs_storage: FilesystemStorage) -> None:
    catalog = Catalog(fs_storage)
    with pytest.raises(BackupNotFound, match="catalog is empty"):
        catalog.get("20261120T020000Z")
    take_backup(catalog, T0)
    with pytest.raises(BackupNotFound, match=r"nearest ids: 20261120T020000Z.*pgbackup list"):
        catalog.get("20261120T020001Z")


def test_verification_file_marks_a_backup_verified(fs_storage: FilesystemStorage) -> None:
    catalog = Catalog(fs_storage)
    manifest = take_backup(catalog, T0)
    assert not catalog.get(manifest.id).verified
    fs_storage.put_bytes(f"{manifest.id}/verification.json", json.dumps({"passed": True}).encode())
    assert catalog.get(manifest.id).verified
    assert catalog.backups()[0].verified


def test_unreadable_manifest_is_skipped_not_fatal(fs_storage: FilesystemStorage, capsys: pytest.CaptureFixture[str]) -> None:
    catalog = Catalog(fs_storage)
    good = take_backup(catalog, T0)
    fs_storage.put_bytes("20261121T020000Z/manifest.json", b"{not json")
    assert catalog.ids() == [good.id]
    assert "catalog.manifest_unreadable" in capsys.readouterr().err


def test_check_reports_missing_corrupt_and_truncated_objects(storage: Storage) -> None:
    catalog = Catalog(storage)
    manifest = take_backup(catalog, T0)
    assert catalog.check(manifest.id).ok

    orders_key = catalog.object_key(manifest.id, manifest.objects[0].key)
    good_bytes = storage.get_bytes(orders_key)
    flipped = bytearray(good_bytes)
    flipped[100] ^= 0xFF
    storage.put_bytes(orders_key, bytes(flipped))
    report = catalog.check(manifest.id)
    assert [(p.key, p.status) for p in report.problems] == [("orders.dump.zst", "corrupt")]
    assert "orders.dump.zst: corrupt" in report.summary()

    storage.put_bytes(orders_key, good_bytes[:-10])
    assert [p.status for p in catalog.check(manifest.id).problems] == ["truncated"]
    with pytest.raises(IntegrityError, match="orders.dump.zst is truncated"):
        with catalog.open_object(manifest, manifest.objects[0]) as stream:
            stream.read()

    storage.delete([orders_key])
    assert [p.status for p in catalog.check(manifest.id).problems] == ["missing"]


def test_open_object_decrypts_with_the_identity(fs_storage: FilesystemStorage, age_key: AgeKey) -> None:
    catalog = Catalog(fs_storage)
    manifest = take_backup(catalog, T0, recipients=[age_key.recipient])
    assert manifest.objects[0].key == "orders.dump.zst.age" and manifest.encryption_recipients == [age_key.recipient]
    with catalog.open_object(manifest, manifest.objects[0], identity=age_key.identity) as stream:
        assert stream.read().startswith(b"orders rows\n")


class RecordingStorage(FilesystemStorage):
    """A real volume storage that remembers the order of deletions."""

    deleted: list[list[str]]

    def delete(self, keys: list[str]) -> None:
        self.deleted.append(list(keys))
        super().delete(keys)


def test_delete_removes_the_manifest_first_then_the_objects(fs_storage: FilesystemStorage) -> None:
    storage = RecordingStorage(fs_storage.root)
    storage.deleted = []
    catalog = Catalog(storage)
    old = take_backup(catalog, T0)
    kept = take_backup(catalog, T0 + timedelta(days=1))
    catalog.delete(old.id)
    assert storage.deleted[0] == [f"{old.id}/manifest.json"]
    assert sorted(storage.deleted[1]) == [f"{old.id}/globals.sql.zst", f"{old.id}/manifest.json.sha256",
                                          f"{old.id}/orders.dump.zst"]
    assert catalog.ids() == [kept.id]
    assert [info.key for info in storage.list(f"{old.id}/")] == []


def test_unfinished_backups_are_cleaned_after_the_grace_period(storage: Storage) -> None:
    catalog = Catalog(storage)
    complete = take_backup(catalog, T0)
    unfinished = take_backup(catalog, T0 + timedelta(hours=1), commit=False)
    storage.put_bytes("wal/000000010000000000000001.zst", b"wal")  # not a backup directory: never touched
    now = datetime.now(UTC)
    assert catalog.unfinished(timedelta(hours=6), now) == []  # just written: may still be running
    later = now + timedelta(hours=7)
    assert catalog.unfinished(timedelta(hours=6), later) == [unfinished.id]
    assert catalog.clean_unfinished(timedelta(hours=6), later, dry_run=True) == [unfinished.id]
    assert storage.exists(f"{unfinished.id}/orders.dump.zst")
    assert catalog.clean_unfinished(timedelta(hours=6), later) == [unfinished.id]
    assert sorted({info.key.split("/")[0] for info in storage.list()}) == sorted([complete.id, "wal"])
    assert catalog.ids() == [complete.id]


def test_clean_unfinished_aborts_multipart_uploads_of_killed_jobs(s3_bucket: S3Bucket, s3_storage: S3Storage) -> None:
    catalog = Catalog(s3_storage)
    now = datetime.now(UTC)
    writer = s3_storage.open_writer(f"{catalog.new_id(now)}/base.tar")
    writer.write(os.urandom(6 * 1024 * 1024))  # one part uploaded, then the Job is killed (no abort)
    assert len(s3_bucket.incomplete_uploads()) == 1
    catalog.clean_unfinished(timedelta(hours=6), now)
    assert len(s3_bucket.incomplete_uploads()) == 1, "young uploads may belong to a running backup"
    catalog.clean_unfinished(timedelta(hours=6), now + timedelta(hours=7))
    assert s3_bucket.incomplete_uploads() == []
