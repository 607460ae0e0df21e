"""Restores that must not make things worse: every object is verified before anything changes, a damaged
object is reported as damage (not as a key problem), a killed restore leaves no half-restored database under
the target name, database-level properties survive, and the safety backup before an overwrite is whole.

Real PostgreSQL (15, and 18 where noted), real age encryption, the filesystem storage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyrage
import pytest
import yaml

from pgbackup.api import jobenv
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.cli.main import main
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.restore import ddl as restore_module
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.fixtures.postgres import PgServer, backup_policy, load_sample, runner_env


@dataclass(frozen=True)
class Taken:
    """A backup in a volume storage at `root` (claim 'backups'), with the policy document that took it."""

    root: Path
    policy: dict[str, Any]
    manifest: Manifest
    identity: str | None

    @property
    def catalog(self) -> Catalog:
        return Catalog(FilesystemStorage(self.root))

    def object_path(self, kind: str) -> Path:
        (obj,) = [o for o in self.manifest.objects if o.kind == kind]
        return self.root / self.manifest.id / obj.key


def take_backup(server: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, databases: list[str], *,
                encrypted: bool = False, **spec: Any) -> Taken:
    identity = pyrage.x25519.Identity.generate() if encrypted else None
    if identity is not None:
        spec["encryption"] = {"recipients": [str(identity.to_public())]}
    spec.setdefault("logical", {"globals": False})
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=databases, **spec)
    runner_env(server, monkeypatch, tmp_path)
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    root = tmp_path / "volume"
    manifest = Catalog(FilesystemStorage(root)).get(str(summary.backup_id))
    return Taken(root=root, policy=document, manifest=manifest, identity=str(identity) if identity else None)


def flip_bytes(path: Path, count: int = 16) -> None:
    """Damage an object in place the way a bad disk or a botched copy does: same size, other bytes."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for offset in range(middle, middle + count):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def databases_on(server: PgServer) -> set[str]:
    return {r[0] for r in server.query("SELECT datname FROM pg_database WHERE NOT datistemplate")}


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def request_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, taken: Taken, server: PgServer,
                **spec: Any) -> None:
    """The restore Job's environment for a RestoreRequest of `taken` into `server`."""
    target = {"host": server.host, "port": server.port, **spec.pop("target", {})}
    document = {"name": "rr-safety", "namespace": "shop",
                "policy": {"name": taken.policy["name"], "spec": taken.policy["spec"]},
                "spec": {"policyRef": {"name": "orders-db"}, "backup": taken.manifest.id, "target": target, **spec}}
    runner_env(server, monkeypatch, tmp_path)
    monkeypatch.setenv("PGBACKUP_VOLUME_ROOT", str(taken.root))
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps(document))
    monkeypatch.delenv(jobenv.ENV_AGE_IDENTITY_FILE, raising=False)
    if taken.identity:
        key = tmp_path / "identity.txt"
        key.write_text(taken.identity + "\n")
        monkeypatch.setenv(jobenv.ENV_AGE_IDENTITY_FILE, str(key))


def policy_file(tmp_path: Path, taken: Taken) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy",
                                    "metadata": {"name": taken.policy["name"], "namespace": "shop"},
                                    "spec": taken.policy["spec"]}))
    return path


# ---------------------------------------------------------------- item 12: volumes verified before any change


