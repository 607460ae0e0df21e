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
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pgbackup.api import jobenv
from pgbackup.runner.cli import main as cli
from pgbackup.runner.postgres.instance import ThrowawayPostgres
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.pitr import (
    PitrOutOfRange,
    PitrTarget,
    plan_pitr,
    policy_server_env,
    restore_to_point,
)
from pgbackup.runner.restore.request import request_from_document
from pgbackup.runner.restore.run import run_restore_request
from tests.fixtures.archiving import PGBACKUP, Drill, pitr_drill
from tests.fixtures.postgres import SUPERUSER, PgFactory, PgServer, start_cluster_from
from tests.runner import uid_support
from tests.runner.uid_support import as_uid, chown_tree, owned_by, uid_workspace, unused_uid

DB = "drill"


def _batches(server: PgServer | ThrowawayPostgres, dbname: str) -> dict[int, int]:
    with server.connect(dbname) as conn:
        return dict(conn.execute("SELECT batch, count(*) FROM t GROUP BY batch ORDER BY batch").fetchall())


@pytest.fixture(scope="module")
def drill() -> Iterator[Drill]:
    with pitr_drill("15", DB) as done:
        yield done


@pytest.fixture
def drill_env(drill: Drill, monkeypatch: pytest.MonkeyPatch) -> Drill:
    drill.apply_env(monkeypatch)
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
