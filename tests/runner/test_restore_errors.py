"""Restores that cannot work fail clearly and leave nothing behind on the target server."""

from __future__ import annotations

from pathlib import Path

import pyrage
import pytest

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.storage.pipeline import IdentityError
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.fixtures.postgres import PgServer, backup_policy, load_sample, runner_env


def params_for(server: PgServer) -> ConnParams:
    return ConnParams(host=server.host, port=server.port, user=server.user, password=server.password)


def database_exists(server: PgServer, name: str) -> bool:
    return bool(server.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"))


@pytest.fixture
def encrypted_backup(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Catalog, str, str]:
    db = load_sample(pg15)
    identity = pyrage.x25519.Identity.generate()
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}}, databases=[db], logical={"globals": False},
                             encryption={"recipients": [str(identity.to_public())]})
    runner_env(pg15, monkeypatch, tmp_path)
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    return Catalog(FilesystemStorage(tmp_path / "volume")), str(summary.backup_id), str(identity)


def test_encrypted_backup_without_identity(pg15: PgServer, encrypted_backup: tuple[Catalog, str, str]) -> None:
    catalog, backup_id, _ = encrypted_backup
    with pytest.raises(IdentityError, match="identity"):
        restore_backup(catalog, backup_id, params_for(pg15), "never_created_1")
    assert not database_exists(pg15, "never_created_1")


def test_encrypted_backup_with_the_wrong_identity(pg15: PgServer, encrypted_backup: tuple[Catalog, str, str]) -> None:
    catalog, backup_id, _ = encrypted_backup
    stranger = str(pyrage.x25519.Identity.generate())
    with pytest.raises(IdentityError, match="not one of them"):
        restore_backup(catalog, backup_id, params_for(pg15), "never_created_2", stranger)
    assert not database_exists(pg15, "never_created_2")


def test_several_databases_need_a_choice(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = load_sample(pg15)
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}}, databases=[db, "postgres"],
                             logical={"globals": False})
    runner_env(pg15, monkeypatch, tmp_path)
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    catalog = Catalog(FilesystemStorage(tmp_path / "volume"))

    with pytest.raises(UsageError, match="--source-database"):
        restore_backup(catalog, str(summary.backup_id), params_for(pg15), "ambiguous")
    assert not database_exists(pg15, "ambiguous")

    report = restore_backup(catalog, str(summary.backup_id), params_for(pg15), "chosen", source_database=db)
    assert report.ok and report.source_database == db
