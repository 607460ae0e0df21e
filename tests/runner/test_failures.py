"""Failure behaviour against real servers: unreachable, wrong password, pg_dump killed mid-stream, existing
restore target. Each must fail cleanly: no manifest, the right exit code, an error that names the server and
never the password."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from pgbackup.api import jobenv
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.fixtures.postgres import PgServer, backup_policy, free_port, runner_env
from tests.runner.claim_support import HookedStorage


def children_named(name: str) -> list[int]:
    """PIDs of our child processes running `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm == name and ppid == os.getpid():
            found.append(int(entry.name))
    return found


def test_unreachable_server_names_host_port_user(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 runner_log: Path) -> None:
    port = free_port()  # nothing listens here
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}})
    document["spec"]["database"]["port"] = port
    summary_file = runner_env(pg15, monkeypatch, tmp_path)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == jobenv.EXIT_NETWORK
    assert summary.phase == "Failed" and summary.reason == "DatabaseUnreachable"
    assert f"host 127.0.0.1 port {port} user {pg15.user}" in str(summary.error)
    assert json.loads(summary_file.read_text())["reason"] == "DatabaseUnreachable"
    assert list((tmp_path / "volume").iterdir()) == []


def test_wrong_password_is_named_but_never_shown(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 runner_log: Path) -> None:
    wrong = "Wr0ng-Passw0rd-in-the-Secret"
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}})
    summary_file = runner_env(pg15, monkeypatch, tmp_path, password=wrong)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == jobenv.EXIT_FAILED
    assert summary.reason == "AuthenticationFailed"
    error = str(summary.error)
    assert f"host 127.0.0.1 port {pg15.port} user {pg15.user}" in error
    assert "Secret 'db-credentials'" in error
    for text in (error, summary_file.read_text(), runner_log.read_text()):
        assert wrong not in text
        assert pg15.password not in text
    assert list((tmp_path / "volume").iterdir()) == []


def test_password_reaches_pg_dump_through_env_not_argv(sample_db: tuple[PgServer, str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = sample_db
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=[db], logical={"globals": False},
                             compression={"algorithm": "none"})
    runner_env(server, monkeypatch, tmp_path)
    seen: list[tuple[bytes, bytes]] = []

    def inspect(key: str) -> None:
        for pid in children_named("pg_dump"):
            try:
                seen.append((Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{pid}/environ").read_bytes()))
            except OSError:
                pass

    storage = HookedStorage(FilesystemStorage(tmp_path / "volume"), on_write=inspect)
    code, summary = backup_command(policy_from_document(document, "test"), storage=storage)

    assert code == 0, summary.error
    assert seen, "pg_dump was never seen running"
    for cmdline, environ in seen:
        assert b"pg_dump" in cmdline
        assert server.password.encode() not in cmdline
        assert f"PGPASSWORD={server.password}".encode() in environ.split(b"\0")


@pytest.mark.parametrize("where", ["volume", "s3"])
def test_pg_dump_killed_mid_stream_leaves_no_backup(sample_db: tuple[PgServer, str], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, where: str,
                                                     request: pytest.FixtureRequest) -> None:
    from pgbackup.runner.storage.factory import open_storage

    server, db = sample_db
    bucket = request.getfixturevalue("s3_bucket") if where == "s3" else None
    storage_spec = {"s3": bucket.wire()} if bucket else {"volume": {"claimName": "backups"}}
    document = backup_policy(server, storage_spec, databases=[db], logical={"globals": False},
                             compression={"algorithm": "none"})
    runner_env(server, monkeypatch, tmp_path)
    policy = policy_from_document(document, "test")
    killed: list[int] = []

    def kill_pg_dump(key: str) -> None:
        if killed:
            return
        for pid in children_named("pg_dump"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}/stat").exists() and ") Z" not in Path(f"/proc/{pid}/stat").read_text()
                  for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.01)

    inner = open_storage(policy.spec.storage, volume_root=tmp_path / "volume")
    code, summary = backup_command(policy, storage=HookedStorage(inner, on_write=kill_pg_dump))

    assert killed, "pg_dump had finished before the first write"
    assert code == jobenv.EXIT_FAILED
    assert summary.phase == "Failed"
    assert f"database '{db}'" in str(summary.error) and "killed by signal 9 (SIGKILL)" in str(summary.error)
    assert "memory" in str(summary.error) and "rights" not in str(summary.error)  # not a permission problem
    assert Catalog(inner).backups() == []
    if bucket is not None:
        assert bucket.keys() == []
        assert bucket.incomplete_uploads() == []
    else:
        assert [p for p in (tmp_path / "volume").rglob("*") if p.is_file()] == []


def test_restore_refuses_an_existing_database(sample_db: tuple[PgServer, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = sample_db
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=[db], logical={"globals": False})
    runner_env(server, monkeypatch, tmp_path)
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    before = server.query("SELECT count(*) FROM customers", db)
    params = ConnParams(host=server.host, port=server.port, user=server.user, password=server.password)

    with pytest.raises(UsageError, match=f"database '{db}' already exists") as raised:
        restore_backup(Catalog(FilesystemStorage(tmp_path / "volume")), str(summary.backup_id), params, db)

    assert raised.value.exit_code == jobenv.EXIT_USAGE
    assert server.query("SELECT count(*) FROM customers", db) == before


def test_storage_unreachable_exits_with_the_network_code(pg15: PgServer, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.postgres import load_sample
    from tests.fixtures.s3 import s3_env

    server, db = pg15, load_sample(pg15)
    s3_env(monkeypatch)
    storage = {"s3": {"bucket": "backups", "endpoint": f"http://127.0.0.1:{free_port()}", "forcePathStyle": True}}
    document = backup_policy(server, storage, databases=[db], logical={"globals": False})
    runner_env(server, monkeypatch, tmp_path)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == jobenv.EXIT_NETWORK, summary.error
    assert summary.phase == "Failed" and "backups" in str(summary.error)


def test_a_killed_pg_restore_says_it_was_killed_not_an_empty_reason(sample_db: tuple[PgServer, str], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from pgbackup.runner.postgres.tools import find_tools

    server, db = sample_db
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=[db], logical={"globals": False})
    runner_env(server, monkeypatch, tmp_path)
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    real = find_tools(int(server.query("SHOW server_version_num")[0][0]) // 10000).bindir
    bindir = tmp_path / "bin"  # the real client tools, but a pg_restore the kernel kills (as the OOM killer does)
    bindir.mkdir()
    for program in real.iterdir():
        (bindir / program.name).symlink_to(program)
    (bindir / "pg_restore").unlink()
    (bindir / "pg_restore").write_text("#!/bin/sh\nkill -9 $$\n")
    (bindir / "pg_restore").chmod(0o755)
    monkeypatch.setenv("PGBACKUP_PG_BINDIR", str(bindir))
    params = ConnParams(host=server.host, port=server.port, user=server.user, password=server.password)

    with pytest.raises(RunnerError) as raised:
        restore_backup(Catalog(FilesystemStorage(tmp_path / "volume")), str(summary.backup_id), params, "killed_copy")

    message = str(raised.value)
    assert raised.value.reason == "RestoreFailed"
    assert "pg_restore of backup" in message and "was killed by signal 9 (SIGKILL)" in message
    assert "memory" in message and "(exit -9)" not in message and ": ;" not in message
    assert server.query("SELECT count(*) FROM pg_database WHERE datname = 'killed_copy'") == [(0,)]
