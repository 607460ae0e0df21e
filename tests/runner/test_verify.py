"""Restore verification against real PostgreSQL 15 and 18: real backups (pg_dump / pg_basebackup) into a
volume storage, verified by restoring them into a throwaway server; tampered copies of the storage for the
failure cases."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest

from pgbackup.api.policy import SqlCheck, VerifySpec
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.postgres.checks import compare_row_counts
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.catalog.manifest import MANIFEST_NAME, VERIFICATION_NAME
from pgbackup.runner.storage.pipeline import IdentityError
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from pgbackup.runner.cli.parser import add_verify_parser
from pgbackup.runner.verify.record import read_verification
from pgbackup.runner.verify.run import run_verification_command, verify_backup
from tests.fixtures.postgres import EXPECTED_ROWS, PgServer, backup_policy, runner_env
from tests.fixtures.s3 import S3Bucket


@dataclass
class Backups:
    server: PgServer
    database: str
    volume: Path
    document: dict
    logical_id: str
    physical_id: str
    all_databases_id: str
    no_globals_id: str
    encrypted_id: str
    identity_file: Path


@pytest.fixture(scope="module")
def backups(sample_db: tuple[PgServer, str], tmp_path_factory: pytest.TempPathFactory) -> Backups:
    """One logical and one physical backup of the sample database, per PostgreSQL version."""
    server, db = sample_db
    root = tmp_path_factory.mktemp(f"verify-pg{server.version}")
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=[db])
    identity = pyrage.x25519.Identity.generate()
    identity_file = root / "age-identity.txt"
    identity_file.write_text(f"{identity}\n")
    variants: dict[str, dict[str, Any]] = {  # the plain logical one last: it is the catalog's latest
        "encrypted": {"encryption": {"recipients": [str(identity.to_public())]}},
        "all": {"database": {**document["spec"]["database"], "databases": ["postgres", db]}},
        "physical": {"method": "physical"},
        "no-globals": {"logical": {"globals": False}},
        "logical": {},
    }
    ids: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as patch:
        runner_env(server, patch, root)
        for name, change in variants.items():
            spec = {**document["spec"], **change}
            code, summary = backup_command(policy_from_document({**document, "spec": spec}, "test"))
            assert code == 0, summary.error
            ids[name] = str(summary.backup_id)
    return Backups(server, db, root / "volume", document, ids["logical"], ids["physical"], ids["all"],
                   ids["no-globals"], ids["encrypted"], identity_file)


def storage_copy(backups: Backups, tmp_path: Path) -> FilesystemStorage:
    """A private copy of the backups, for tampering and for verification.json."""
    target = tmp_path / "storage"
    shutil.copytree(backups.volume, target)
    return FilesystemStorage(target)


def env_for(server: PgServer) -> dict[str, str]:
    return {"PGUSER": server.user}


def postgres_processes_under(path: Path) -> list[str]:
    """Command lines of running processes mentioning `path` (a leaked throwaway server would)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(cmdline)
    return found


def rewrite_manifest(storage: FilesystemStorage, backup_id: str, change: object, *, reseal: bool = True) -> None:
    """Change a stored manifest; `reseal` records its new SHA-256 too (as if the backup had written it so),
    without it the edit is one made after the backup."""
    key = f"{backup_id}/{MANIFEST_NAME}"
    document = json.loads(storage.get_bytes(key))
    change(document)  # type: ignore[operator]
    data = json.dumps(document).encode()
    storage.put_bytes(key, data)
    if reseal:
        storage.put_bytes(f"{key}.sha256", f"{hashlib.sha256(data).hexdigest()}  {MANIFEST_NAME}\n".encode())


CHECKS = [SqlCheck(name="orders-present", database="shop", sql="SELECT count(*) = 1000 FROM sales.orders")]


