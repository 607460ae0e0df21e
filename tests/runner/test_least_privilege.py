"""The database roles docs/security.md documents, created exactly as written there on a real PostgreSQL, doing
their task: a restore role (CREATEDB, restoring with noOwner/noPrivileges, replacing a database it owns), a
physical backup and WAL streaming role (REPLICATION). And what a role without the privilege gets: the restore
refuses before any change, names the missing privilege and the statement that grants it, and exits with the
usage code (a person must fix the configuration; retrying does not help)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgbackup.api import jobenv
from pgbackup.api.summary import JobSummary
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.cli import main as cli
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.facts import count_rows
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.privileges import MissingPrivilege
from pgbackup.runner.postgres.tools import find_tools
from pgbackup.runner.restore.ddl import terminate_sessions
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.slots import receiver_slot_name
from pgbackup.runner.wal.stream import WalStreamer
from tests.fixtures.postgres import EXPECTED_ROWS, SAMPLE_ROLE, PgFactory, PgServer, backup_policy, load_sample, runner_env
from tests.runner.test_docs_recipes import doc_block
from tests.runner.wal_support import Running, drop_slots, switch_wal, wait_until

RESTORER = "restore"
RESTORER_PASSWORD = "change-me"


def run_sql_block(server: PgServer, block: str) -> None:
    with server.connect() as conn:
        for statement in filter(None, (s.strip() for s in block.split(";"))):
            conn.execute(statement)  # type: ignore[arg-type]


def databases(server: PgServer) -> set[str]:
    return {str(r[0]) for r in server.query("SELECT datname FROM pg_database WHERE NOT datistemplate")}


def rows(server: PgServer, dbname: str) -> dict[str, int]:
    with server.connect(dbname) as conn:
        return count_rows(conn)


@pytest.fixture(scope="module")
def server(pg_factory: PgFactory) -> PgServer:
    """A PostgreSQL 15 server of its own (roles are created and dropped here), with the sample database owned
    by the bootstrap superuser and granted to the application's role."""
    server = pg_factory.get("15", "least-privilege")
    load_sample(server)
    return server


@pytest.fixture
def backup(server: PgServer, tmp_path: Path) -> dict[str, Any]:
    """A logical backup of the sample database (taken by the superuser), as the restore Job's policy sees it:
    with the roles but not their passwords, so a safety backup by a role that is not a superuser works too."""
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=["shop"],
                             logical={"noRolePasswords": True})
    (tmp_path / "backup-env").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        runner_env(server, patch, tmp_path / "backup-env")
        patch.setenv("PGBACKUP_VOLUME_ROOT", str(tmp_path / "volume"))
        (tmp_path / "volume").mkdir(exist_ok=True)
        code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    return {"policy": document, "backup_id": str(summary.backup_id), "root": tmp_path / "volume"}


@pytest.fixture
def restorer(server: PgServer) -> Iterator[str]:
    """The restore role exactly as docs/security.md creates it."""
    server.query(f"DROP ROLE IF EXISTS {RESTORER}")
    run_sql_block(server, doc_block("security.md", "sql", "CREATEDB"))
    try:
        yield RESTORER
    finally:
        for name in databases(server):
            owner = server.query(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'")
            if owner == [(RESTORER,)]:
                server.query(f'DROP DATABASE "{name}" WITH (FORCE)')
        server.query(f"DROP OWNED BY {RESTORER} CASCADE")
        server.query(f"DROP ROLE IF EXISTS {RESTORER}")


def restore_as(role: str, password: str, server: PgServer, backup: dict[str, Any], tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch, **spec: Any) -> tuple[int, JobSummary]:
    """`pgbackup restore-request` as the restore Job runs it, logged in as `role`."""
    target = {"host": server.host, "port": server.port, **spec.pop("target", {})}
    document = {"name": "rr-least", "namespace": "shop",
                "spec": {"policyRef": {"name": "orders-db"}, "backup": backup["backup_id"], "target": target, **spec},
                "policy": {"name": backup["policy"]["name"], "spec": backup["policy"]["spec"]}}
    tmp_path.mkdir(parents=True, exist_ok=True)
    runner_env(server, monkeypatch, tmp_path)
    monkeypatch.setenv("PGUSER", role)
    monkeypatch.setenv("PGPASSWORD", password)
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(backup["root"]))
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps(document))
    return run_restore_request()


# ---------------------------------------------------------------- a role that may not create databases


