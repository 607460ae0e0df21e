"""Several PostgreSQL majors side by side (Debian's 15 and the pgserver wheel's 18, as the image carries 14 to 18):
physical verification and point-in-time recovery pick the server binaries of the backup's own major from its
manifest, whatever else the search path holds, and a missing major is a configuration error (exit 3) that names
the major and what to install; the verification then records no verdict on the backup.

The absent major is simulated with PGBACKUP_PG_SEARCH_PATH (empty, or only the other major), not with mocks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbackup.api.policy import VerifySpec
from pgbackup.runner.catalog.manifest import VERIFICATION_NAME
from pgbackup.runner.cli import main as cli
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.postgres.tools import ENV_PG_SEARCH_PATH, major_of, server_tools
from pgbackup.runner.restore.pitr import PitrTarget, policy_server_env, restore_to_point
from pgbackup.runner.verify.run import run_verification_command, verify_backup
from tests.fixtures.archiving import Drill, pitr_drill
from tests.fixtures.postgres import SUPERUSER, VERSIONS, PgFactory, bindir_for, start_cluster_from

DB = "majors"


def bindir(version: str) -> Path:
    found = bindir_for(version)
    if found is None:
        pytest.skip(f"PostgreSQL {version} binaries are not installed (run scripts/install-deps.sh)")
    return found


def other(version: str) -> str:
    return next(v for v in VERSIONS if v != version)


def search_path(*versions: str) -> str:
    return ":".join(str(bindir(v)) for v in versions)


@pytest.fixture(scope="module", params=VERSIONS, ids=lambda v: f"pg{v}")
def archived(request: pytest.FixtureRequest) -> Iterator[Drill]:
    """A server of one major archiving its WAL, a physical base backup of it, and a point after it (LSN1)."""
    for needed in VERSIONS:  # the point is choosing among several majors: both must be there
        bindir(needed)
    with pitr_drill(request.param, DB) as drill:
        yield drill


@pytest.fixture
def archived_env(archived: Drill, monkeypatch: pytest.MonkeyPatch) -> Drill:
    archived.apply_env(monkeypatch)
    return archived


def test_a_physical_backup_verifies_with_its_own_major_while_the_other_is_there(archived_env: Drill,
                                                                                  scratch: Path) -> None:
    archived = archived_env
    assert major_of(archived.catalog().get(archived.backup_id).server_version) == int(archived.version)
    # the other major first on the path: the choice follows the manifest, not the order
    environ = {**os.environ, ENV_PG_SEARCH_PATH: search_path(other(archived.version), archived.version)}

    outcome = verify_backup(archived.catalog(), archived.backup_id, VerifySpec(enabled=True), identity=None,
                            scratch_dir=scratch, environ=environ, write=False)

    record = outcome.record
    assert (record.phase, record.reason) == ("Passed", "RestoreVerified"), record.message
    assert record.server_version is not None and major_of(record.server_version) == int(archived.version)


def test_pitr_replays_with_the_base_backups_major_while_the_other_is_there(archived_env: Drill,
                                                                           pg_factory: PgFactory) -> None:
    archived = archived_env
    environ = {**os.environ, ENV_PG_SEARCH_PATH: search_path(other(archived.version), archived.version)}
    datadir = pg_factory.new_datadir(f"majors-pitr-{archived.version}")

    restore_to_point(archived.catalog(), archived.archive(),
                     PitrTarget(lsn=archived.lsn1), target_dir=datadir,
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
        archived_env: Drill, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    archived = archived_env
    monkeypatch.setenv(ENV_PG_SEARCH_PATH, "" if path == "empty" else search_path(other(archived.version)))

    code, summary, outcome = run_verification_command(policy_from_document(archived.policy, "majors"),
                                                      archived.backup_id)

    assert code == 3 and outcome is None  # a configuration error, not a failed backup
    assert summary.reason == "ServerBinariesMissing"
    assert f"no PostgreSQL {archived.version} server binaries" in str(summary.error)
    assert f"install postgresql-{archived.version}" in str(summary.error)
    assert f"PGBACKUP_PG_BINDIR_{archived.version}" in str(summary.error)
    assert not (archived.volume / archived.backup_id / VERIFICATION_NAME).exists()


def test_pitr_without_the_backups_major_stops_before_restoring_anything(
        archived_env: Drill, monkeypatch: pytest.MonkeyPatch, pg_factory: PgFactory,
        capsys: pytest.CaptureFixture[str]) -> None:
    archived = archived_env
    monkeypatch.setenv(ENV_PG_SEARCH_PATH, "")
    target = pg_factory.new_datadir(f"majors-missing-{archived.version}")

    code = cli.main(["restore", "latest", "--target-lsn", archived.lsn1, "--target-dir", str(target)])

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
