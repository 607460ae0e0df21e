"""Several PostgreSQL majors side by side (Debian's 15 and the pgserver wheel's 18, as the image carries 14 to 18):
physical verification and point-in-time recovery pick the server binaries of the backup's own major from its
manifest, whatever else the search path holds, and a missing major is a configuration error (exit 3) that names
the major and what to install; the verification then records no verdict on the backup.

The absent major is simulated with PGBACKUP_PG_SEARCH_PATH (empty, or only the other major), not with mocks."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgbackup.api.policy import VerifySpec
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import VERIFICATION_NAME
from pgbackup.runner.cli import main as cli
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.postgres.account import server_account
from pgbackup.runner.postgres.instance import ThrowawayPostgres
from pgbackup.runner.postgres.tools import (
    ENV_PG_SEARCH_PATH,
    major_of,
    server_installations,
    server_tools,
)
from pgbackup.runner.restore.pitr import PitrTarget, policy_server_env, restore_to_point, runner_program
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.verify.run import run_verification_command, verify_backup
from pgbackup.runner.wal.archive import WalArchive
from tests.fixtures.postgres import (
    SETTINGS,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    VERSIONS,
    PgFactory,
    PgServer,
    backup_policy,
    bindir_for,
    start_cluster_from,
)
from tests.runner.wal_support import wait_until

DB = "majors"
PGBACKUP, PGBACKUP_ENV = runner_program(server_account())
CLEARED = ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGBACKUP_PG_BINDIR", ENV_PG_SEARCH_PATH)


def bindir(version: str) -> Path:
    found = bindir_for(version)
    if found is None:
        pytest.skip(f"PostgreSQL {version} binaries are not installed (run scripts/install-deps.sh)")
    return found


def other(version: str) -> str:
    return next(v for v in VERSIONS if v != version)


@dataclass
class Archived:
    """A server of one major archiving its WAL, a physical base backup of it, and a point after it."""

    server: PgServer
    policy: dict
    volume: Path
    backup_id: str
    lsn: str
    env: dict[str, str]

    @property
    def version(self) -> str:
        return self.server.version

    def catalog(self) -> Catalog:
        return Catalog(FilesystemStorage(self.volume))

    def search_path(self, *versions: str) -> str:
        return ":".join(str(bindir(v)) for v in versions)


def archived_up_to(server: PgServer, segment: str) -> bool:
    (last,) = server.query("SELECT last_archived_wal FROM pg_stat_archiver")[0]
    return last is not None and last >= segment


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"pg{v}")
def archived(request: pytest.FixtureRequest) -> Iterator[Archived]:
    version = request.param
    for needed in VERSIONS:  # the point is choosing among several majors: both must be there
        bindir(needed)
    tools = next(t for t in server_installations({}) if t.bindir == bindir(version))
    root = Path(tempfile.mkdtemp(prefix=f"pgbackup-test-majors-{version}-"))
    os.chmod(root, 0o755)
    volume, scratch = root / "volume", root / "scratch"
    for directory in (volume, scratch):
        directory.mkdir()
        os.chmod(directory, 0o777)  # the server account archives into the volume
    archive_command = shlex.join([*PGBACKUP, "wal-push", "%p"])
    instance = ThrowawayPostgres.create(tools=tools, scratch=root, superuser=SUPERUSER, replication=True,
                                        password=SUPERUSER_PASSWORD,
                                        settings={**SETTINGS, "archive_mode": "on",
                                                  "archive_command": "'" + archive_command + "'"})
    instance.stop_modes = ("immediate",)
    server = PgServer(version, instance)
    policy = backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical")
    env = {"PGUSER": server.user, "PGPASSWORD": server.password, "PGBACKUP_VOLUME_ROOT": str(volume),
           "PGBACKUP_SCRATCH": str(scratch), "PGBACKUP_SUMMARY_FILE": str(root / "summary"),
           "PGBACKUP_POLICY": json.dumps(policy)}
    instance.server_env = {"PGBACKUP_POLICY": json.dumps(policy), "PGBACKUP_VOLUME_ROOT": str(volume),
                           **PGBACKUP_ENV}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in CLEARED:
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, value)
            server.start()
            server.query(f"CREATE DATABASE {DB}")
            with server.connect(DB) as conn:
                conn.execute("CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL)")
                conn.execute("INSERT INTO t (batch) SELECT 0 FROM generate_series(1, 10)")
            code, summary = backup_command(policy_from_document(policy, "majors"))
            assert code == 0, summary.error
            with server.connect(DB) as conn:
                conn.execute("INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 5)")
                (lsn,) = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()  # type: ignore[misc]
                conn.execute("INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 7)")
            (segment,) = server.query("SELECT pg_walfile_name(pg_switch_wal())")[0]
            wait_until(lambda: archived_up_to(server, segment), f"{segment} archived by wal-push")
            yield Archived(server, policy, volume, str(summary.backup_id), lsn, env)
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def archived_env(archived: Archived, monkeypatch: pytest.MonkeyPatch) -> Archived:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in archived.env.items():
        monkeypatch.setenv(name, value)
    return archived


def test_a_physical_backup_verifies_with_its_own_major_while_the_other_is_there(archived_env: Archived,
                                                                                  scratch: Path) -> None:
    archived = archived_env
    assert major_of(archived.catalog().get(archived.backup_id).server_version) == int(archived.version)
    # the other major first on the path: the choice follows the manifest, not the order
    environ = {**os.environ, ENV_PG_SEARCH_PATH: archived.search_path(other(archived.version), archived.version)}

    outcome = verify_backup(archived.catalog(), archived.backup_id, VerifySpec(enabled=True), identity=None,
                            scratch_dir=scratch, environ=environ, write=False)

    record = outcome.record
    assert (record.phase, record.reason) == ("Passed", "RestoreVerified"), record.message
    assert record.server_version is not None and major_of(record.server_version) == int(archived.version)


def test_pitr_replays_with_the_base_backups_major_while_the_other_is_there(archived_env: Archived,
                                                                           pg_factory: PgFactory) -> None:
    archived = archived_env
    environ = {**os.environ, ENV_PG_SEARCH_PATH: archived.search_path(other(archived.version), archived.version)}
    datadir = pg_factory.new_datadir(f"majors-pitr-{archived.version}")

    restore_to_point(archived.catalog(), WalArchive(FilesystemStorage(archived.volume)),
                     PitrTarget(lsn=archived.lsn), target_dir=datadir,
                     server_env=policy_server_env(json.dumps(archived.policy), os.environ),
                     login_roles=[SUPERUSER], environ=environ)

    assert major_of((datadir / "PG_VERSION").read_text()) == int(archived.version)
    recovered = pg_factory.adopt(start_cluster_from(archived.server, datadir))
    try:
        batches = dict(recovered.query("SELECT batch, count(*) FROM t GROUP BY batch", DB))
        assert batches == {0: 10, 1: 5}
    finally:
        recovered.stop()


@pytest.mark.parametrize("path", ["empty", "other major only"])
def test_verifying_without_the_backups_major_is_a_configuration_error_with_no_verdict(
        archived_env: Archived, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    archived = archived_env
    monkeypatch.setenv(ENV_PG_SEARCH_PATH, "" if path == "empty" else archived.search_path(other(archived.version)))

    code, summary, outcome = run_verification_command(policy_from_document(archived.policy, "majors"),
                                                      archived.backup_id)

    assert code == 3 and outcome is None  # a configuration error, not a failed backup
    assert summary.reason == "ServerBinariesMissing"
    assert f"no PostgreSQL {archived.version} server binaries" in str(summary.error)
    assert f"install postgresql-{archived.version}" in str(summary.error)
    assert f"PGBACKUP_PG_BINDIR_{archived.version}" in str(summary.error)
    assert not (archived.volume / archived.backup_id / VERIFICATION_NAME).exists()


def test_pitr_without_the_backups_major_stops_before_restoring_anything(
        archived_env: Archived, monkeypatch: pytest.MonkeyPatch, pg_factory: PgFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    archived = archived_env
    monkeypatch.setenv(ENV_PG_SEARCH_PATH, "")
    target = pg_factory.new_datadir(f"majors-missing-{archived.version}")

    code = cli.main(["restore", "latest", "--target-lsn", archived.lsn, "--target-dir", str(target)])

    err = capsys.readouterr().err
    assert code == 3, err[-2000:]
    assert f"no PostgreSQL {archived.version} server binaries" in err and f"postgresql-{archived.version}" in err
    assert not target.exists() or not any(target.iterdir())
    assert "restore.physical.start" not in err  # found out before downloading the base backup


def test_a_per_major_bin_directory_setting_wins_and_is_checked() -> None:
    fifteen, eighteen = bindir("15"), bindir("18")
    assert server_tools(15, environ={ENV_PG_SEARCH_PATH: "", "PGBACKUP_PG_BINDIR_15": str(fifteen)}).bindir == fifteen
    assert server_tools(18, environ={ENV_PG_SEARCH_PATH: str(fifteen.parent.parent)
                                     + ":" + str(eighteen)}).major == 18  # a root of <major>/bin, and a bin dir
    with pytest.raises(UsageError, match="PGBACKUP_PG_BINDIR_15=.* holds PostgreSQL 18") as raised:
        server_tools(15, environ={"PGBACKUP_PG_BINDIR_15": str(eighteen)})
    assert raised.value.exit_code == 3
    with pytest.raises(UsageError, match="no PostgreSQL 16 server binaries") as missing:
        server_tools(16, environ={ENV_PG_SEARCH_PATH: f"{fifteen}:{eighteen}"})
    assert missing.value.reason == "ServerBinariesMissing"
