"""THE PITR DRILL on a real PostgreSQL 15 archiving its WAL with `archive_command = 'pgbackup wal-push %p'`:
physical base backup -> rows of batch 1 -> note T1 and LSN1 (the server's own clock and WAL position) ->
rows of batch 2 -> pg_switch_wal, archived -> recover to T1 / LSN1 -> exactly batches 0 and 1.

The recovery replays WAL through `pgbackup wal-fetch` run by the throwaway server itself (restore_command).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pgbackup.api import jobenv
from pgbackup.runner.cli import main as cli
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.account import server_account
from pgbackup.runner.postgres.instance import ThrowawayPostgres
from pgbackup.runner.postgres.tools import server_installations
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.pitr import (
    PitrOutOfRange,
    PitrTarget,
    plan_pitr,
    policy_server_env,
    restore_to_point,
    runner_program,
)
from pgbackup.runner.restore.request import request_from_document
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive
from tests.fixtures.postgres import (
    SETTINGS,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    PgFactory,
    PgServer,
    backup_policy,
    bindir_for,
    start_cluster_from,
)
from tests.runner import uid_support
from tests.runner.uid_support import as_uid, chown_tree, owned_by, uid_workspace, unused_uid

DB = "drill"
PGBACKUP, PGBACKUP_ENV = runner_program(server_account())


@dataclass
class Drill:
    server: PgServer
    policy: dict
    volume: Path
    t1: datetime
    lsn1: str
    env: dict[str, str]

    def catalog(self) -> Catalog:
        return Catalog(FilesystemStorage(self.volume))

    def archive(self) -> WalArchive:
        return WalArchive(FilesystemStorage(self.volume))


def _batches(server: PgServer | ThrowawayPostgres, dbname: str) -> dict[int, int]:
    with server.connect(dbname) as conn:
        return dict(conn.execute("SELECT batch, count(*) FROM t GROUP BY batch ORDER BY batch").fetchall())


def _wait_archived(server: PgServer, segment: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (last, failed) = server.query("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")[0]
        if last is not None and last >= segment:
            return
        time.sleep(0.2)
    raise AssertionError(f"{segment} was not archived within {timeout}s (last failed: {failed})\n"
                         f"{server.instance.log_tail()}")


@pytest.fixture(scope="module")
def drill() -> Iterator[Drill]:
    bindir = bindir_for("15")
    if bindir is None:
        pytest.skip("PostgreSQL 15 binaries are not installed")
    tools = next(t for t in server_installations({}) if t.bindir == bindir)
    root = Path(tempfile.mkdtemp(prefix="pgbackup-test-pitr-"))
    os.chmod(root, 0o755)
    volume = root / "volume"
    volume.mkdir()
    os.chmod(volume, 0o777)  # the server account archives into it (archive_command runs as the server)
    scratch = root / "scratch"
    scratch.mkdir()
    os.chmod(scratch, 0o777)
    archive_command = shlex.join([*PGBACKUP, "wal-push", "%p"])
    instance = ThrowawayPostgres.create(tools=tools, scratch=root, superuser=SUPERUSER, replication=True,
                                        password=SUPERUSER_PASSWORD,
                                        settings={**SETTINGS, "archive_mode": "on",
                                                  "archive_command": "'" + archive_command + "'"})
    instance.stop_modes = ("immediate",)
    server = PgServer("15", instance)
    policy = backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical")
    policy_json = json.dumps(policy)
    env = {"PGUSER": server.user, "PGPASSWORD": server.password, "PGBACKUP_VOLUME_ROOT": str(volume),
           "PGBACKUP_SCRATCH": str(scratch), "PGBACKUP_SUMMARY_FILE": str(root / "summary"),
           "PGBACKUP_POLICY": policy_json}
    instance.server_env = {"PGBACKUP_POLICY": policy_json, "PGBACKUP_VOLUME_ROOT": str(volume), **PGBACKUP_ENV}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGBACKUP_PG_BINDIR"):
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, value)
            server.start()
            server.query(f"CREATE DATABASE {DB}")
            with server.connect(DB) as conn:
                conn.execute("CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL)")
                conn.execute("INSERT INTO t (batch) SELECT 0 FROM generate_series(1, 10)")
            code, summary = backup_command(policy_from_document(policy, "drill"))
            assert code == 0, summary.error
            with server.connect(DB) as conn:
                conn.execute("INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 5)")
                conn.execute("SELECT pg_sleep(0.3)")  # commit timestamps on both sides of T1 differ clearly
                t1, lsn1 = conn.execute("SELECT now(), pg_current_wal_lsn()::text").fetchone()  # type: ignore[misc]
                conn.execute("SELECT pg_sleep(0.3)")
                conn.execute("INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 7)")
            (segment,) = server.query("SELECT pg_walfile_name(pg_switch_wal())")[0]
            _wait_archived(server, segment)
            yield Drill(server, policy, volume, t1, lsn1, env)
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def drill_env(drill: Drill, monkeypatch: pytest.MonkeyPatch) -> Drill:
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGBACKUP_PG_BINDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in drill.env.items():
        monkeypatch.setenv(name, value)
    return drill


def test_pitr_to_a_time_copies_exactly_the_rows_committed_before_it(drill_env: Drill, pg_factory: PgFactory,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    drill = drill_env
    assert _batches(drill.server, DB) == {0: 10, 1: 5, 2: 7}
    target = pg_factory.get("15", "pitr-target")

    code = cli.main(["restore", "latest", "--target-time", drill.t1.isoformat(), "--target-database", "drill_t1",
                     "--target-port", str(target.port), "--json"])

    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    result = json.loads(out)
    assert result["row_counts"] == {"drill_t1": {"public.t": 15}}
    assert _batches(target, "drill_t1") == {0: 10, 1: 5}
    assert result["backup_id"] == drill.catalog().latest().id  # type: ignore[union-attr]


def test_pitr_to_an_lsn_leaves_a_startable_data_directory(drill_env: Drill, pg_factory: PgFactory) -> None:
    drill = drill_env
    datadir = pg_factory.new_datadir("pitr-lsn")
    report = restore_to_point(drill.catalog(), drill.archive(), PitrTarget(lsn=drill.lsn1), target_dir=datadir,
                              server_env=policy_server_env(json.dumps(drill.policy), os.environ),
                              restore_command=shlex.join([*PGBACKUP, "wal-fetch", "%f", "%p"]),
                              login_roles=[SUPERUSER])

    assert report.plan.wal_from <= report.plan.wal_to
    assert not (datadir / "recovery.signal").exists()
    assert "pgbackup throwaway" not in (datadir / "postgresql.auto.conf").read_text()
    recovered = pg_factory.adopt(start_cluster_from(drill.server, datadir))
    try:
        assert _batches(recovered, DB) == {0: 10, 1: 5}
        assert recovered.query("SELECT pg_is_in_recovery()") == [(False,)]
    finally:
        recovered.stop()


def test_pitr_runs_under_a_uid_without_a_passwd_entry(drill_env: Drill, pg_factory: PgFactory) -> None:
    """`pgbackup restore --target-lsn` as a UID with no passwd entry (OpenShift): the throwaway server, its
    restore_command (wal-fetch) and the restore itself write only into the UID's scratch and target."""
    drill = drill_env
    uid = unused_uid()
    prefix = as_uid(uid)
    with uid_workspace(uid) as home:
        scratch, target, volume = home / "scratch", home / "restored", home / "volume"
        shutil.copytree(drill.volume, volume)  # in a pod the backup volume belongs to the pod's user (fsGroup)
        scratch.mkdir()
        chown_tree(home, uid)
        env = uid_support.runner_env(**{**drill.env, "HOME": str(scratch), "TMPDIR": str(scratch),
                                        "PGBACKUP_SCRATCH": str(scratch), "PGBACKUP_VOLUME_ROOT": str(volume),
                                        "PGBACKUP_SUMMARY_FILE": str(home / "termination-log")})
        before_tmp = set(owned_by(uid, Path(tempfile.gettempdir())))

        done = subprocess.run([*prefix, *uid_support.RUNNER, "restore", "latest", "--target-lsn", drill.lsn1,
                               "--target-dir", str(target), "--json"], env=env, cwd="/", capture_output=True,
                              text=True, timeout=900)

        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["restored_into"] == str(target)
        assert list(scratch.iterdir()) == []
        assert sorted(p.name for p in home.iterdir()) == ["restored", "scratch", "volume"]  # no server files left beside it
        assert set(owned_by(uid, Path(tempfile.gettempdir()))) == before_tmp  # nothing written outside its dirs
        datadir = pg_factory.new_datadir("pitr-any-uid")
        shutil.move(target, datadir)
    recovered = pg_factory.adopt(start_cluster_from(drill.server, datadir))
    try:
        assert _batches(recovered, DB) == {0: 10, 1: 5}
    finally:
        recovered.stop()


