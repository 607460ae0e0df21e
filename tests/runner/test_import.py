"""`pgbackup import`: dumps made the way the replaced scripts made them (`pg_dump DB | gzip > x.sql.gz` and
`sha256sum`, or `pg_dump -Fc`) registered in the catalog and restored through `pgbackup restore` and a
RestoreRequest, against a real PostgreSQL 15 and a volume."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from pgbackup.api import jobenv
from pgbackup.runner.cli.main import main
from pgbackup.runner.postgres.facts import count_rows
from pgbackup.runner.restore.run import run_restore_request
from tests.fixtures.postgres import PgServer, backup_policy, load_sample, runner_env

SOURCE_DB = "legacy_shop"


def old_script(server: PgServer, directory: Path, command: str) -> None:
    """Run a shell line as the old cron scripts did (pg_dump from the server's own bin directory)."""
    env = {**server.env(SOURCE_DB), "PATH": f"{server.bindir}:/usr/bin:/bin"}
    subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=directory, env=env, check=True)


@pytest.fixture(scope="module")
def legacy(pg15: PgServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """shop_2026-01-31.sql.gz / .dump with their .sha256 files, as the old scripts left them."""
    load_sample(pg15, SOURCE_DB)
    directory = tmp_path_factory.mktemp("old-backups")
    old_script(pg15, directory, f"pg_dump {SOURCE_DB} | gzip > shop_2026-01-31.sql.gz && "
                                "sha256sum shop_2026-01-31.sql.gz > shop_2026-01-31.sql.gz.sha256")
    old_script(pg15, directory, f"pg_dump -Fc {SOURCE_DB} > shop_2026-02-01.dump && "
                                "sha256sum shop_2026-02-01.dump > shop_2026-02-01.dump.sha256")
    with pg15.connect(SOURCE_DB) as conn:
        return directory, count_rows(conn)


@pytest.fixture
def policy_file(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    document = backup_policy(pg15, {"volume": {"claimName": "backups", "path": "imported"}}, databases=[SOURCE_DB])
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    runner_env(pg15, monkeypatch, tmp_path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def stored_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "volume" / "imported"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_imported_sql_gz_lists_and_restores_with_identical_row_counts(
        legacy: tuple[Path, dict[str, int]], policy_file: Path, pg15: PgServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    directory, source_rows = legacy
    code, out, err = run(capsys, "import", str(directory / "shop_2026-01-31.sql.gz"), "--database", "shop",
                         "--taken-at", "2026-01-31T02:00:00Z", "--policy", str(policy_file))
    assert code == 0, err
    assert "as backup 20260131T020000Z" in out and "format plain" in out

    code, out, _ = run(capsys, "list", "--json", "--policy", str(policy_file))
    [manifest] = json.loads(out)
    assert manifest["id"] == "20260131T020000Z" and manifest["imported"] is True
    assert manifest["databases"][0]["dump_format"] == "plain" and manifest["databases"][0]["row_counts"] == {}
    assert "shop_2026-01-31.sql.gz sha256:" in manifest["source"]
    # stored with the policy's compression (zstd), not as the original gzip
    assert manifest["objects"][0]["key"] == "databases/shop.sql.zst"

    code, out, err = run(capsys, "restore", "20260131T020000Z", "--target-database", "imported_sql",
                         "--policy", str(policy_file))
    assert code == 0, err + out
    with pg15.connect("imported_sql") as conn:
        assert count_rows(conn) == source_rows


def test_wrong_checksum_is_refused_and_nothing_is_stored(
        legacy: tuple[Path, dict[str, int]], policy_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = legacy
    bad = tmp_path / "bad.sha256"
    bad.write_text("0" * 64 + "  shop_2026-01-31.sql.gz\n")
    code, out, err = run(capsys, "import", str(directory / "shop_2026-01-31.sql.gz"), "--sha256-file", str(bad),
                         "--policy", str(policy_file))
    assert code == jobenv.EXIT_FAILED
    assert "does not match its checksum file" in err and "nothing was imported" in err
    assert stored_files(tmp_path) == []
    code, out, _ = run(capsys, "list", "--json", "--policy", str(policy_file))
    assert json.loads(out) == []


def test_missing_checksum_file_is_refused(legacy: tuple[Path, dict[str, int]], policy_file: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = legacy
    lonely = tmp_path / "lonely.sql.gz"
    lonely.write_bytes((directory / "shop_2026-01-31.sql.gz").read_bytes())
    code, _, err = run(capsys, "import", str(lonely), "--policy", str(policy_file))
    assert code == jobenv.EXIT_USAGE and "--sha256-file" in err
    assert stored_files(tmp_path) == []


def test_imported_custom_dump_restores_through_a_restore_request(
        legacy: tuple[Path, dict[str, int]], policy_file: Path, pg15: PgServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    directory, source_rows = legacy
    dump = directory / "shop_2026-02-01.dump"
    code, out, err = run(capsys, "import", str(dump), "--policy", str(policy_file))  # default: FILE.sha256, mtime
    assert code == 0, err
    assert "database 'legacy_shop'" in out and "format custom" in out  # the name from the dump's own header

    backup_id = out.split(" as backup ", 1)[1].split(":", 1)[0]  # by id: an import never becomes `latest`
    policy = yaml.safe_load(policy_file.read_text())
    request = {"name": "from-import", "namespace": "shop",
               "spec": {"policyRef": {"name": policy["name"]}, "backup": backup_id,
                        "target": {"host": pg15.host, "port": pg15.port, "database": "imported_rr"}},
               "policy": {"name": policy["name"], "spec": policy["spec"]}}
    monkeypatch.setenv(jobenv.ENV_RESTORE, json.dumps(request))
    code, summary = run_restore_request()
    assert code == 0, summary.error
    assert summary.result is not None and not [c for c in summary.result.checks if not c.passed]
    with pg15.connect("imported_rr") as conn:
        assert count_rows(conn) == source_rows


def test_an_imported_sql_gz_passes_restore_verification(
        legacy: tuple[Path, dict[str, int]], policy_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The scheduled verification restores imported dumps too (no row counts to compare: the restore must work)."""
    from pgbackup.api.policy import VerifySpec
    from pgbackup.runner.catalog.catalog import Catalog
    from pgbackup.runner.storage.fs import FilesystemStorage
    from pgbackup.runner.verify.run import verify_backup

    directory, _ = legacy
    code, _, err = run(capsys, "import", str(directory / "shop_2026-01-31.sql.gz"), "--taken-at",
                       "2026-01-31T02:00:00Z", "--policy", str(policy_file))
    assert code == 0, err
    catalog = Catalog(FilesystemStorage(tmp_path / "volume" / "imported"))
    outcome = verify_backup(catalog, "20260131T020000Z", VerifySpec(), identity=None, scratch_dir=tmp_path)
    assert outcome.record.reason == "RestoreVerified", outcome.record.message
    assert catalog.get("20260131T020000Z").verified


def test_a_plain_dump_made_with_create_is_refused(
        legacy: tuple[Path, dict[str, int]], pg15: PgServer, policy_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`pg_dump -C` scripts \\connect to their own database: replayed, they would write there, not into the target."""
    old_script(pg15, tmp_path, f"pg_dump -C {SOURCE_DB} | gzip > created.sql.gz && "
                               "sha256sum created.sql.gz > created.sql.gz.sha256")
    code, _, err = run(capsys, "import", str(tmp_path / "created.sql.gz"), "--policy", str(policy_file))
    assert code == jobenv.EXIT_USAGE and "pg_dump --create" in err
    assert stored_files(tmp_path) == []
