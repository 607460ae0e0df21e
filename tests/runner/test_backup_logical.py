"""Logical backups against real PostgreSQL 15 and 18: backup -> restore into a new database -> same data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyrage
import pytest

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.fixtures.postgres import (
    EXPECTED_ROWS,
    SAMPLE_ROLE,
    PgServer,
    backup_policy,
    runner_env,
    table_digest,
)


def conn_params(server: PgServer) -> ConnParams:
    return ConnParams(host=server.host, port=server.port, user=server.user, password=server.password)


def new_identity(tmp_path: Path) -> tuple[str, str, Path]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path / "age-identity.txt"
    path.write_text(str(identity) + "\n")
    path.chmod(0o600)
    return str(identity), str(identity.to_public()), path


def assert_same_database(source: PgServer, source_db: str, target: PgServer, target_db: str) -> None:
    assert table_digest(target, target_db) == table_digest(source, source_db)
    # sequences continue where they were, not at 1
    for sequence in ("invoice_no", "customers_id_seq", "sales.orders_id_seq"):
        (expected,) = source.query(f"SELECT last_value FROM {sequence}", source_db)[0]
        (restored,) = target.query(f"SELECT last_value FROM {sequence}", target_db)[0]
        assert restored == expected, sequence
    assert target.query("SELECT nextval('invoice_no')", target_db) == [(4243,)]
    # the pg_trgm index came back and is used for similarity search
    assert target.query("SELECT indexname FROM pg_indexes WHERE indexname = 'docs_body_trgm'", target_db)
    assert target.query("SELECT count(*) FROM docs WHERE body % 'quick brown fox number 7'", target_db)[0][0] >= 1
    if source.version != "15":
        assert target.query("SELECT embedding::text FROM docs WHERE id = 2", target_db) == [("[2,4,0.5]",)]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "age"])
def test_logical_round_trip_to_volume(sample_db: tuple[PgServer, str], pg_target: PgServer, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, encrypted: bool) -> None:
    server, db = sample_db
    identity, recipient, _ = new_identity(tmp_path)
    extra = {"encryption": {"recipients": [recipient]}} if encrypted else {}
    document = backup_policy(server, {"volume": {"claimName": "backups", "path": "orders"}}, databases=[db], **extra)
    summary_file = runner_env(server, monkeypatch, tmp_path)
    (tmp_path / "volume" / "orders").mkdir()

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == 0, summary.error
    written = json.loads(summary_file.read_text())
    assert written["phase"] == "Completed" and written["backupId"] == summary.backup_id
    catalog = Catalog(FilesystemStorage(tmp_path / "volume" / "orders"))
    manifest = catalog.get(str(summary.backup_id))
    assert manifest.databases[0].row_counts == EXPECTED_ROWS
    assert {o.kind for o in manifest.objects} == {"database", "globals"}
    assert all(o.encrypted == encrypted for o in manifest.objects)
    assert catalog.check(manifest.id).ok

    target_db = f"restored_{'age' if encrypted else 'plain'}"
    report = restore_backup(catalog, manifest.id, conn_params(pg_target), target_db,
                            identity if encrypted else None, with_globals=True)

    assert report.ok, report.mismatches
    assert {t.table: t.actual for t in report.tables} == EXPECTED_ROWS
    assert pg_target.query(f"SELECT 1 FROM pg_roles WHERE rolname = '{SAMPLE_ROLE}'") == [(1,)]
    assert_same_database(server, db, pg_target, target_db)


def test_manifest_records_versions_extensions_and_counts(sample_db: tuple[PgServer, str], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = sample_db
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=[db])
    runner_env(server, monkeypatch, tmp_path)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == 0, summary.error
    manifest = Catalog(FilesystemStorage(tmp_path / "volume")).get(str(summary.backup_id))
    assert manifest.server_version.startswith(server.version)
    assert manifest.tools["pg_dump"].startswith(server.version)
    info = manifest.databases[0]
    assert info.name == db and info.size_bytes > 0 and info.dump_format == "custom"
    assert "pg_trgm" in info.extensions
    assert ("vector" in info.extensions) == (server.version != "15")
    assert manifest.policy == "orders-db" and manifest.namespace == "shop"
    assert server.password not in (tmp_path / "volume" / str(summary.backup_id) / "manifest.json").read_text()


def test_encrypted_backup_opens_with_stock_age_and_zstd(sample_db: tuple[PgServer, str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The emergency path: no code of ours, only `age -d` and `zstd -d`."""
    server, db = sample_db
    _, recipient, identity_file = new_identity(tmp_path)
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=[db],
                             encryption={"recipients": [recipient]})
    runner_env(server, monkeypatch, tmp_path)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == 0, summary.error
    globals_file = tmp_path / "volume" / str(summary.backup_id) / "globals.sql.zst.age"
    plain = subprocess.run(f"age -d -i {identity_file} {globals_file} | zstd -d", shell=True, capture_output=True,
                           check=True).stdout.decode()
    assert f"CREATE ROLE {SAMPLE_ROLE}" in plain
    dump_file = tmp_path / "volume" / str(summary.backup_id) / f"databases/{db}.dump.zst.age"
    listing = subprocess.run(f"age -d -i {identity_file} {dump_file} | zstd -d | {server.bindir}/pg_restore -l",
                             shell=True, capture_output=True, check=True).stdout.decode()
    assert "TABLE DATA public customers" in listing


