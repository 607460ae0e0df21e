"""`pgbackup restore-request` against real PostgreSQL (15, and 18 with pgvector), real storage (volume, moto S3).

What a user would notice: the plan before any change, a new database with extensions and checked row counts,
an overwrite that never loses the old data (safety backup, dated copy, swap only after passing checks), refusals
that change nothing, and failures whose message says what to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgbackup.api import jobenv
from pgbackup.api.restore import CheckResult, RestorePlan, RestoreResult
from pgbackup.api.summary import MAX_SUMMARY_BYTES, JobSummary
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.facts import count_rows
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.postgres import (
    EXPECTED_ROWS,
    SAMPLE_ROLE,
    PgFactory,
    PgServer,
    backup_policy,
    free_port,
    load_sample,
    runner_env,
)
from tests.fixtures.s3 import S3Bucket
from tests.runner.storage_support import make_age_key

MARKER_ROWS = 7
SLEEPING = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"


@dataclass(frozen=True)
class Backup:
    root: Path
    policy: dict[str, Any]
    backup_id: str

    @property
    def catalog(self) -> Catalog:
        return Catalog(FilesystemStorage(self.root / "orders"))


def take(server: PgServer, root: Path, env_dir: Path, dbname: str, **spec: Any) -> Backup:
    """One logical backup of `dbname` into a volume under `root`, as the backup Job takes it."""
    (root / "orders").mkdir(parents=True, exist_ok=True)
    env_dir.mkdir(parents=True, exist_ok=True)
    document = backup_policy(server, {"volume": {"claimName": "backups", "path": "orders"}}, databases=[dbname],
                             logical={"globals": False}, **spec)
    with pytest.MonkeyPatch.context() as patch:
        runner_env(server, patch, env_dir)
        patch.setenv("PGBACKUP_VOLUME_ROOT", str(root))
        code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    return Backup(root=root, policy=document, backup_id=str(summary.backup_id))


@pytest.fixture(scope="module")
def shop_backup(pg15: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Backup:
    db = load_sample(pg15)
    return take(pg15, tmp_path_factory.mktemp("rr-volume"), tmp_path_factory.mktemp("rr-env"), db)


@pytest.fixture(scope="module")
def target(pg_factory: PgFactory) -> PgServer:
    """A separate 'staging' server that already has the application's role (the dump grants to it)."""
    server = pg_factory.get("15", "restore-request-target")
    server.query(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SAMPLE_ROLE}') THEN "
                 f"CREATE ROLE {SAMPLE_ROLE} NOLOGIN; END IF; END $$")
    return server


def request_doc(backup: Backup, server: PgServer, *, backup_ref: str | None = None, **spec: Any) -> dict[str, Any]:
    target_spec = {"host": server.host, "port": server.port, **spec.pop("target", {})}
    return {"name": "rr-1", "namespace": "shop",
            "spec": {"policyRef": {"name": "orders-db"}, "backup": backup_ref or backup.backup_id,
                     "target": target_spec, **spec},
            "policy": {"name": backup.policy["name"], "spec": backup.policy["spec"]}}


def restore_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backup: Backup, server: PgServer,
                document: dict[str, Any], *, password: str | None = None) -> Path:
    """The env the restore Job gets: the request JSON, the target's login, storage root, summary file."""
    summary = runner_env(server, monkeypatch, tmp_path, password=password)
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(backup.root))
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps(document))
    monkeypatch.delenv(jobenv.ENV_AGE_IDENTITY_FILE, raising=False)
    return summary


def restore(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backup: Backup, server: PgServer,
            **spec: Any) -> tuple[int, JobSummary]:
    restore_env(monkeypatch, tmp_path, backup, server, request_doc(backup, server, **spec))
    return run_restore_request()


def rows(server: PgServer, dbname: str) -> dict[str, int]:
    with server.connect(dbname) as conn:
        return count_rows(conn)


def databases(server: PgServer) -> set[str]:
    return {r[0] for r in server.query("SELECT datname FROM pg_database WHERE NOT datistemplate")}


def cluster_state(server: PgServer) -> dict[str, dict[str, int]]:
    return {name: rows(server, name) for name in sorted(databases(server))}


def make_app_db(server: PgServer, name: str) -> None:
    """An existing database with recognisable content: `marker` with 7 rows (no table of the backup)."""
    server.query(f'DROP DATABASE IF EXISTS "{name}"')
    server.query(f'CREATE DATABASE "{name}"')
    server.query(f"CREATE TABLE marker (id int); INSERT INTO marker SELECT generate_series(1, {MARKER_ROWS})", name)