def test_damaged_volume_object_refuses_the_restore_before_database_or_claim_change(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = load_sample(pg15, "vol_damage_src")
    uploads = tmp_path / "apps" / "uploads"
    (uploads / "img").mkdir(parents=True)
    (uploads / "img" / "cat.png").write_bytes(os.urandom(2 << 20))
    (uploads / "notes.txt").write_text("backed up\n")
    monkeypatch.setenv(jobenv.ENV_APP_VOLUMES_ROOT, str(tmp_path / "apps"))
    taken = take_backup(pg15, tmp_path, monkeypatch, [db], encrypted=True,
                        volumes=[{"claimName": "uploads"}])
    flip_bytes(taken.object_path("volume"))
    live = tmp_path / "apps" / "uploads-live"  # the claim the request restores into: holds today's files
    live.mkdir()
    (live / "notes.txt").write_text("today's notes\n")
    before = tree(live)

    request_env(monkeypatch, tmp_path, taken, pg15, target={"database": "vol_damage_restored"},
                volumes=[{"claimName": "uploads", "targetClaimName": "uploads-live", "overwrite": True}])
    code, summary = run_restore_request()

    assert code == jobenv.EXIT_FAILED and summary.reason == "BackupDamaged", summary.error
    assert "volumes/uploads.tar" in str(summary.error)
    assert "vol_damage_restored" not in databases_on(pg15)
    assert tree(live) == before
    pg15.query(f'DROP DATABASE "{db}"')


def test_cli_volume_restore_of_a_damaged_object_writes_no_file(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    uploads = tmp_path / "apps" / "uploads"
    uploads.mkdir(parents=True)
    for number in range(40):  # many files: extraction would write the first ones before reaching the damage
        (uploads / f"file-{number:02}.bin").write_bytes(os.urandom(64 << 10))
    monkeypatch.setenv(jobenv.ENV_APP_VOLUMES_ROOT, str(tmp_path / "apps"))
    taken = take_backup(pg15, tmp_path, monkeypatch, ["postgres"], encrypted=True, volumes=[{"claimName": "uploads"}])
    flip_bytes(taken.object_path("volume"))
    key = tmp_path / "identity.txt"
    key.write_text(f"{taken.identity}\n")
    target = tmp_path / "restored-uploads"

    code = main(["restore", taken.manifest.id, "--policy", str(policy_file(tmp_path, taken)), "--identity-file",
                 str(key), "--volume", f"uploads={target}"])

    assert code == jobenv.EXIT_FAILED
    err = capsys.readouterr().err
    assert "volumes/uploads.tar" in err and "SHA-256 mismatch" in err and f"pgbackup check {taken.manifest.id}" in err
    assert not target.exists() or not any(target.iterdir())


# ---------------------------------------------------------------- item 13: damage is reported as damage


@pytest.fixture
def damaged_encrypted_backup(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Taken:
    db = load_sample(pg15, "damage_src")
    taken = take_backup(pg15, tmp_path, monkeypatch, [db], encrypted=True)
    pg15.query(f'DROP DATABASE "{db}"')
    flip_bytes(taken.object_path("database"))
    return taken


def assert_says_checksum_mismatch(message: str, taken: Taken) -> None:
    (obj,) = taken.manifest.object_by_kind("database")
    assert "SHA-256 mismatch" in message, message
    assert obj.key in message, message
    assert f"pgbackup check {taken.manifest.id}" in message, message
    assert "decrypt" not in message.lower(), message


def test_cli_restore_of_a_damaged_encrypted_object_says_checksum_mismatch(
        damaged_encrypted_backup: Taken, pg15: PgServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    taken = damaged_encrypted_backup
    key = tmp_path / "identity.txt"
    key.write_text(f"{taken.identity}\n")

    code = main(["restore", taken.manifest.id, "--policy", str(policy_file(tmp_path, taken)), "--identity-file",
                 str(key), "--target-database", "damage_cli", "--target-host", pg15.host,
                 "--target-port", str(pg15.port)])

    assert code == jobenv.EXIT_FAILED
    assert_says_checksum_mismatch(capsys.readouterr().err, taken)
    assert not {d for d in databases_on(pg15) if d.startswith("damage_cli")}


def test_restore_request_of_a_damaged_encrypted_object_says_checksum_mismatch(
        damaged_encrypted_backup: Taken, pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = damaged_encrypted_backup
    request_env(monkeypatch, tmp_path, taken, pg15, target={"database": "damage_rr"})

    code, summary = run_restore_request()

    assert code == jobenv.EXIT_FAILED and summary.reason == "BackupDamaged", summary.error
    assert_says_checksum_mismatch(str(summary.error), taken)
    assert not {d for d in databases_on(pg15) if d.startswith("damage_rr")}



# ---------------------------------------------------------------- item 14: a killed restore leaves no half database

SLOW_TABLE = """
CREATE FUNCTION slow_when_asked(i int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('pgbackup_test.slow', true) = 'on' THEN PERFORM pg_sleep(0.02); END IF;
  RETURN true;
END $$;
CREATE TABLE small (id int);
INSERT INTO small SELECT generate_series(1, 10);
CREATE TABLE big (id int CHECK (slow_when_asked(id)), payload text);
INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 2000) g;
"""


def comment_of(server: PgServer, name: str) -> str:
    (row,) = server.query(f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{name}'")
    return str(row[0])


@pytest.mark.parametrize("entry", ["restore-request", "cli"])
def test_killed_restore_into_a_new_database_leaves_nothing_under_the_target_name(
        entry: str, pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the runner while pg_restore loads a table (its CHECK makes each row slow while the role asks
    for it): the target name does not exist, the leftover is recognisable, and the rerun removes it."""
    pg15.query('DROP DATABASE IF EXISTS "kill_src"')
    pg15.query('CREATE DATABASE "kill_src"')
    pg15.query(SLOW_TABLE, "kill_src")
    taken = take_backup(pg15, tmp_path, monkeypatch, ["kill_src"])
    pg15.query('DROP DATABASE "kill_src"')
    final = f"killed_{entry.replace('-', '_')}"
    if entry == "restore-request":
        request_env(monkeypatch, tmp_path, taken, pg15, target={"database": final})
        command = [sys.executable, "-m", "pgbackup.runner", "restore-request"]
        rerun: Any = run_restore_request
    else:
        args = ["restore", taken.manifest.id, "--policy", str(policy_file(tmp_path, taken)), "--target-database",
                final, "--target-host", pg15.host, "--target-port", str(pg15.port)]
        command = [sys.executable, "-m", "pgbackup.runner", *args]

        def rerun() -> tuple[int, None]:
            return main(args), None

    loading = (f"SELECT 1 FROM pg_stat_activity WHERE datname LIKE '{final}%' "
               f"AND query LIKE 'COPY public.big %'")
    pg15.query(f"ALTER ROLE {pg15.user} SET pgbackup_test.slow = 'on'")
    try:
        runner = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while runner.poll() is None and not pg15.query(loading) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert runner.poll() is None, "the restore ended before it could be killed"
            assert pg15.query(loading), "pg_restore never started loading the table"
            runner.kill()
        finally:
            runner.kill()
            runner.wait()
    finally:
        pg15.query(f"ALTER ROLE {pg15.user} RESET pgbackup_test.slow")

    assert final not in databases_on(pg15)
    (left,) = [d for d in databases_on(pg15) if d.startswith(f"{final}__pgbackup_restore_")]
    assert comment_of(pg15, left).startswith("pgbackup: incomplete restore of backup " + taken.manifest.id)

    code, _ = rerun()

    assert code == jobenv.EXIT_OK
    assert [d for d in databases_on(pg15) if d.startswith(final)] == [final]
    assert pg15.query("SELECT count(*) FROM big", final) == [(2000,)]
    assert pg15.query("SELECT count(*) FROM small", final) == [(10,)]
    assert comment_of(pg15, final) == "None"  # the marker is gone with the rename
    pg15.query(f'DROP DATABASE "{final}"')


# ---------------------------------------------------------------- item 16: database-level properties survive


PROPERTY_ROLES = ("prop_owner", "prop_reader")


def make_database_with_properties(server: PgServer, name: str, icu: bool) -> None:
    for role in PROPERTY_ROLES:
        server.query(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
                     f"CREATE ROLE {role} NOLOGIN; END IF; END $$")
    server.query(f'DROP DATABASE IF EXISTS "{name}"')
    locale = ("ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LC_COLLATE 'C' LC_CTYPE 'C'" if icu
              else "ENCODING 'LATIN1' LOCALE_PROVIDER libc LC_COLLATE 'C' LC_CTYPE 'C'")
    server.query(f'CREATE DATABASE "{name}" TEMPLATE template0 OWNER prop_owner CONNECTION LIMIT 17 {locale}')
    server.query("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 5)", name)
    for statement in (
            "REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC",
            "GRANT CONNECT ON DATABASE {db} TO prop_reader",
            "GRANT TEMPORARY ON DATABASE {db} TO prop_reader WITH GRANT OPTION",
            "ALTER DATABASE {db} SET search_path = app, \"$user\", public",
            "ALTER DATABASE {db} SET work_mem = '64MB'",
            "ALTER DATABASE {db} SET app.tenant = 'shop, north'",
            "ALTER DATABASE {db} SET default_transaction_read_only = on",
            "ALTER ROLE prop_reader IN DATABASE {db} SET statement_timeout = '42s'",
            "COMMENT ON DATABASE {db} IS 'orders of the shop; it''s precious'"):
        server.query(statement.format(db=f'"{name}"'))


def database_properties(server: PgServer, name: str) -> dict[str, Any]:
    """What a user sees in \\l+ and \\drds, without the name and oid."""
    version = int(server.query("SHOW server_version_num")[0][0])
    locale = "datlocale" if version >= 170000 else "daticulocale"
    (row,) = server.query(
        f"SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, "
        f"{locale}, datconnlimit, shobj_description(oid, 'pg_database'), "
        f"(SELECT array_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || ':' || "
        f"a.privilege_type || ':' || a.is_grantable || ':' || pg_get_userbyid(a.grantor)) "
        f"FROM aclexplode(datacl) a) FROM pg_database WHERE datname = '{name}'")
    settings = server.query(
        f"SELECT coalesce(pg_get_userbyid(NULLIF(setrole, 0)), '*'), setconfig FROM pg_db_role_setting s "
        f"JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{name}' ORDER BY 1")
    return {"owner": row[0], "encoding": row[1], "collate": row[2], "ctype": row[3], "provider": row[4],
            "locale": row[5], "connection_limit": row[6], "comment": row[7], "acl": sorted(row[8]) if row[8] else row[8],
            "settings": {role: config for role, config in settings}}


@pytest.fixture(params=["15", "18"])
def any_server(request: pytest.FixtureRequest) -> PgServer:
    server: PgServer = request.getfixturevalue(f"pg{request.param}")
    return server


@pytest.mark.parametrize("locale", ["libc-latin1", "icu"])
@pytest.mark.parametrize("path", ["cli", "request-new", "request-overwrite"])
def test_restore_recreates_owner_locale_privileges_settings_and_comment(
        any_server: PgServer, path: str, locale: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    server = any_server
    icu = locale == "icu"
    try:
        make_database_with_properties(server, "props_src", icu)
    except psycopg.errors.FeatureNotSupported as exc:
        pytest.skip(f"PostgreSQL {server.version} of the fixtures: {exc}")
    expected = database_properties(server, "props_src")
    taken = take_backup(server, tmp_path, monkeypatch, ["props_src"])
    final = f"props_{path.replace('-', '_')}"
    server.query(f'DROP DATABASE IF EXISTS "{final}"')
    if path == "cli":
        code = main(["restore", taken.manifest.id, "--policy", str(policy_file(tmp_path, taken)),
                     "--target-database", final, "--target-host", server.host, "--target-port", str(server.port)])
        assert code == jobenv.EXIT_OK, capsys.readouterr().err
    else:
        if path == "request-overwrite":  # today's database of that name: other owner, locale, no privileges set
            server.query(f'CREATE DATABASE "{final}" TEMPLATE template0 ENCODING \'UTF8\' LC_COLLATE \'C\' '
                         f'LC_CTYPE \'C\'')
        request_env(monkeypatch, tmp_path, taken, server, target={
            "database": final, "overwrite": path == "request-overwrite", "dropPrevious": True,
            "preRestoreBackup": False}, databases=["props_src"])
        code, summary = run_restore_request()
        assert code == jobenv.EXIT_OK, summary.error

    assert database_properties(server, final) == expected
    assert server.query("SELECT count(*) FROM t", final) == [(5,)]
    recorded = taken.manifest.databases[0].properties  # as the manifest keeps them (jq-readable)
    assert recorded is not None and recorded.owner == "prop_owner" and recorded.connection_limit == 17
    server.query(f'DROP DATABASE "{final}"')
    server.query('DROP DATABASE "props_src"')


def test_manifests_without_recorded_properties_still_load() -> None:
    document = {"id": "20261101T020000Z", "policy": "p", "namespace": "n", "method": "logical",
                "started_at": "2026-11-01T02:00:00Z", "completed_at": "2026-11-01T02:01:00Z",
                "objects": [], "databases": [{"name": "shop", "size_bytes": 1, "row_counts": {"public.t": 1}}],
                "server_version": "15.8", "compression": "zstd"}
    manifest = Manifest.model_validate(document)
    assert manifest.databases[0].properties is None


# ---------------------------------------------------------------- item 20: the safety backup is whole


def test_safety_backup_before_an_overwrite_holds_roles_and_tablespaces_too(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pg15.query("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'safety_role') THEN "
               "CREATE ROLE safety_role NOLOGIN; END IF; END $$")
    for name in ("safety_src", "safety_app"):
        pg15.query(f'DROP DATABASE IF EXISTS "{name}"')
        pg15.query(f'CREATE DATABASE "{name}"')
        pg15.query("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 3)", name)
    taken = take_backup(pg15, tmp_path, monkeypatch, ["safety_src"], logical={})  # the policy's default: globals
    request_env(monkeypatch, tmp_path, taken, pg15, databases=["safety_src"],
                target={"database": "safety_app", "overwrite": True, "dropPrevious": True})

    code, summary = run_restore_request()

    assert code == jobenv.EXIT_OK, summary.error
    assert summary.plan is not None and summary.result is not None and summary.result.pre_restore_backup
    assert any("safety backup" in step and "roles and tablespaces" in step for step in summary.plan.steps)
    safety = taken.catalog.get(summary.result.pre_restore_backup)
    assert sorted(o.kind for o in safety.objects) == ["database", "globals"]
    with taken.catalog.open_object(safety, safety.object_by_kind("globals")[0]) as stream:
        assert "CREATE ROLE safety_role;" in stream.read().decode()
    for name in ("safety_src", "safety_app"):
        pg15.query(f'DROP DATABASE "{name}"')


def test_a_restore_in_progress_keeps_its_temporary_database(pg15: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only leftovers of dead restores are dropped: one whose restore still runs (its lock held) stays."""
    monkeypatch.setattr(restore_module, "LEFTOVER_LOCK_WAIT", "200ms")
    target = ConnParams(host=pg15.host, port=pg15.port, user=pg15.user, password=pg15.password)
    version = int(pg15.query("SHOW server_version_num")[0][0])
    running = restore_module.temp_name("busy_target", restore_module.new_short_id())
    with restore_module.RestoreSpace(target, version) as first:
        first.create(running, "busy_target", "20261101T020000Z", None)
        with restore_module.RestoreSpace(target, version) as second:
            assert second.drop_leftovers("busy_target") == []
        assert running in databases_on(pg15)
    with restore_module.RestoreSpace(target, version) as third:  # the first one's process is gone
        assert third.drop_leftovers("busy_target") == [running]
    assert running not in databases_on(pg15)


def test_a_role_missing_on_the_target_skips_its_grants_and_keeps_the_rest(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    make_database_with_properties(pg15, "props_gone_src", icu=False)
    taken = take_backup(pg15, tmp_path, monkeypatch, ["props_gone_src"])
    pg15.query('DROP DATABASE "props_gone_src"')
    pg15.query("DROP ROLE prop_reader")  # the target server never had it
    try:
        code = main(["restore", taken.manifest.id, "--policy", str(policy_file(tmp_path, taken)),
                     "--target-database", "props_gone", "--target-host", pg15.host, "--target-port", str(pg15.port)])

        assert code == jobenv.EXIT_OK, capsys.readouterr().err
        assert "restore.property_not_applied" in capsys.readouterr().err
        restored = database_properties(pg15, "props_gone")
        assert restored["owner"] == "prop_owner" and restored["comment"] == "orders of the shop; it's precious"
        assert restored["acl"] == ["prop_owner:CONNECT:false:prop_owner", "prop_owner:CREATE:false:prop_owner",
                                   "prop_owner:TEMPORARY:false:prop_owner"]  # PUBLIC still may not connect
        assert set(restored["settings"]) == {"*"}
    finally:
        pg15.query('DROP DATABASE IF EXISTS "props_gone"')
        pg15.query("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'prop_reader') THEN "
                   "CREATE ROLE prop_reader NOLOGIN; END IF; END $$")


def test_a_locale_the_target_server_lacks_falls_back_to_its_default_with_a_warning(
        pg15: PgServer, pg18: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if pg18.query("SELECT 1 FROM pg_collation WHERE collprovider = 'i' AND collname <> 'unicode' LIMIT 1"):
        pytest.skip("the PostgreSQL 18 of the fixtures has ICU: no server without the locale to restore into")
    make_database_with_properties(pg15, "icu_src", icu=True)
    taken = take_backup(pg15, tmp_path, monkeypatch, ["icu_src"])
    pg15.query('DROP DATABASE "icu_src"')
    try:
        code = main(["restore", taken.manifest.id, "--policy", str(policy_file(tmp_path, taken)),
                     "--target-database", "icu_restored", "--target-host", pg18.host, "--target-port",
                     str(pg18.port)])

        err = capsys.readouterr().err
        assert code == jobenv.EXIT_OK, err
        assert "restore.locale_not_applied" in err and "de-DE" in err
        assert pg18.query("SELECT count(*) FROM t", "icu_restored") == [(5,)]
        assert database_properties(pg18, "icu_restored")["comment"] == "orders of the shop; it's precious"
    finally:
        pg18.query('DROP DATABASE IF EXISTS "icu_restored"')