def test_directory_format_with_parallel_jobs(sample_db: tuple[PgServer, str], pg_target: PgServer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = sample_db
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=[db],
                             logical={"format": "directory", "jobs": 2, "globals": False},
                             compression={"algorithm": "gzip"})
    runner_env(server, monkeypatch, tmp_path)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == 0, summary.error
    catalog = Catalog(FilesystemStorage(tmp_path / "volume"))
    manifest = catalog.get(str(summary.backup_id))
    assert [o.key for o in manifest.objects] == [f"databases/{db}.dir.tar.gz"]
    assert list((tmp_path / "scratch").iterdir()) == []  # the dump directory was removed
    pg_target.query(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SAMPLE_ROLE}') THEN "
                    f"CREATE ROLE {SAMPLE_ROLE} NOLOGIN; END IF; END $$")  # the backup has no globals
    report = restore_backup(catalog, manifest.id, conn_params(pg_target), "restored_dir", jobs=2)
    assert report.ok, report.mismatches
    assert_same_database(server, db, pg_target, "restored_dir")


def test_logical_round_trip_to_s3(sample_db: tuple[PgServer, str], pg_target: PgServer, s3_bucket: object,
                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pgbackup.runner.storage.factory import open_storage

    server, db = sample_db
    identity, recipient, _ = new_identity(tmp_path)
    document = backup_policy(server, {"s3": s3_bucket.wire()}, databases=[db],  # type: ignore[attr-defined]
                             encryption={"recipients": [recipient]})
    policy = policy_from_document(document, "test")
    runner_env(server, monkeypatch, tmp_path)

    code, summary = backup_command(policy)

    assert code == 0, summary.error
    assert str(summary.manifest).startswith(f"s3://{s3_bucket.bucket}/")  # type: ignore[attr-defined]
    keys = s3_bucket.keys()  # type: ignore[attr-defined]
    prefix = f"{s3_bucket.prefix}/{summary.backup_id}/"  # type: ignore[attr-defined]
    assert sorted(keys) == sorted([f"{prefix}claim.json", f"{prefix}manifest.json", f"{prefix}manifest.json.sha256",
                                   f"{prefix}globals.sql.zst.age",
                                   f"{prefix}databases/{db}.dump.zst.age"])
    catalog = Catalog(open_storage(policy.spec.storage))
    report = restore_backup(catalog, str(summary.backup_id), conn_params(pg_target), "restored_s3", identity)
    assert report.ok, report.mismatches
    assert_same_database(server, db, pg_target, "restored_s3")


def test_all_databases_when_none_named(sample_db: tuple[PgServer, str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = sample_db
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, logical={"globals": False})
    runner_env(server, monkeypatch, tmp_path)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == 0, summary.error
    manifest = Catalog(FilesystemStorage(tmp_path / "volume")).get(str(summary.backup_id))
    names = {d.name for d in manifest.databases}
    assert {"postgres", db} <= names
    assert "template0" not in names and "template1" not in names