def leftovers(server: PgServer, name: str) -> set[str]:
    return {d for d in databases(server) if d.startswith(f"{name}__pgbackup_")}


# ---------------------------------------------------------------- new database


def test_restore_latest_into_new_database_with_extensions(pg18: PgServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    db = load_sample(pg18)  # with pgvector and a pg_trgm index
    backup = take(pg18, tmp_path / "vol", tmp_path / "env", db)
    checks = [{"name": "similar-docs", "database": db,
               "sql": "SELECT count(*) > 0 FROM docs WHERE body % 'quick brown fox number 7'"}]
    summary_file = restore_env(monkeypatch, tmp_path, backup, pg18, request_doc(
        backup, pg18, backup_ref="latest", extensions=["vector", "pg_trgm"], checks=checks, jobs=2))

    code, summary = run_restore_request()

    assert code == jobenv.EXIT_OK, summary.error
    restored = f"shop_restored_{backup.backup_id.lower()}"
    written = JobSummary.from_termination_message(summary_file.read_text())
    assert written is not None and written.kind == "restore" and written.phase == "Completed"
    assert written.backup_id == backup.backup_id and written.plan and written.result
    assert written.plan.target == f"{pg18.host}:{pg18.port}/{restored}"
    assert any("create extensions vector, pg_trgm" in step for step in written.plan.steps)
    names = {c.name: c.passed for c in written.result.checks}
    assert names == {**{f"rowcount:{restored}.{t}": True for t in EXPECTED_ROWS},
                     f"extension:{restored}.vector": True, f"extension:{restored}.pg_trgm": True,
                     "similar-docs": True}
    assert written.result.row_counts == {f"{restored}.{t}": n for t, n in EXPECTED_ROWS.items()}
    assert rows(pg18, restored) == EXPECTED_ROWS
    assert pg18.query("SELECT embedding::text FROM docs ORDER BY embedding <-> '[2,4,0.5]' LIMIT 1",
                      restored) == [("[2,4,0.5]",)]
    pg18.query(f'DROP DATABASE "{restored}"')


def test_restore_from_s3_with_encryption(pg15: PgServer, target: PgServer, s3_bucket: S3Bucket, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    key = make_age_key(tmp_path, "restore")
    db = load_sample(pg15)
    policy = backup_policy(pg15, {"s3": s3_bucket.wire()}, databases=[db], logical={"globals": False},
                           encryption={"recipients": [key.recipient]})
    runner_env(pg15, monkeypatch, tmp_path)
    code, taken = backup_command(policy_from_document(policy, "test"))
    assert code == 0, taken.error
    backup = Backup(root=tmp_path, policy=policy, backup_id=str(taken.backup_id))
    restore_env(monkeypatch, tmp_path, backup, target,
                request_doc(backup, target, backup_ref="latest", target={"database": "from_s3"}))

    code, summary = run_restore_request()
    assert code == jobenv.EXIT_USAGE and summary.reason == "IdentityMissing"  # encrypted, no key mounted
    assert "identitySecret" in str(summary.error) and "from_s3" not in databases(target)

    monkeypatch.setenv(jobenv.ENV_AGE_IDENTITY_FILE, str(key.identity_file))
    code, summary = run_restore_request()
    assert code == jobenv.EXIT_OK, summary.error
    assert summary.plan and summary.plan.objects[0].startswith(f"s3://{s3_bucket.bucket}/")
    assert rows(target, "from_s3") == EXPECTED_ROWS
    assert S3Storage(s3_bucket.spec()).exists(f"{taken.backup_id}/manifest.json")
    target.query('DROP DATABASE "from_s3"')


def test_new_database_is_dropped_when_a_check_fails(shop_backup: Backup, target: PgServer, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    checks = [{"name": "no-orders", "database": "shop", "sql": "SELECT count(*) = 0 FROM sales.orders"}]
    code, summary = restore(monkeypatch, tmp_path, shop_backup, target, checks=checks, extensions=["pg_trgm"],
                            target={"database": "new_but_wrong"})

    assert code == jobenv.EXIT_FAILED and summary.reason == "CheckFailed"
    assert "no-orders: returned false" in str(summary.error) and "'new_but_wrong' not created" in str(summary.error)
    assert "dropped 'new_but_wrong__pgbackup_restore_" in str(summary.error)
    assert summary.result is not None and summary.result.row_counts["new_but_wrong.sales.orders"] == 1000
    assert "new_but_wrong" not in databases(target)


# ---------------------------------------------------------------- overwrite


def test_existing_target_is_refused_without_overwrite(shop_backup: Backup, target: PgServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    make_app_db(target, "app_refused")
    before = cluster_state(target)

    code, summary = restore(monkeypatch, tmp_path, shop_backup, target, target={"database": "app_refused"})

    assert code == jobenv.EXIT_USAGE and summary.phase == "Failed" and summary.reason == "TargetDatabaseExists"
    assert "'app_refused' already exists" in str(summary.error) and "overwrite: true" in str(summary.error)
    assert "nothing was changed" in str(summary.error)
    assert cluster_state(target) == before
    assert shop_backup.catalog.ids() == [shop_backup.backup_id]


def test_overwrite_takes_safety_backup_and_keeps_old_database(shop_backup: Backup, target: PgServer,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_app_db(target, "app_over")
    checks = [{"name": "orders-present", "database": "app_over", "sql": "SELECT count(*) = 1000 FROM sales.orders"}]

    code, summary = restore(monkeypatch, tmp_path, shop_backup, target, checks=checks,
                            target={"database": "app_over", "overwrite": True})

    assert code == jobenv.EXIT_OK, summary.error
    result = summary.result
    assert result is not None and all(c.passed for c in result.checks)
    assert {c.name for c in result.checks} >= {"orders-present", "rowcount:app_over.sales.orders"}
    assert rows(target, "app_over") == EXPECTED_ROWS
    # the replaced database is kept, untouched, under a dated name
    assert re.fullmatch(r"app_over__pgbackup_old_\d{14}", str(result.previous_database))
    assert rows(target, str(result.previous_database)) == {"public.marker": MARKER_ROWS}
    assert leftovers(target, "app_over") == {result.previous_database}
    # the safety backup is a normal backup in the policy's catalog, of the replaced database
    safety = shop_backup.catalog.get(str(result.pre_restore_backup))
    assert [d.name for d in safety.databases] == ["app_over"]
    assert safety.databases[0].row_counts == {"public.marker": MARKER_ROWS}
    assert shop_backup.catalog.check(safety.id).ok
    assert any("safety backup" in step for step in (summary.plan.steps if summary.plan else []))


def test_failing_check_keeps_the_original(shop_backup: Backup, target: PgServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    make_app_db(target, "app_check")
    checks = [{"name": "too-many-customers", "database": "app_check", "sql": "SELECT count(*) < 10 FROM customers"}]

    code, summary = restore(monkeypatch, tmp_path, shop_backup, target, checks=checks,
                            target={"database": "app_check", "overwrite": True, "preRestoreBackup": False})

    assert code == jobenv.EXIT_FAILED and summary.reason == "CheckFailed"
    assert "too-many-customers: returned false" in str(summary.error)
    assert "'app_check' unchanged" in str(summary.error)
    assert summary.result is not None and summary.result.pre_restore_backup is None
    assert [c.name for c in summary.result.checks if not c.passed] == ["too-many-customers"]
    assert rows(target, "app_check") == {"public.marker": MARKER_ROWS}
    assert leftovers(target, "app_check") == set()  # temporary database dropped, nothing renamed


def test_restore_failing_half_way_keeps_the_original(pg15: PgServer, target: PgServer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The dump loads one table, then gives another to a role the target server does not have: pg_restore
    # stops half-way with an error, after the temporary database already holds data.
    pg15.query("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rr_only_on_source') THEN "
               "CREATE ROLE rr_only_on_source NOLOGIN; END IF; END $$")
    pg15.query('DROP DATABASE IF EXISTS "half"')
    pg15.query('CREATE DATABASE "half"')
    pg15.query("CREATE TABLE a_loaded AS SELECT generate_series(1, 50) AS id; "
               "CREATE TABLE z_owned (id int); ALTER TABLE z_owned OWNER TO rr_only_on_source", "half")
    try:
        backup = take(pg15, tmp_path / "vol", tmp_path / "env", "half")
    finally:  # the shared source server stays as other tests expect it
        pg15.query('DROP DATABASE "half"')
        pg15.query("DROP ROLE rr_only_on_source")
    make_app_db(target, "app_half")

    code, summary = restore(monkeypatch, tmp_path, backup, target,
                            target={"database": "app_half", "overwrite": True})

    assert code == jobenv.EXIT_FAILED and summary.reason == "RestoreFailed", summary.error
    assert "rr_only_on_source" in str(summary.error) and "'app_half' unchanged" in str(summary.error)
    assert rows(target, "app_half") == {"public.marker": MARKER_ROWS}
    assert leftovers(target, "app_half") == set()
    # the safety backup taken before the attempt is kept and reported
    assert summary.result is not None and summary.result.pre_restore_backup in backup.catalog.ids()


def test_killed_restore_leaves_the_original_and_is_reported_next_time(shop_backup: Backup, target: PgServer,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the Job's process after the data is loaded, before the swap: nothing can clean up, yet the
    original is intact; the next plan names the leftover temporary database."""
    make_app_db(target, "app_kill")
    slow = [{"name": "slow", "database": "app_kill", "sql": "SELECT pg_sleep(30) IS NOT NULL"}]
    restore_env(monkeypatch, tmp_path, shop_backup, target, request_doc(
        shop_backup, target, checks=slow, target={"database": "app_kill", "overwrite": True, "preRestoreBackup": False}))
    runner = subprocess.Popen([sys.executable, "-m", "pgbackup.runner", "restore-request"], env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):  # wait until the check runs (the data is loaded by then)
            if runner.poll() is not None or target.query(SLEEPING):
                break
            time.sleep(0.05)
        assert runner.poll() is None, "the restore ended before it could be killed"
        runner.kill()
    finally:
        runner.kill()
        runner.wait()
    target.query(f"SELECT pg_terminate_backend(pid) FROM ({SLEEPING}) AS sleeping")

    assert rows(target, "app_kill") == {"public.marker": MARKER_ROWS}
    (left,) = leftovers(target, "app_kill")
    assert left.startswith("app_kill__pgbackup_restore_") and rows(target, left) == EXPECTED_ROWS

    code, summary = restore(monkeypatch, tmp_path, shop_backup, target, dryRun=True,
                            target={"database": "app_kill", "overwrite": True})
    assert code == jobenv.EXIT_OK and summary.plan is not None
    assert any(f"{left!r} was left by an interrupted restore" in step for step in summary.plan.steps)
    target.query(f'DROP DATABASE "{left}" WITH (FORCE)')


def test_active_sessions_are_refused_or_terminated(shop_backup: Backup, target: PgServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    make_app_db(target, "app_busy")
    with target.connect("app_busy") as app:
        code, summary = restore(monkeypatch, tmp_path, shop_backup, target,
                                target={"database": "app_busy", "overwrite": True})

        assert code == jobenv.EXIT_FAILED and summary.reason == "ActiveSessions"
        assert "1 active session(s)" in str(summary.error) and "terminateConnections: true" in str(summary.error)
        assert app.execute("SELECT count(*) FROM marker").fetchone() == (MARKER_ROWS,)
        assert shop_backup.catalog.ids().count(shop_backup.backup_id) == 1
        assert len(shop_backup.catalog.ids()) == len(set(shop_backup.catalog.ids()))
        before_ids = set(shop_backup.catalog.ids())
        assert summary.result is None and leftovers(target, "app_busy") == set()

        code, summary = restore(monkeypatch, tmp_path, shop_backup, target, target={
            "database": "app_busy", "overwrite": True, "terminateConnections": True, "dropPrevious": True})

        assert code == jobenv.EXIT_OK, summary.error
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")
    assert rows(target, "app_busy") == EXPECTED_ROWS
    assert leftovers(target, "app_busy") == set()  # dropPrevious: the replaced database is gone
    assert summary.result is not None and summary.result.previous_database is None
    assert summary.result.pre_restore_backup not in before_ids  # ... but its safety backup exists
    assert summary.result.pre_restore_backup in shop_backup.catalog.ids()


def test_dry_run_changes_nothing(shop_backup: Backup, target: PgServer, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the command line, as the Job runs it: env in, plan out (stdout and termination file)."""
    make_app_db(target, "app_dry")
    before, ids = cluster_state(target), shop_backup.catalog.ids()
    summary_file = restore_env(monkeypatch, tmp_path, shop_backup, target, request_doc(
        shop_backup, target, dryRun=True, target={"database": "app_dry", "overwrite": True}))

    done = subprocess.run([sys.executable, "-m", "pgbackup.runner", "restore-request", "--json"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=120)

    assert done.returncode == jobenv.EXIT_OK, done.stderr
    printed = JobSummary.model_validate_json(done.stdout)
    written = JobSummary.from_termination_message(summary_file.read_text())
    assert written == printed and written.phase == "Completed" and written.result is None
    assert written.plan and written.plan.backup == shop_backup.backup_id
    assert any("rename 'app_dry' to 'app_dry__pgbackup_old_" in step for step in written.plan.steps)
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    plan_lines = [line for line in logged if line["event"] == "restore.plan"]
    assert len(plan_lines) == 1 and plan_lines[0]["steps"] == written.plan.steps and plan_lines[0]["dry_run"]
    assert target.password not in done.stderr + done.stdout
    assert cluster_state(target) == before and shop_backup.catalog.ids() == ids


# ---------------------------------------------------------------- failures a person can act on


def test_unknown_backup_id(shop_backup: Backup, target: PgServer, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, summary = restore(monkeypatch, tmp_path, shop_backup, target, backup_ref="20200101T000000Z")

    assert code == jobenv.EXIT_USAGE and summary.reason == "BackupNotFound"
    assert "20200101T000000Z" in str(summary.error) and shop_backup.backup_id in str(summary.error)
    assert summary.plan is None and summary.result is None


def test_a_manifest_changed_after_the_backup_is_refused_before_any_change(shop_backup: Backup, target: PgServer,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    copy = Backup(root=tmp_path / "storage", policy=shop_backup.policy, backup_id=shop_backup.backup_id)
    shutil.copytree(shop_backup.root, copy.root)
    manifest_file = copy.root / "orders" / copy.backup_id / "manifest.json"
    document = json.loads(manifest_file.read_text())
    document["databases"][0]["row_counts"]["sales.orders"] = 999
    manifest_file.write_text(json.dumps(document))
    before = databases(target)

    code, summary = restore(monkeypatch, tmp_path, copy, target, target={"database": "never_restored"})

    assert code == jobenv.EXIT_FAILED and summary.reason == "ManifestChanged"
    assert f"manifest.json of backup {copy.backup_id}" in str(summary.error)
    assert "the manifest was changed after the backup" in str(summary.error)
    assert databases(target) == before


def test_unreachable_target(shop_backup: Backup, target: PgServer, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    code, summary = restore(monkeypatch, tmp_path, shop_backup, target, target={"port": port})

    assert code == jobenv.EXIT_NETWORK and summary.reason == "DatabaseUnreachable"
    assert f"port {port}" in str(summary.error) and "reachable" in str(summary.error)


def test_wrong_credentials(shop_backup: Backup, target: PgServer, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "Wr0ng-Passw0rd-xyz"
    document = request_doc(shop_backup, target, target={"credentialsSecret": {"name": "staging-admin"}})
    summary_file = restore_env(monkeypatch, tmp_path, shop_backup, target, document, password=wrong)

    code, summary = run_restore_request()

    assert code == jobenv.EXIT_FAILED and summary.reason == "AuthenticationFailed"
    assert "'staging-admin'" in str(summary.error) and "rejected the login" in str(summary.error)
    text = summary_file.read_text()
    assert wrong not in text and target.password not in text


# ---------------------------------------------------------------- the termination message


def test_summary_of_a_large_restore_fits_the_termination_message() -> None:
    checks = [CheckResult(name=f"rowcount:app.public.table_{i:04d}", passed=i != 613, message=f"{i} rows, as recorded")
              for i in range(800)]
    plan = RestorePlan(backup="20261123T020000Z", target="db.example:5432/app",
                       objects=[f"s3://bucket/prefix/20261123T020000Z/databases/db{i}.dump.zst.age" for i in range(60)],
                       steps=[f"step {i}: something fairly long to describe what happens here" for i in range(80)])
    result = RestoreResult(restore_seconds=12.5, checks=checks,
                           row_counts={f"app.public.table_{i:04d}": i for i in range(800)})
    summary = JobSummary(kind="restore", phase="Failed", backup_id=plan.backup, plan=plan, result=result,
                         reason="RowCountMismatch", error="1 of 800 post-restore check(s) failed: " + "x" * 1300)

    text = summary.to_termination_message()

    assert len(text.encode()) <= MAX_SUMMARY_BYTES
    parsed = JobSummary.from_termination_message(text)
    assert parsed is not None and parsed.result is not None and parsed.plan is not None
    assert parsed.result.checks[0].name == "rowcount:app.public.table_0613" and not parsed.result.checks[0].passed
    assert parsed.result.checks[-1].name == "..." and "see the Job's log" in parsed.result.checks[-1].message
    assert parsed.plan.backup == plan.backup and parsed.error and parsed.error.startswith("1 of 800")
    small = JobSummary(kind="restore", phase="Completed", plan=RestorePlan(backup="x", steps=["a"]), result=RestoreResult())
    assert JobSummary.from_termination_message(small.to_termination_message()) == small
