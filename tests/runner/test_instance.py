"""The throwaway PostgreSQL server (runner/postgres/instance.py) with the real PostgreSQL 15 and 18 binaries."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.postgres.account import make_workspace, passwd_wrapper_env, server_account
from pgbackup.runner.postgres.instance import ThrowawayPostgres, ThrowawayServerError
from pgbackup.runner.postgres.tools import major_of, server_tools
from tests.fixtures.postgres import bindir_for

VERSIONS = [pytest.param(v, id=f"pg{v}", marks=pytest.mark.skipif(bindir_for(v) is None,
                                                                   reason=f"PostgreSQL {v} is not installed"))
            for v in ("15", "18")]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_throwaway_server_starts_unprivileged_and_leaves_nothing_behind(version: str, scratch: Path) -> None:
    with ThrowawayPostgres.create(int(version), scratch=scratch) as server:
        params = server.conn_params()
        assert params.password is None and params.host == "127.0.0.1"
        with params.connect() as conn:
            major = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
            assert major == (int(version),)
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
        # the unix socket lives in the data directory and accepts the same trust login
        assert (server.datadir / f".s.PGSQL.{server.port}").exists()
        with psycopg.connect(host=str(server.datadir), port=server.port, user=server.superuser,
                             dbname="postgres") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        if os.geteuid() == 0:
            assert (server.datadir / "postmaster.pid").stat().st_uid != 0
        workdir = server.workdir
    assert not workdir.exists()
    assert list(scratch.iterdir()) == []
    with pytest.raises(RunnerError, match="cannot connect"):
        server.conn_params().connect()


def test_a_server_that_cannot_start_says_why_and_is_removed(scratch: Path) -> None:
    version = "15" if bindir_for("15") else "18"
    server = ThrowawayPostgres.create(int(version), scratch=scratch, settings={"shared_buffers": "'plenty'"})
    with pytest.raises(ThrowawayServerError, match="shared_buffers") as raised:
        with server:
            pass
    assert "server log:" in str(raised.value)
    assert not server.workdir.exists()
    assert list(scratch.iterdir()) == []


def test_a_long_scratch_path_still_gets_a_unix_socket(scratch: Path) -> None:
    deep = scratch / ("very-long-directory-name-" * 4)
    deep.mkdir()
    os.chmod(deep, 0o755)
    version = "18" if bindir_for("18") else "15"
    with ThrowawayPostgres.create(int(version), scratch=deep) as server:
        with server.connect() as conn:
            socket_dir = conn.execute("SHOW unix_socket_directories").fetchone()[0]  # type: ignore[index]
        assert len(socket_dir) < 90 and Path(socket_dir).is_dir()
    assert not Path(socket_dir).exists()


def test_a_password_protects_tcp_logins(scratch: Path) -> None:
    version = "15" if bindir_for("15") else "18"
    secret = "not-in-argv-0123"
    with ThrowawayPostgres.create(int(version), scratch=scratch, password=secret) as server:
        with server.conn_params().connect() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (server.superuser,)
        without = replace(server.conn_params(), password="wrong")
        with pytest.raises(RunnerError, match="rejected the login"):
            without.connect()


def test_missing_binaries_are_a_clear_error() -> None:
    with pytest.raises(RunnerError, match=r"no PostgreSQL 99 server binaries.*postgresql-99") as raised:
        server_tools(99)
    assert raised.value.reason == "ServerBinariesMissing"
    assert server_tools(9, allow_newer=True).major >= 15
    assert major_of("15.10 (Debian 15.10-1.pgdg120+1)") == 15 and major_of("18.3") == 18


@pytest.mark.parametrize("version", VERSIONS)
def test_a_base_backup_of_a_replication_server_starts_with_from_data_dir(version: str, scratch: Path) -> None:
    with ThrowawayPostgres.create(int(version), scratch=scratch, replication=True, superuser="admin") as source:
        with source.connect() as conn:
            conn.execute("CREATE TABLE t AS SELECT generate_series(1, 500) AS i")
        copy_dir = make_workspace(scratch, prefix="copy-", account=server_account()) / "data"
        taken = subprocess.run([source.tools.path("pg_basebackup"), "-D", str(copy_dir), "-X", "fetch", "-c", "fast",
                                "-h", "127.0.0.1", "-p", str(source.port), "-U", "admin", "--no-password"],
                               capture_output=True, text=True)
        assert taken.returncode == 0, taken.stderr
        with source.connect() as conn:  # after the backup: must not appear in the copy
            conn.execute("INSERT INTO t VALUES (501)")

    copy = ThrowawayPostgres.from_data_dir(copy_dir, login_roles=["nobody-here", "admin"])
    with copy:
        assert copy.superuser == "admin"
        with copy.connect() as conn:
            assert conn.execute("SELECT count(*), max(i) FROM t").fetchone() == (500, 500)
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    assert not copy_dir.exists()
    assert [p.name for p in scratch.iterdir()] == [copy_dir.parent.name]  # the caller's workspace, now empty
    assert list(copy_dir.parent.iterdir()) == []


def test_a_uid_with_a_passwd_entry_gets_no_wrapper(tmp_path: Path) -> None:
    # (a UID without one: tests/runner/test_any_uid.py runs a real verification under it)
    assert passwd_wrapper_env(tmp_path, "data") == ({}, [])
    assert list(tmp_path.iterdir()) == []
