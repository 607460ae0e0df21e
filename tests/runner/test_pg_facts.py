"""What the runner learns from a real server: databases, extensions, exact row counts in the dump's snapshot,
client tool choice, and connection errors that name the server but not the password."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from pgbackup.api import jobenv
from pgbackup.api.policy import DatabaseSpec
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.postgres.facts import DatabaseFacts, exported_snapshot, list_databases, server_info
from pgbackup.runner.postgres.pg import AuthenticationFailed, ConnParams, DatabaseUnreachable
from pgbackup.runner.postgres.tools import find_tools
from tests.fixtures.postgres import EXPECTED_ROWS, PgServer, free_port


def params_for(server: PgServer, **overrides: object) -> ConnParams:
    fields: dict[str, object] = {"host": server.host, "port": server.port, "user": server.user,
                                 "password": server.password}
    fields.update(overrides)
    return ConnParams(**fields)  # type: ignore[arg-type]


def test_server_facts_and_databases(sample_db: tuple[PgServer, str]) -> None:
    server, db = sample_db
    with params_for(server).connect() as conn:
        info = server_info(conn)
        databases = list_databases(conn)
    assert info.major == int(server.version)
    assert info.wal_segment_size == 16 * 1024 * 1024
    assert db in databases and "postgres" in databases and "template1" not in databases


def test_row_counts_are_exact_and_from_the_exported_snapshot(sample_db: tuple[PgServer, str]) -> None:
    server, db = sample_db
    with exported_snapshot(params_for(server), db) as exported:
        # rows added after the snapshot are not in its counts (nor in a dump taken with --snapshot)
        server.query("INSERT INTO empty_table VALUES (1)", db)
        assert exported.snapshot
        facts = exported.facts()
        assert facts.row_counts == EXPECTED_ROWS
        assert facts.extensions["pg_trgm"]
    server.query("DELETE FROM empty_table", db)


def test_the_dump_runs_while_rows_are_counted_and_the_counts_stay_those_of_its_snapshot(
        sample_db: tuple[PgServer, str], tmp_path: Path) -> None:
    """pg_dump gets the snapshot at once: counting (here held up by a lock on one table) runs beside it, and the
    rows committed meanwhile are in neither the counts nor the dump."""
    server, db = sample_db
    params = params_for(server)
    got_snapshot = threading.Event()
    released = threading.Event()
    result: dict[str, object] = {}

    def backup() -> None:
        with exported_snapshot(params, db) as exported:
            got_snapshot.set()
            dump = subprocess.run(
                [find_tools(int(server.version)).path("pg_dump"), "--no-password", f"--snapshot={exported.snapshot}",
                 "-t", "sales.orders", "--data-only", "-f", str(tmp_path / "orders.sql")],
                env=params.child_env(db), capture_output=True, text=True)
            result["dump"] = dump.returncode, dump.stderr
            released.wait(60)
            result["facts"] = exported.facts()

    with params.connect(db, autocommit=False) as locker:
        locker.execute("LOCK TABLE empty_table IN ACCESS EXCLUSIVE MODE")  # count(*) of it waits for this
        worker = threading.Thread(target=backup)
        worker.start()
        try:
            assert got_snapshot.wait(30), "the snapshot for pg_dump waited for the row counts"
            locker.execute("INSERT INTO empty_table VALUES (1)")  # committed after the snapshot
            locker.commit()
        finally:
            locker.rollback()
            released.set()
            worker.join(120)
    server.query("DELETE FROM empty_table", db)
    assert result["dump"] == (0, "")
    assert (tmp_path / "orders.sql").read_text().count("\n") > 1000  # the dump ran while empty_table was locked
    facts = result["facts"]
    assert isinstance(facts, DatabaseFacts)
    assert facts.row_counts == EXPECTED_ROWS  # empty_table: 0, as in the snapshot


def test_client_tools_match_the_server_version(pg_server: PgServer) -> None:
    tools = find_tools(int(pg_server.version))
    assert tools.major == int(pg_server.version)


def test_tools_override_must_work() -> None:
    with pytest.raises(UsageError, match="PGBACKUP_PG_BINDIR"):
        find_tools(15, {"PGBACKUP_PG_BINDIR": "/nonexistent"})


def test_missing_user_says_which_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DatabaseSpec.model_validate({"host": "db", "credentialsSecret": {"name": "orders-db-creds"}})
    with pytest.raises(UsageError, match="orders-db-creds"):
        ConnParams.from_spec(spec, {})


def test_wrong_password_error(pg15: PgServer) -> None:
    params = params_for(pg15, password="not-the-password-xyz")
    with pytest.raises(AuthenticationFailed) as raised:
        params.connect()
    message = str(raised.value)
    assert f"host 127.0.0.1 port {pg15.port} user {pg15.user}" in message
    assert "not-the-password-xyz" not in message
    assert raised.value.exit_code == jobenv.EXIT_FAILED


def test_unreachable_error(pg15: PgServer) -> None:
    port = free_port()
    with pytest.raises(DatabaseUnreachable) as raised:
        params_for(pg15, port=port).connect()
    assert f"port {port}" in str(raised.value) and "reachable" in str(raised.value)
    assert raised.value.exit_code == jobenv.EXIT_NETWORK
