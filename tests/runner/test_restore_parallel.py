"""Parallel logical restores: a custom-format dump is staged in scratch and loaded by N jobs while it arrives when
it fits (by `pg_restore -j N` from the staged file when it holds large objects), streamed with one job when it
does not, and a failure while staging leaves nothing behind (no file in scratch, no database). Real PostgreSQL 15,
the filesystem storage and moto S3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pgbackup.runner.backup import logical as logical_backup
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.errors import RunnerError, StorageError
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.restore.reading import BackupDamaged
from pgbackup.runner.restore.staging import ScratchFull, staged_object
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.postgres import PgServer, backup_policy, load_sample, runner_env, table_digest
from tests.fixtures.s3 import CuttingProxy, MotoServer, S3Bucket


def params_for(server: PgServer) -> ConnParams:
    return ConnParams(host=server.host, port=server.port, user=server.user, password=server.password)


def database_exists(server: PgServer, name: str) -> bool:
    return bool(server.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


def events(stderr: str, name: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            found.append(record)
    return found


def take(server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: dict[str, Any],
         **logical: Any) -> tuple[str, str]:
    """A logical backup of the sample database into `storage`: (database, backup id)."""
    db = load_sample(server)
    runner_env(server, monkeypatch, tmp_path)
    document = backup_policy(server, storage, databases=[db], logical={"globals": False, **logical})
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    return db, str(summary.backup_id)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    path = tmp_path / "restore-scratch"
    path.mkdir()
    return path


def volume_backup(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Catalog, str]:
    db, backup_id = take(pg15, tmp_path, monkeypatch, {"volume": {"claimName": "backups"}})
    return db, Catalog(FilesystemStorage(tmp_path / "volume")), backup_id


def test_a_custom_dump_from_s3_is_restored_by_parallel_jobs_with_the_same_rows(
        pg15: PgServer, s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db, backup_id = take(pg15, tmp_path, monkeypatch, {"s3": s3_bucket.wire()})
    catalog = Catalog(S3Storage(s3_bucket.spec(), max_attempts=2))
    capsys.readouterr()

    report = restore_backup(catalog, backup_id, params_for(pg15), "parallel_fc", jobs=2, scratch=scratch)

    assert report.ok and report.tables
    assert table_digest(pg15, "parallel_fc") == table_digest(pg15, db)
    err = capsys.readouterr().err
    (parallel,) = events(err, "restore.parallel")
    assert parallel["jobs"] == 2
    assert parallel["loaded_while_staging"] is True  # each table loaded as soon as its rows arrived
    assert parallel["pieces"] >= len([t for t in report.tables if t.actual])
    assert list(scratch.iterdir()) == []


def test_a_dump_with_large_objects_is_staged_then_restored_by_pg_restore_j_with_its_offsets(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = load_sample(pg15, "parallel_lo")
    with pg15.connect(db) as conn:
        if not conn.execute("SELECT 1 FROM pg_largeobject_metadata").fetchone():
            conn.execute("SELECT lo_from_bytea(0, convert_to(repeat('large object', 1000), 'UTF8'))")
    runner_env(pg15, monkeypatch, tmp_path)
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}}, databases=[db], logical={"globals": False})
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    catalog = Catalog(FilesystemStorage(tmp_path / "volume"))
    capsys.readouterr()

    report = restore_backup(catalog, str(summary.backup_id), params_for(pg15), "parallel_lo_fc", jobs=2,
                            scratch=scratch)

    assert report.ok
    assert table_digest(pg15, "parallel_lo_fc") == table_digest(pg15, db)
    objects = "SELECT string_agg(md5(lo_get(oid)), ',' ORDER BY oid) FROM pg_largeobject_metadata"
    assert pg15.query(objects, "parallel_lo_fc") == pg15.query(objects, db)
    err = capsys.readouterr().err
    (parallel,) = events(err, "restore.parallel")
    assert parallel["loaded_while_staging"] is False and "large objects" in parallel["reason"]
    (offsets,) = events(err, "restore.offsets_filled_in")  # pg_restore -j seeks to each table's data
    assert offsets["blocks"] == len(report.tables) + 1  # and to the large objects'
    assert list(scratch.iterdir()) == []


def test_a_dump_larger_than_the_scratch_limit_is_streamed_with_one_job(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db, catalog, backup_id = volume_backup(pg15, tmp_path, monkeypatch)
    capsys.readouterr()

    report = restore_backup(catalog, backup_id, params_for(pg15), "streamed_fc", jobs=2, scratch=scratch,
                            scratch_limit=1024)

    assert report.ok
    assert table_digest(pg15, "streamed_fc") == table_digest(pg15, db)
    err = capsys.readouterr().err
    assert not events(err, "restore.parallel")
    (streaming,) = events(err, "restore.streaming")
    assert "does not fit in scratch" in streaming["reason"]
    assert list(scratch.iterdir()) == []


def test_storage_failing_mid_download_leaves_no_file_and_no_database(
        pg15: PgServer, s3_bucket: S3Bucket, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        scratch: Path) -> None:
    _, backup_id = take(pg15, tmp_path, monkeypatch, {"s3": s3_bucket.wire()})
    proxy = CuttingProxy(moto_server.port, ".dump")  # every download of the dump breaks off halfway
    try:
        catalog = Catalog(S3Storage(s3_bucket.spec(endpoint=proxy.endpoint), max_attempts=2))
        with pytest.raises(StorageError, match=r"\.dump"):
            restore_backup(catalog, backup_id, params_for(pg15), "broken_download", jobs=2, scratch=scratch)
    finally:
        proxy.close()

    assert list(scratch.iterdir()) == []
    assert not pg15.query("SELECT datname FROM pg_database WHERE datname LIKE '%broken_download%'")


def test_a_damaged_dump_is_reported_and_leaves_nothing(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path) -> None:
    _, catalog, backup_id = volume_backup(pg15, tmp_path, monkeypatch)
    manifest = catalog.get(backup_id)
    (obj,) = [o for o in manifest.objects if o.kind == "database"]
    stored = tmp_path / "volume" / backup_id / obj.key
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    with pytest.raises(BackupDamaged, match=obj.key):
        restore_backup(catalog, backup_id, params_for(pg15), "damaged_fc", jobs=2, scratch=scratch)

    assert list(scratch.iterdir()) == []
    assert not pg15.query("SELECT datname FROM pg_database WHERE datname LIKE '%damaged_fc%'")


def test_a_directory_dump_that_does_not_fit_in_scratch_is_refused_before_download(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path) -> None:
    _, backup_id = take(pg15, tmp_path, monkeypatch, {"volume": {"claimName": "backups"}}, format="directory")
    catalog = Catalog(FilesystemStorage(tmp_path / "volume"))

    with pytest.raises(ScratchFull, match="scratchSizeLimit"):
        restore_backup(catalog, backup_id, params_for(pg15), "no_room_fd", jobs=2, scratch=scratch,
                       scratch_limit=1024)

    assert list(scratch.iterdir()) == []
    assert not pg15.query("SELECT datname FROM pg_database WHERE datname LIKE '%no_room_fd%'")


def test_a_scratch_too_small_for_the_staged_dump_fails_with_scratch_full_and_leaves_nothing(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_volume: Path) -> None:
    _, catalog, backup_id = volume_backup(pg15, tmp_path, monkeypatch)
    manifest = catalog.get(backup_id)
    (obj,) = [o for o in manifest.objects if o.kind == "database"]
    filler = tiny_volume / "other-files"
    filler.write_bytes(b"x" * (2 * 1024 * 1024 - obj.raw_size // 2))  # leaves half the dump's size free

    with pytest.raises(ScratchFull, match="filled the scratch space"):
        with staged_object(catalog, manifest, obj, None, tiny_volume):
            pytest.fail("a dump larger than scratch was handed out")

    assert list(tiny_volume.iterdir()) == [filler]


def directory_backup(server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, storage: dict[str, Any],
                     db: str) -> str:
    runner_env(server, monkeypatch, tmp_path)
    document = backup_policy(server, storage, databases=[db], logical={"globals": False, "format": "directory",
                                                                         "jobs": 2})
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    return str(summary.backup_id)


def with_a_big_table(server: PgServer, name: str) -> str:
    """The sample plus one table of about 50 MB: more than one piece per job."""
    db = load_sample(server, name)
    server.query("CREATE TABLE IF NOT EXISTS events AS SELECT i AS id, repeat(md5(i::text), 4) AS body "
                 "FROM generate_series(1, 300000) AS i", db)
    return db


def test_a_directory_dump_from_s3_is_loaded_while_staged_its_big_table_split_across_the_jobs(
        pg15: PgServer, s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = with_a_big_table(pg15, "parallel_fd_source")
    backup_id = directory_backup(pg15, tmp_path, monkeypatch, {"s3": s3_bucket.wire()}, db)
    catalog = Catalog(S3Storage(s3_bucket.spec(), max_attempts=2))
    capsys.readouterr()

    report = restore_backup(catalog, backup_id, params_for(pg15), "parallel_fd", jobs=2, scratch=scratch)

    assert report.ok and report.tables
    assert table_digest(pg15, "parallel_fd") == table_digest(pg15, db)
    schema = ("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace::regnamespace::text "
              "IN ('public', 'sales') UNION ALL SELECT indexname, indexdef FROM pg_indexes "
              "WHERE schemaname IN ('public', 'sales') ORDER BY 1, 2")
    assert pg15.query(schema, "parallel_fd") == pg15.query(schema, db)  # indexes, keys, foreign keys
    err = capsys.readouterr().err
    (parallel,) = events(err, "restore.parallel")
    assert parallel["loaded_while_staging"] is True
    assert parallel["pieces"] > len([t for t in report.tables if t.actual])  # the big table came in several
    assert not events(err, "restore.extracted")
    assert list(scratch.iterdir()) == []


def test_a_directory_backup_whose_tar_starts_elsewhere_than_its_toc_is_extracted_then_restored(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = load_sample(pg15)
    monkeypatch.setattr(logical_backup, "tar_members", lambda directory: ["."])  # as backups wrote it before
    backup_id = directory_backup(pg15, tmp_path, monkeypatch, {"volume": {"claimName": "backups"}}, db)
    catalog = Catalog(FilesystemStorage(tmp_path / "volume"))
    capsys.readouterr()

    report = restore_backup(catalog, backup_id, params_for(pg15), "extracted_fd", jobs=2, scratch=scratch)

    assert report.ok
    assert table_digest(pg15, "extracted_fd") == table_digest(pg15, db)
    err = capsys.readouterr().err
    (extracted,) = events(err, "restore.extracted")
    assert "not 'toc.dat'" in extracted["reason"]
    assert list(scratch.iterdir()) == []


def test_a_directory_tar_whose_data_is_out_of_toc_order_fails_naming_the_file_and_restores_with_one_job(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: Path) -> None:
    db = load_sample(pg15)
    ordered = logical_backup.tar_members

    def out_of_order(directory: Path) -> list[str]:
        first, *data = ordered(directory)
        return [first, *reversed(data)]

    monkeypatch.setattr(logical_backup, "tar_members", out_of_order)
    backup_id = directory_backup(pg15, tmp_path, monkeypatch, {"volume": {"claimName": "backups"}}, db)
    catalog = Catalog(FilesystemStorage(tmp_path / "volume"))

    with pytest.raises(RunnerError, match=r"should come next in the tar.*restore it with jobs: 1"):
        restore_backup(catalog, backup_id, params_for(pg15), "disordered_fd", jobs=2, scratch=scratch)

    assert not pg15.query("SELECT datname FROM pg_database WHERE datname LIKE '%disordered_fd%'")
    assert list(scratch.iterdir()) == []
    report = restore_backup(catalog, backup_id, params_for(pg15), "disordered_fd", jobs=1, scratch=scratch)
    assert report.ok
    assert table_digest(pg15, "disordered_fd") == table_digest(pg15, db)