def test_a_target_outside_the_window_is_refused_before_anything_changes(drill_env: Drill,
                                                                         pg_factory: PgFactory) -> None:
    drill = drill_env
    catalog, archive = drill.catalog(), drill.archive()
    base = catalog.latest()
    assert base is not None
    target = pg_factory.get("15", "pitr-target")
    conn = ConnParams(host=target.host, port=target.port, user=target.user, password=target.password,
                      sslmode="disable")

    early = base.completed_at - timedelta(minutes=5)
    with pytest.raises(PitrOutOfRange, match="is before the first recoverable point"):
        restore_to_point(catalog, archive, PitrTarget(time=early), target_conn=conn, target_database="never_made")
    late = datetime.now(base.completed_at.tzinfo) + timedelta(hours=1)
    with pytest.raises(PitrOutOfRange, match="is after the last archived WAL at"):
        restore_to_point(catalog, archive, PitrTarget(time=late), target_conn=conn, target_database="never_made")
    with pytest.raises(PitrOutOfRange, match="is after the last archived WAL at"):
        plan_pitr(catalog, archive, PitrTarget(lsn="FF/0"))
    assert target.query("SELECT count(*) FROM pg_database WHERE datname = 'never_made'") == [(0,)]


def test_the_plan_names_the_base_backup_and_wal_range(drill_env: Drill) -> None:
    drill = drill_env
    catalog = drill.catalog()
    base = catalog.latest()
    assert base is not None and base.physical is not None

    plan = plan_pitr(catalog, drill.archive(), PitrTarget(time=drill.t1))

    assert plan.backup_id == base.id
    assert plan.wal_from == base.physical.start_wal_segment
    assert plan.first_point == base.completed_at <= drill.t1 <= plan.last_point
    assert any("replay archived WAL" in step for step in plan.steps)