def test_restore_without_createdb_names_the_privilege_and_changes_nothing(
        server: PgServer, backup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.query("DROP ROLE IF EXISTS plain_login")
    server.query("CREATE ROLE plain_login LOGIN PASSWORD 'pw'")
    before = databases(server)
    try:
        code, summary = restore_as("plain_login", "pw", server, backup, tmp_path, monkeypatch,
                                   target={"database": "never_made"})
        assert code == jobenv.EXIT_USAGE, summary.error
        assert summary.reason == "MissingPrivilege"
        assert "CREATEDB" in str(summary.error) and "ALTER ROLE plain_login CREATEDB" in str(summary.error)
        assert summary.result is None  # refused while planning: nothing was done
        assert databases(server) == before

        # `pgbackup restore` by hand: the same message and exit code, not "unexpected internal error"
        policy = tmp_path / "policy.json"
        policy.write_text(json.dumps(backup["policy"]))
        code = cli.main(["restore", backup["backup_id"], "--target-database", "never_made", "--policy", str(policy)])
        assert code == jobenv.EXIT_USAGE
        assert databases(server) == before
    finally:
        server.query("DROP ROLE IF EXISTS plain_login")


# ---------------------------------------------------------------- the documented restore role


def test_restore_as_a_non_superuser_keeping_owners_says_to_set_no_owner(
        server: PgServer, backup: dict[str, Any], restorer: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The objects belong to the superuser that took the backup: a role that is not a member of it cannot give
    them back their owner. The restore says so (and what to set), and leaves nothing behind."""
    before = databases(server)
    code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path, monkeypatch,
                               target={"database": "with_owners"})
    assert code == jobenv.EXIT_USAGE, summary.error
    assert summary.reason == "MissingPrivilege"
    assert "noOwner: true" in str(summary.error) and server.user in str(summary.error)
    assert databases(server) == before

    # the same with the runner's own restore command: --no-owner is what to pass
    with pytest.raises(Exception, match="--no-owner") as raised:
        restore_backup(Catalog(FilesystemStorage(backup["root"])), backup["backup_id"],
                       ConnParams(host=server.host, port=server.port, user=restorer, password=RESTORER_PASSWORD),
                       "with_owners")
    assert getattr(raised.value, "exit_code", None) == jobenv.EXIT_USAGE
    assert databases(server) == before


def test_documented_restore_role_restores_and_replaces_with_no_owner_and_no_privileges(
        server: PgServer, backup: dict[str, Any], restorer: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/security.md's restore role: into a new database, then replacing that database (safety backup,
    rename aside, swap), everything owned by the restoring role, no GRANTs replayed."""
    code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path / "first", monkeypatch,
                               target={"database": "shop_least"}, noOwner=True, noPrivileges=True)
    assert code == jobenv.EXIT_OK, summary.error
    assert rows(server, "shop_least") == EXPECTED_ROWS
    assert server.query("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop_least'") == [(restorer,)]
    owners = server.query("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'sales')",
                          "shop_least")
    assert owners == [(restorer,)]
    granted = server.query(f"SELECT count(*) FROM information_schema.role_table_grants "
                           f"WHERE grantee = '{SAMPLE_ROLE}'", "shop_least")
    assert granted == [(0,)]  # noPrivileges: the backup's GRANTs to the application role are not replayed

    code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path / "second", monkeypatch,
                               target={"database": "shop_least", "overwrite": True, "dropPrevious": True},
                               noOwner=True, noPrivileges=True)
    assert code == jobenv.EXIT_OK, summary.error
    assert summary.result is not None and summary.result.pre_restore_backup
    safety = Catalog(FilesystemStorage(backup["root"])).get(summary.result.pre_restore_backup)
    assert safety.purpose == "pre-restore" and safety.object_by_kind("globals")  # roles too, without passwords
    assert rows(server, "shop_least") == EXPECTED_ROWS
    assert not {name for name in databases(server) if name.startswith("shop_least__pgbackup")}


def test_replacing_a_database_the_role_does_not_own_is_refused_before_the_safety_backup(
        server: PgServer, backup: dict[str, Any], restorer: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server.query("DROP DATABASE IF EXISTS theirs")
    server.query("CREATE DATABASE theirs")
    server.query("CREATE TABLE marker AS SELECT generate_series(1, 7) AS id", "theirs")
    catalog = Catalog(FilesystemStorage(backup["root"]))
    backups_before = [m.id for m in catalog.backups()]
    try:
        code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path, monkeypatch,
                                   target={"database": "theirs", "overwrite": True}, noOwner=True, noPrivileges=True)
        assert code == jobenv.EXIT_USAGE, summary.error
        assert summary.reason == "MissingPrivilege" and summary.result is None
        assert f"ALTER DATABASE theirs OWNER TO {restorer}" in str(summary.error)
        assert [m.id for m in catalog.backups()] == backups_before  # no safety backup was taken
        assert rows(server, "theirs") == {"public.marker": 7}
    finally:
        server.query("DROP DATABASE IF EXISTS theirs")