def test_a_good_logical_backup_verifies(backups: Backups, tmp_path: Path, scratch: Path) -> None:
    storage = storage_copy(backups, tmp_path)
    catalog = Catalog(storage)
    assert not catalog.get(backups.logical_id).verified

    outcome = verify_backup(catalog, backups.logical_id, VerifySpec(enabled=True, checks=CHECKS), identity=None,
                            scratch_dir=scratch, environ=env_for(backups.server))

    record = outcome.record
    assert (record.phase, record.reason) == ("Passed", "RestoreVerified"), record.message
    assert record.restore_seconds is not None and record.restore_seconds > 0
    assert record.server_version is not None and record.server_version.startswith(backups.server.version)
    checks = {c.name: c for c in record.checks}
    assert {f"rowcount:shop.{table}" for table in EXPECTED_ROWS} <= set(checks)
    assert checks["rowcount:shop.sales.orders"].passed and checks["rowcount:shop.sales.orders"].message == "1000 rows"
    assert checks["extension:shop.pg_trgm"].passed
    if backups.server.version != "15":
        assert checks["extension:shop.vector"].passed
    assert checks["orders-present"].passed
    # recorded beside the manifest, and the catalog now calls the backup verified
    assert outcome.location == storage.location(f"{backups.logical_id}/{VERIFICATION_NAME}")
    stored = json.loads(storage.get_bytes(f"{backups.logical_id}/{VERIFICATION_NAME}"))
    assert stored["phase"] == "Passed" and stored["backupId"] == backups.logical_id and stored["restoreSeconds"] > 0
    assert read_verification(storage, backups.logical_id).checks == record.checks
    assert catalog.get(backups.logical_id).verified
    assert record.to_result().phase == "Passed"
    # the throwaway server is gone with its directory
    assert list(scratch.iterdir()) == []
    assert postgres_processes_under(scratch) == []


def test_every_database_is_restored_including_postgres(backups: Backups, tmp_path: Path, scratch: Path) -> None:
    storage = storage_copy(backups, tmp_path)
    spec = VerifySpec(enabled=True, checks=[*CHECKS, SqlCheck(name="postgres-db", database="postgres", sql="SELECT 1")])

    outcome = verify_backup(Catalog(storage), backups.all_databases_id, spec, identity=None, scratch_dir=scratch,
                            environ=env_for(backups.server))

    assert (outcome.record.phase, outcome.reason) == ("Passed", "RestoreVerified"), outcome.record.message
    names = {c.name for c in outcome.record.checks}
    assert {"orders-present", "postgres-db", "rowcount:shop.sales.orders"} <= names


def test_a_backup_without_globals_gets_the_roles_its_dump_needs(backups: Backups, tmp_path: Path,
                                                                 scratch: Path) -> None:
    storage = storage_copy(backups, tmp_path)
    assert not Catalog(storage).get(backups.no_globals_id).object_by_kind("globals")
    check = SqlCheck(name="reader-can-read", database="shop",
                     sql="SELECT has_table_privilege('shop_reader', 'sales.orders', 'SELECT')")

    outcome = verify_backup(Catalog(storage), backups.no_globals_id, VerifySpec(enabled=True, checks=[check]),
                            identity=None, scratch_dir=scratch, environ=env_for(backups.server))

    assert (outcome.record.phase, outcome.reason) == ("Passed", "RestoreVerified"), outcome.record.message
    assert {c.name for c in outcome.record.checks if c.passed} >= {"reader-can-read", "rowcount:shop.sales.orders"}


