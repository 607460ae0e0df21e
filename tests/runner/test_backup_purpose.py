"""Why a backup exists (manifest `purpose`): a pre-restore safety backup or an imported dump never becomes
`latest`, never takes a keepLast place of the policy's own backups, and so never narrows the WAL (PITR) window.
Real PostgreSQL 15, real pg_dump / pg_basebackup, WAL archived by the server through `pgbackup wal-push`."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgbackup.api import jobenv
from pgbackup.runner.cli import main as cli
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive
from tests.fixtures.archiving import Archiving, archiving_server
from tests.fixtures.postgres import PgServer, backup_policy, runner_env


def backup(document: dict[str, Any]) -> str:
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    return str(summary.backup_id)


def listing(capsys: pytest.CaptureFixture[str], policy_file: Path) -> dict[str, list[str]]:
    """`pgbackup list` as a user reads it: backup id -> the row's columns."""
    assert cli.main(["list", "--policy", str(policy_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["ID", "METHOD", "PURPOSE"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_a_safety_backup_is_neither_latest_nor_counted_by_keep_last(pg15: PgServer, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("purpose_src", "purpose_app"):
        pg15.query(f'DROP DATABASE IF EXISTS "{name}"')
        pg15.query(f'CREATE DATABASE "{name}"')
    pg15.query("CREATE TABLE items AS SELECT generate_series(1, 20) AS id", "purpose_src")
    pg15.query("CREATE TABLE marker AS SELECT generate_series(1, 7) AS id", "purpose_app")  # what gets replaced
    document = backup_policy(pg15, {"volume": {"claimName": "backups", "path": "orders"}}, databases=["purpose_src"],
                             logical={"globals": False}, retention={"keepLast": 2})
    runner_env(pg15, monkeypatch, tmp_path)
    catalog = Catalog(FilesystemStorage(tmp_path / "volume" / "orders"))
    first = backup(document)

    # An overwrite RestoreRequest: the replaced database is backed up first (the safety backup).
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps({
        "name": "rr-purpose", "namespace": "shop",
        "spec": {"policyRef": {"name": "orders-db"}, "backup": first,
                 "target": {"host": pg15.host, "port": pg15.port, "database": "purpose_app", "overwrite": True,
                            "dropPrevious": True}},
        "policy": {"name": document["name"], "spec": document["spec"]}}))
    code, summary = run_restore_request()
    assert code == 0, summary.error
    safety = str(summary.result.pre_restore_backup) if summary.result else ""
    assert catalog.get(safety).databases[0].name == "purpose_app"

    latest = catalog.latest()
    assert latest is not None and latest.id == first  # not the (newer) safety backup

    monkeypatch.setenv(jobenv.ENV_BACKUP_PURPOSE, "on-demand")  # as in a backup-now Job
    second = backup(document)  # keepLast 2: the policy's two own backups, whatever else the catalog holds
    assert catalog.ids() == [second, safety, first]
    assert catalog.latest().id == second  # type: ignore[union-attr]

    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(document))
    rows = listing(capsys, policy_file)
    assert rows[safety][2] == "pre-restore"
    assert rows[first][2] == "scheduled" and rows[second][2] == "on-demand"


def test_old_manifests_without_a_purpose_still_load() -> None:
    stored = {"version": 1, "id": "20261101T020000Z", "policy": "orders-db", "namespace": "shop",
              "method": "logical", "started_at": "2026-11-01T02:00:00Z", "completed_at": "2026-11-01T02:01:00Z",
              "objects": [], "server_version": "15.8", "compression": "zstd"}
    assert Manifest.model_validate(stored).purpose == "scheduled"
    assert Manifest.model_validate({**stored, "imported": True, "source": "x.dump"}).purpose == "imported"


# ---------------------------------------------------------------- physical backups and the WAL they need


@pytest.fixture
def archiving(monkeypatch: pytest.MonkeyPatch) -> Iterator[Archiving]:
    """A PostgreSQL 15 archiving its WAL into the policy's volume with `pgbackup wal-push`."""
    with archiving_server("15", "purpose", retention={"keepLast": 2}) as started:
        started.apply_env(monkeypatch)
        yield started


def _base_backup_then_switch(archiving: Archiving) -> str:
    backup_id = backup(archiving.policy)
    (segment,) = archiving.server.query("SELECT pg_walfile_name(pg_switch_wal())")[0]
    archiving.server.wait_archived(segment)
    return backup_id


def test_an_import_keeps_the_wal_of_every_retained_base_backup(archiving: Archiving, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    server, document, volume = archiving.server, archiving.policy, archiving.volume
    server.query("CREATE TABLE t AS SELECT generate_series(1, 100) AS id")
    bases = [_base_backup_then_switch(archiving), _base_backup_then_switch(archiving)]

    # A dump of one database registered with `pgbackup import` (newer than every base backup).
    dump = tmp_path / "legacy.dump"
    subprocess.run([str(server.bindir / "pg_dump"), "-Fc", "-f", str(dump), server.conninfo("postgres")], check=True)
    (tmp_path / "legacy.dump.sha256").write_text(f"{hashlib.sha256(dump.read_bytes()).hexdigest()}  legacy.dump\n")
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps(document))
    assert cli.main(["import", str(dump), "--policy", str(policy_file)]) == 0
    capsys.readouterr()

    bases.append(_base_backup_then_switch(archiving))  # keepLast 2 -> the last two base backups

    catalog = Catalog(FilesystemStorage(volume))
    kept = {m.id: m for m in catalog.backups()}
    assert set(bases[1:]) <= set(kept), "a base backup lost its keepLast place to the imported dump"
    assert bases[0] not in kept
    assert [m.purpose for m in kept.values() if m.id not in bases] == ["imported"]
    assert catalog.latest().id == bases[-1]  # type: ignore[union-attr]
    archive = WalArchive(FilesystemStorage(volume))
    oldest_kept = kept[bases[1]].physical
    assert oldest_kept is not None and oldest_kept.start_wal_segment is not None
    segments = [s.name for s in archive.segments()]
    assert min(segments) == oldest_kept.start_wal_segment  # the WAL of the older retained base backup is kept
    assert archive.gaps() == []
    assert listing(capsys, policy_file)[bases[-1]][2] == "scheduled"