def test_runner_restore_command_with_no_owner_and_no_privileges(
        server: PgServer, backup: dict[str, Any], restorer: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`pgbackup restore --no-owner --no-privileges` as the restore role: the whole database, and a selection."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(backup["policy"]))
    runner_env(server, monkeypatch, tmp_path)
    monkeypatch.setenv("PGUSER", restorer)
    monkeypatch.setenv("PGPASSWORD", RESTORER_PASSWORD)
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(backup["root"]))
    selection = ["--target-database", "orders_only", "--table", "sales.orders", "--policy", str(policy)]
    assert cli.main(["restore", backup["backup_id"], *selection]) == jobenv.EXIT_USAGE  # owners kept: refused
    assert "orders_only" not in databases(server)
    common = ["--policy", str(policy), "--no-owner", "--no-privileges"]
    assert cli.main(["restore", backup["backup_id"], "--target-database", "shop_cli", *common]) == jobenv.EXIT_OK
    assert rows(server, "shop_cli") == EXPECTED_ROWS
    assert cli.main(["restore", backup["backup_id"], "--target-database", "orders_only", "--table", "sales.orders",
                     *common]) == jobenv.EXIT_OK
    assert rows(server, "orders_only") == {"sales.orders": EXPECTED_ROWS["sales.orders"]}
    for name in ("shop_cli", "orders_only"):
        assert server.query(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'") == \
            [(restorer,)]
        assert server.query("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'sales'", name) == \
            [(restorer,)]


def test_no_owner_alone_keeps_the_grants_to_roles_the_target_has(
        server: PgServer, backup: dict[str, Any], restorer: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path, monkeypatch,
                               target={"database": "shop_granted"}, noOwner=True)
    assert code == jobenv.EXIT_OK, summary.error
    assert rows(server, "shop_granted") == EXPECTED_ROWS
    granted = server.query(f"SELECT count(*) FROM information_schema.role_table_grants "
                           f"WHERE grantee = '{SAMPLE_ROLE}' AND privilege_type = 'SELECT'", "shop_granted")
    assert granted == [(len(EXPECTED_ROWS),)]  # the backup's GRANT SELECT ... TO shop_reader, now by the restorer


def test_a_grantee_role_the_target_lacks_is_named_with_the_ways_out(
        server: PgServer, backup: dict[str, Any], restorer: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server.query(f"DROP OWNED BY {SAMPLE_ROLE}", "shop")  # the backup, taken before, still grants to it
    server.query(f"DROP ROLE {SAMPLE_ROLE}")
    try:
        code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path, monkeypatch,
                                   target={"database": "shop_no_reader"}, noOwner=True)
        assert code == jobenv.EXIT_FAILED, summary.error
        assert f"role {SAMPLE_ROLE!r}, which the target server does not have" in str(summary.error)
        assert "spec.noPrivileges: true" in str(summary.error)
        assert "shop_no_reader" not in databases(server)
    finally:
        server.query(f"CREATE ROLE {SAMPLE_ROLE} NOLOGIN")
        server.query(f"GRANT USAGE ON SCHEMA sales TO {SAMPLE_ROLE}", "shop")
        server.query(f"GRANT SELECT ON ALL TABLES IN SCHEMA public, sales TO {SAMPLE_ROLE}", "shop")


# ---------------------------------------------------------------- the documented physical backup / WAL role


def test_documented_replication_role_takes_a_physical_backup_and_streams_wal(
        server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/security.md: a role with only REPLICATION (no superuser, no read grant) takes a physical backup and
    streams WAL through its replication slots."""
    server.query("DROP ROLE IF EXISTS backup")
    run_sql_block(server, doc_block("security.md", "sql", "LOGIN PASSWORD 'change-me' REPLICATION"))
    server.query("CREATE TABLE IF NOT EXISTS filler (id serial PRIMARY KEY, pad text)")
    slot = "pgbackup_least_privilege"
    try:
        document = backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical")
        runner_env(server, monkeypatch, tmp_path)
        monkeypatch.setenv("PGUSER", "backup")
        monkeypatch.setenv("PGPASSWORD", "change-me")
        code, summary = backup_command(policy_from_document(document, "test"))
        assert code == 0, summary.error
        assert summary.phase == "Completed" and summary.method == "physical"
        physical = {"policy": document, "backup_id": str(summary.backup_id), "root": tmp_path / "volume"}
        code, refused = restore_as(server.user, server.password, server, physical, tmp_path, monkeypatch,
                                   noOwner=True)
        assert code == jobenv.EXIT_USAGE and refused.reason == "UnsupportedRestore"
        assert "noOwner and noPrivileges do not apply there" in str(refused.error)
        assert "--target-dir" in str(refused.error)
        monkeypatch.setenv("PGUSER", "backup")
        monkeypatch.setenv("PGPASSWORD", "change-me")

        (tmp_path / "wal").mkdir()
        archive = WalArchive(FilesystemStorage(tmp_path / "wal"))
        login = ConnParams(host=server.host, port=server.port, user="backup", password="change-me",
                           sslmode="disable")
        running = Running(WalStreamer(login, find_tools(15), archive, slot=slot, directory=tmp_path / "receive",
                                      partial_interval=0.5, progress_interval=1.0, poll_interval=0.1,
                                      status_interval=1))
        try:
            wait_until(lambda: bool(server.query(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = "
                                                 f"'{receiver_slot_name(slot)}' AND active")),
                       "pg_receivewal streaming through its slot")
            segment = switch_wal(server)
            wait_until(lambda: segment in [s.name for s in archive.segments() if not s.partial],
                       f"segment {segment} in the archive")
        finally:
            running.stop()
    finally:
        drop_slots(server, slot)
        server.query("DROP ROLE IF EXISTS backup")


def test_ending_other_roles_sessions_needs_pg_signal_backend_and_is_checked_before_any_change(
        server: PgServer, backup: dict[str, Any], restorer: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path / "first", monkeypatch,
                               target={"database": "shop_busy"}, noOwner=True)
    assert code == jobenv.EXIT_OK, summary.error
    server.query("DROP ROLE IF EXISTS app_user")
    server.query("CREATE ROLE app_user LOGIN PASSWORD 'app'")
    catalog = Catalog(FilesystemStorage(backup["root"]))
    backups_before = [m.id for m in catalog.backups()]
    app = ConnParams(host=server.host, port=server.port, user="app_user", password="app").connect("shop_busy")
    try:
        overwrite = {"database": "shop_busy", "overwrite": True, "terminateConnections": True, "dropPrevious": True}
        code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path / "refused", monkeypatch,
                                   target=overwrite, noOwner=True)
        assert code == jobenv.EXIT_USAGE, summary.error
        assert summary.reason == "MissingPrivilege" and summary.result is None
        assert f"GRANT pg_signal_backend TO {restorer}" in str(summary.error)
        assert [m.id for m in catalog.backups()] == backups_before  # refused before the safety backup
        assert app.execute("SELECT 1").fetchone() == (1,)

        server.query(f"GRANT pg_signal_backend TO {restorer}")  # as docs/security.md says
        code, summary = restore_as(restorer, RESTORER_PASSWORD, server, backup, tmp_path / "granted", monkeypatch,
                                   target=overwrite, noOwner=True)
        assert code == jobenv.EXIT_OK, summary.error
        assert rows(server, "shop_busy") == EXPECTED_ROWS
    finally:
        app.close()
        server.query("DROP ROLE IF EXISTS app_user")


def test_sessions_that_appear_after_planning_are_a_missing_privilege_too(server: PgServer, restorer: str) -> None:
    """Planning checked the sessions; one that connects later meets the same clear error when it is ended."""
    login = ConnParams(host=server.host, port=server.port, user=restorer, password=RESTORER_PASSWORD)
    server.query("DROP DATABASE IF EXISTS shop_late")
    server.query("CREATE DATABASE shop_late")
    late = server.connect("shop_late")
    try:
        with login.connect("postgres") as conn, pytest.raises(MissingPrivilege, match="GRANT pg_signal_backend"):
            terminate_sessions(conn, "shop_late")
        assert late.execute("SELECT 1").fetchone() == (1,)
    finally:
        late.close()
        server.query("DROP DATABASE IF EXISTS shop_late")


def test_no_owner_with_a_data_directory_restore_is_a_usage_error(
        server: PgServer, backup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(backup["policy"]))
    runner_env(server, monkeypatch, tmp_path)
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(backup["root"]))
    code = cli.main(["restore", backup["backup_id"], "--target-dir", str(tmp_path / "data"), "--no-owner",
                     "--policy", str(policy)])
    assert code == jobenv.EXIT_USAGE
    assert "copies the data directory with its owners, privileges and roles" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
