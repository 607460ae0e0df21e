"""Incremental physical backups (PostgreSQL 18 with summarize_wal = on): chains of pg_basebackup --incremental,
restored through pg_combinebackup, verified, recovered to a point in time, kept whole by retention."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.fixtures.postgres import PgFactory, PgServer, backup_policy, runner_env


@pytest.fixture(scope="module")
def pg18_summarizing(pg_factory: PgFactory) -> PgServer:
    """A PostgreSQL 18 server of its own with summarize_wal = on (the shared one stays as the other tests know it)."""
    server = pg_factory.get("18", "incremental")
    server.query("ALTER SYSTEM SET summarize_wal = on")
    server.query("SELECT pg_reload_conf()")
    server.query("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, note text)")
    return server


def _backup(server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, full: bool = False,
            **physical: object) -> Manifest:
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical",
                             physical=physical or {"fullEvery": 3}, retention={"keepLast": 10})
    runner_env(server, monkeypatch, tmp_path)
    code, summary = backup_command(policy_from_document(document, "test"), force_full=full)
    assert code == 0, summary.error
    return Catalog(FilesystemStorage(tmp_path / "volume")).get(str(summary.backup_id))


def test_a_chain_of_incrementals(pg18_summarizing: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = pg18_summarizing
    server.query("TRUNCATE items; INSERT INTO items SELECT g, 'first' FROM generate_series(1, 1000) g")
    full = _backup(server, tmp_path, monkeypatch)
    server.query("UPDATE items SET note = 'second' WHERE id <= 10")
    first = _backup(server, tmp_path, monkeypatch)
    server.query("INSERT INTO items VALUES (1001, 'third')")
    second = _backup(server, tmp_path, monkeypatch)
    third = _backup(server, tmp_path, monkeypatch)  # fullEvery 3: the chain is full, this one starts the next

    chain = [(m.physical.incremental_of, m.physical.chain_root, m.physical.chain_length)
             for m in (full, first, second, third) if m.physical is not None]
    assert chain == [(None, full.id, 1), (full.id, full.id, 2), (first.id, full.id, 3), (None, third.id, 1)]
    assert [m.backup_type for m in (full, first, second, third)] == ["full", "incr", "incr", "full"]
    assert full.physical is not None and "starts a chain" in str(full.physical.full_reason)
    assert third.physical is not None and "fullEvery 3" in str(third.physical.full_reason)
    assert "INCREMENTAL FROM LSN" in second.physical.backup_label  # type: ignore[union-attr]
    assert first.size_bytes < full.size_bytes / 5  # only what changed (and the WAL) is in an incremental
    assert all(m.backup_manifest_object() is not None for m in (full, first, second, third))