def test_a_restore_request_with_point_in_time_plans_then_recovers(drill_env: Drill, pg_factory: PgFactory) -> None:
    from pgbackup.runner.restore.request import request_from_document
    from pgbackup.runner.restore.run import run_restore_request

    drill = drill_env
    target = pg_factory.get("15", "pitr-target")
    document = {"name": "back-to-lsn1", "namespace": "shop", "policy": {"name": "orders-db", **drill.policy},
                "spec": {"policyRef": {"name": "orders-db"}, "pointInTime": {"targetLSN": drill.lsn1},
                         "databases": [DB], "target": {"host": target.host, "port": target.port,
                                                       "database": "drill_lsn1"}}}
    request = request_from_document(document, "test")

    code, planned = run_restore_request(request, dry_run=True)
    assert code == 0, planned.error
    assert planned.plan is not None and planned.result is None
    assert planned.plan.backup == drill.catalog().latest().id  # type: ignore[union-attr]
    assert planned.plan.wal_from and planned.plan.wal_to and planned.plan.target and planned.plan.target.endswith("/drill_lsn1")
    assert target.query("SELECT count(*) FROM pg_database WHERE datname = 'drill_lsn1'") == [(0,)]

    code, summary = run_restore_request(request)

    assert code == 0, summary.error
    assert summary.result is not None and summary.result.row_counts == {"drill_lsn1.public.t": 15}
    assert _batches(target, "drill_lsn1") == {0: 10, 1: 5}


def test_a_point_in_time_restore_as_a_role_without_createdb_is_refused_before_the_recovery(
        drill_env: Drill, pg_factory: PgFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/security.md: a point-in-time copy into a database needs CREATEDB; a role without it is refused before
    the recovery starts, with the ALTER ROLE that fixes it and the usage exit code."""
    drill = drill_env
    target = pg_factory.get("15", "pitr-target")
    target.query("DROP ROLE IF EXISTS pitr_restore")
    target.query("CREATE ROLE pitr_restore LOGIN PASSWORD 'pw'")
    monkeypatch.setenv("PGUSER", "pitr_restore")
    monkeypatch.setenv("PGPASSWORD", "pw")
    request = request_from_document(
        {"name": "least", "namespace": "shop", "policy": {"name": "orders-db", **drill.policy},
         "spec": {"policyRef": {"name": "orders-db"}, "pointInTime": {"targetLSN": drill.lsn1}, "databases": [DB],
                  "target": {"host": target.host, "port": target.port, "database": "drill_least"}}}, "test")
    try:
        code, summary = run_restore_request(request)
        assert code == jobenv.EXIT_USAGE and summary.reason == "MissingPrivilege", summary.error
        assert "ALTER ROLE pitr_restore CREATEDB" in str(summary.error)
        assert target.query("SELECT count(*) FROM pg_database WHERE datname = 'drill_least'") == [(0,)]
    finally:
        target.query("DROP ROLE IF EXISTS pitr_restore")