def test_an_encrypted_backup_is_verified_with_the_identity(backups: Backups, tmp_path: Path, scratch: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    storage = storage_copy(backups, tmp_path)
    with pytest.raises(IdentityError, match="encryption.identitySecret"):
        verify_backup(Catalog(storage), backups.encrypted_id, VerifySpec(enabled=True), identity=None,
                      scratch_dir=scratch, environ=env_for(backups.server))
    assert not storage.exists(f"{backups.encrypted_id}/{VERIFICATION_NAME}")  # not the backup's fault

    monkeypatch.setenv("PGBACKUP_SCRATCH", str(scratch))
    monkeypatch.setenv("PGUSER", backups.server.user)
    monkeypatch.setenv("PGBACKUP_SUMMARY_FILE", str(tmp_path / "termination-log"))
    monkeypatch.delenv("PGBACKUP_AGE_IDENTITY_FILE", raising=False)
    policy = policy_from_document(backups.document, "test")
    code, summary, outcome = run_verification_command(policy, backups.encrypted_id, storage=storage)
    assert (code, summary.phase, summary.reason, outcome) == (3, "Failed", "IdentityMissing", None)
    assert json.loads((tmp_path / "termination-log").read_text())["reason"] == "IdentityMissing"

    monkeypatch.setenv("PGBACKUP_AGE_IDENTITY_FILE", str(backups.identity_file))
    code, summary, outcome = run_verification_command(policy, backups.encrypted_id, storage=storage)

    assert code == 0 and outcome is not None, summary.error
    assert outcome.reason == "RestoreVerified" and summary.restore_seconds == outcome.record.restore_seconds
    assert Catalog(storage).get(backups.encrypted_id).verified


def test_verification_json_lands_beside_the_manifest_in_s3(backups: Backups, s3_bucket: S3Bucket,
                                                           scratch: Path) -> None:
    storage = S3Storage(s3_bucket.spec(), max_attempts=2)
    local = FilesystemStorage(backups.volume)
    for info in local.list(f"{backups.logical_id}/"):
        storage.put_bytes(info.key, local.get_bytes(info.key))

    outcome = verify_backup(Catalog(storage), backups.logical_id, VerifySpec(enabled=True), identity=None,
                            scratch_dir=scratch, environ=env_for(backups.server))

    assert outcome.passed, outcome.record.message
    key = f"{s3_bucket.prefix}/{backups.logical_id}/{VERIFICATION_NAME}"
    assert key in s3_bucket.keys()
    assert outcome.location == f"s3://{s3_bucket.bucket}/{key}"
    assert Catalog(storage).get(backups.logical_id).verified


def test_a_tampered_row_count_fails_naming_the_table(backups: Backups, tmp_path: Path, scratch: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    storage = storage_copy(backups, tmp_path)

    def tamper(document: dict) -> None:
        document["databases"][0]["row_counts"]["sales.orders"] = 999

    rewrite_manifest(storage, backups.logical_id, tamper)
    summary_file = tmp_path / "termination-log"
    monkeypatch.setenv("PGBACKUP_SUMMARY_FILE", str(summary_file))
    monkeypatch.setenv("PGBACKUP_SCRATCH", str(scratch))
    monkeypatch.setenv("PGUSER", backups.server.user)
    monkeypatch.setenv("PGBACKUP_VERIFY_BACKUP_ID", backups.logical_id)

    code, summary, outcome = run_verification_command(policy_from_document(backups.document, "test"),
                                                      storage=storage)

    assert outcome is not None
    assert (outcome.record.phase, outcome.reason) == ("Failed", "RowCountMismatch")
    assert "shop.sales.orders" in outcome.record.message and "999" in outcome.record.message
    failing = [c.name for c in outcome.record.checks if not c.passed]
    assert failing == ["rowcount:shop.sales.orders"]
    assert code == 1
    written = json.loads(summary_file.read_text())
    assert written["kind"] == "verify" and written["phase"] == "Failed" and written["reason"] == "RowCountMismatch"
    assert written["backupId"] == backups.logical_id and "sales.orders" in written["error"]
    assert not Catalog(storage).get(backups.logical_id).verified
    assert list(scratch.iterdir()) == []


def test_a_manifest_changed_after_the_backup_is_named_not_the_dump(backups: Backups, tmp_path: Path, scratch: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    storage = storage_copy(backups, tmp_path)

    def tamper(document: dict) -> None:
        document["databases"][0]["row_counts"]["sales.orders"] = 999

    rewrite_manifest(storage, backups.logical_id, tamper, reseal=False)
    summary_file = tmp_path / "termination-log"
    monkeypatch.setenv("PGBACKUP_SUMMARY_FILE", str(summary_file))
    monkeypatch.setenv("PGBACKUP_SCRATCH", str(scratch))
    monkeypatch.setenv("PGUSER", backups.server.user)
    monkeypatch.setenv("PGBACKUP_VERIFY_BACKUP_ID", backups.logical_id)

    code, summary, outcome = run_verification_command(policy_from_document(backups.document, "test"),
                                                      storage=storage)

    assert code == 1 and outcome is None
    assert (summary.phase, summary.reason) == ("Failed", "ManifestChanged")
    assert f"manifest.json of backup {backups.logical_id}" in str(summary.error)
    assert "the manifest was changed after the backup" in str(summary.error)
    assert "RowCountMismatch" not in summary_file.read_text() and "ManifestChanged" in summary_file.read_text()
    assert list(scratch.iterdir()) == []  # nothing was restored


def test_a_corrupt_object_fails_before_anything_is_restored(backups: Backups, tmp_path: Path, scratch: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    storage = storage_copy(backups, tmp_path)
    manifest = Catalog(storage).get(backups.logical_id)
    dump = manifest.object_by_kind("database")[0]
    path = Path(storage.root) / backups.logical_id / dump.key  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()

    outcome = verify_backup(Catalog(storage), backups.logical_id, VerifySpec(enabled=True), identity=None,
                            scratch_dir=scratch, environ=env_for(backups.server))

    record = outcome.record
    assert (record.phase, record.reason) == ("Failed", "RestoreFailed")
    assert "nothing was restored" in record.message and dump.key in record.message
    assert [c.name for c in record.checks] == [f"checksum:{dump.key}"]
    assert record.restore_seconds is None
    assert "pg.instance.initdb" not in capsys.readouterr().err  # no server was even created
    assert read_verification(storage, backups.logical_id).reason == "RestoreFailed"


def test_failing_sql_checks_are_named(backups: Backups, tmp_path: Path, scratch: Path) -> None:
    storage = storage_copy(backups, tmp_path)
    spec = VerifySpec(enabled=True, checks=[
        *CHECKS,
        SqlCheck(name="no-free-orders", database="shop", sql="SELECT count(*) = 0 FROM sales.orders WHERE amount > 0"),
        SqlCheck(name="typo", database="shop", sql="SELECT count(*) FROM sales.order"),
        SqlCheck(name="writes-nothing", database="shop",
                 sql="INSERT INTO customers (name) VALUES ('intruder') RETURNING true"),
        SqlCheck(name="other-db", database="crm", sql="SELECT true"),
    ])

    outcome = verify_backup(Catalog(storage), backups.logical_id, spec, identity=None, scratch_dir=scratch,
                            environ=env_for(backups.server))

    record = outcome.record
    assert (record.phase, record.reason) == ("Failed", "CheckFailed")
    results = {c.name: c for c in record.checks}
    assert results["orders-present"].passed
    assert not results["no-free-orders"].passed and results["no-free-orders"].message == "returned false"
    assert 'relation "sales.order" does not exist' in results["typo"].message
    assert "read-only transaction" in results["writes-nothing"].message
    assert "'crm' is not in the backup" in results["other-db"].message
    for name in ("no-free-orders", "typo", "writes-nothing", "other-db"):
        assert name in record.message
    assert "orders-present" not in record.message
    assert list(scratch.iterdir()) == []


def test_a_physical_backup_verifies_on_its_restored_data_directory(backups: Backups, tmp_path: Path,
                                                                    scratch: Path) -> None:
    storage = storage_copy(backups, tmp_path)
    catalog = Catalog(storage)

    outcome = verify_backup(catalog, backups.physical_id, VerifySpec(enabled=True, checks=CHECKS), identity=None,
                            scratch_dir=scratch, environ=env_for(backups.server))

    record = outcome.record
    assert (record.phase, record.reason) == ("Passed", "RestoreVerified"), record.message
    assert record.method == "physical" and record.restore_seconds is not None and record.restore_seconds > 0
    assert {c.name for c in record.checks} == {"recovery", "orders-present"}
    assert catalog.get(backups.physical_id).verified
    assert list(scratch.iterdir()) == []
    assert postgres_processes_under(scratch) == []


def _replace_object(storage: FilesystemStorage, backup_id: str, kind: str, data: bytes) -> None:
    """Swap an object for other bytes AND make the manifest agree (checksums pass, the content is bad)."""
    manifest = Catalog(storage).get(backup_id)
    obj = manifest.object_by_kind(kind)[0]  # type: ignore[arg-type]
    storage.delete([f"{backup_id}/{obj.key}"])
    storage.put_bytes(f"{backup_id}/{obj.key}", data)

    def agree(document: dict) -> None:
        for entry in document["objects"]:
            if entry["key"] == obj.key:
                entry.update(size=len(data), raw_size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                             compression="none", encrypted=False)
        document.pop("size_bytes", None)
        document.pop("raw_size_bytes", None)

    rewrite_manifest(storage, backup_id, agree)


def test_a_backup_that_does_not_restore_fails_and_leaves_no_server(backups: Backups, tmp_path: Path,
                                                                   scratch: Path) -> None:
    storage = storage_copy(backups, tmp_path)
    _replace_object(storage, backups.logical_id, "database", b"PGDMP but not really a dump")

    outcome = verify_backup(Catalog(storage), backups.logical_id, VerifySpec(enabled=True), identity=None,
                            scratch_dir=scratch, environ=env_for(backups.server))

    assert (outcome.record.phase, outcome.reason) == ("Failed", "RestoreFailed")
    assert "pg_restore" in outcome.record.message
    assert list(scratch.iterdir()) == []
    assert postgres_processes_under(scratch) == []


def test_a_physical_backup_without_its_wal_fails_and_leaves_no_server(backups: Backups, tmp_path: Path,
                                                                      scratch: Path) -> None:
    import io
    import tarfile

    storage = storage_copy(backups, tmp_path)
    catalog = Catalog(storage)
    manifest = catalog.get(backups.physical_id)
    stripped = io.BytesIO()
    with catalog.open_object(manifest, manifest.object_by_kind("base")[0]) as stream, \
            tarfile.open(fileobj=stream, mode="r|") as source, tarfile.open(fileobj=stripped, mode="w") as target:
        for member in source:
            if member.name.startswith(("pg_wal/0", "./pg_wal/0")) and member.isfile():
                continue  # the WAL that makes the copy consistent
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
    _replace_object(storage, backups.physical_id, "base", stripped.getvalue())

    outcome = verify_backup(catalog, backups.physical_id, VerifySpec(enabled=True), identity=None,
                            scratch_dir=scratch, environ=env_for(backups.server))

    assert (outcome.record.phase, outcome.reason) == ("Failed", "RestoreFailed"), outcome.record.message
    assert "did not start on the restored data directory" in outcome.record.message
    assert list(scratch.iterdir()) == []
    assert postgres_processes_under(scratch) == []


def test_verify_command_line_and_latest_backup(backups: Backups, tmp_path: Path, scratch: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser(prog="pgbackup")
    add_verify_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["verify", "--policy", "p.yaml", "--json"])
    assert (args.command, args.backup_id, args.json) == ("verify", None, True)
    assert parser.parse_args(["verify", backups.logical_id]).backup_id == backups.logical_id

    storage = storage_copy(backups, tmp_path)
    monkeypatch.setenv("PGBACKUP_SUMMARY_FILE", str(tmp_path / "termination-log"))
    monkeypatch.setenv("PGBACKUP_SCRATCH", str(scratch))
    monkeypatch.setenv("PGUSER", backups.server.user)
    monkeypatch.delenv("PGBACKUP_VERIFY_BACKUP_ID", raising=False)
    code, summary, outcome = run_verification_command(policy_from_document(backups.document, "test"),
                                                      storage=storage)
    assert outcome is not None and code == 0, summary.error
    assert summary.backup_id == backups.logical_id and summary.kind == "verify" and summary.phase == "Completed"
    assert summary.reason == "RestoreVerified"
    assert json.loads((tmp_path / "termination-log").read_text())["reason"] == "RestoreVerified"

    code, summary, outcome = run_verification_command(policy_from_document(backups.document, "test"),
                                                      "20000101T000000Z", storage=storage)
    assert outcome is None and code == 3 and summary.reason == "BackupNotFound"
    assert "20000101T000000Z" in str(summary.error)




def test_sigterm_stops_the_throwaway_server_and_removes_it(backups: Backups, tmp_path: Path, scratch: Path) -> None:
    storage = storage_copy(backups, tmp_path)
    spec = {**backups.document["spec"], "verify": {"enabled": True, "checks": [
        {"name": "slow", "database": "shop", "sql": "SELECT true FROM pg_sleep(60)"}]}}
    env = {**os.environ, "PGBACKUP_POLICY": json.dumps({**backups.document, "spec": spec}),
           "PGBACKUP_VOLUME_ROOT": str(storage.root), "PGBACKUP_SCRATCH": str(scratch), "PGUSER": backups.server.user,
           "PGBACKUP_SUMMARY_FILE": str(tmp_path / "termination-log")}
    proc = subprocess.Popen([sys.executable, "-m", "pgbackup.runner", "verify", backups.logical_id], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # the restore is done; the slow check is next
        if '"event":"restore.done"' in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)

    assert proc.returncode == 1  # "failed", as for a terminated backup
    summary = json.loads((tmp_path / "termination-log").read_text())
    assert (summary["phase"], summary["reason"]) == ("Failed", "Terminated")
    assert not storage.exists(f"{backups.logical_id}/{VERIFICATION_NAME}")
    assert list(scratch.iterdir()) == []
    assert postgres_processes_under(scratch) == []


def test_compare_row_counts_reports_missing_and_extra_tables() -> None:
    results = compare_row_counts({"public.a": 1, "public.b": 2, "public.c": 3},
                                 {"public.a": 1, "public.b": 5, "public.d": 0}, database="db")
    by_name = {r.name: r for r in results}
    assert by_name["rowcount:db.public.a"].passed
    assert by_name["rowcount:db.public.b"].message == "manifest records 2 rows, the restore has 5"
    assert "missing after the restore" in by_name["rowcount:db.public.c"].message
    assert "not in the backup's manifest" in by_name["rowcount:db.public.d"].message
    assert [r.name for r in results if not r.passed] == ["rowcount:db.public.b", "rowcount:db.public.c",
                                                          "rowcount:db.public.d"]
