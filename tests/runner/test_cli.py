"""The `pgbackup` command line against a real server and a volume: every command, its output, its exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pgbackup.api import jobenv
from pgbackup.runner.cli.main import main
from tests.fixtures.postgres import EXPECTED_ROWS, PgServer, backup_policy, runner_env


@pytest.fixture
def policy_file(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from tests.fixtures.postgres import load_sample

    db = load_sample(pg15)
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}}, databases=[db])
    resource = {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy",
                "metadata": {"name": document["name"], "namespace": document["namespace"]}, "spec": document["spec"]}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(resource))
    runner_env(pg15, monkeypatch, tmp_path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_backup_list_show_check_restore(policy_file: Path, pg15: PgServer, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "backup", "--policy", str(policy_file))
    assert code == jobenv.EXIT_OK
    backup_id = json.loads(out)["backupId"]
    assert json.loads((tmp_path / "termination-log").read_text())["backupId"] == backup_id

    code, out = run(capsys, "list", "--policy", str(policy_file))
    assert code == 0
    assert backup_id in out and "logical" in out and "VERIFIED" in out

    code, out = run(capsys, "list", "--json", "--policy", str(policy_file))
    assert [m["id"] for m in json.loads(out)] == [backup_id]

    code, out = run(capsys, "show", backup_id, "--policy", str(policy_file))
    assert code == 0 and json.loads(out)["databases"][0]["row_counts"] == EXPECTED_ROWS

    code, out = run(capsys, "check", backup_id, "--policy", str(policy_file))
    assert code == 0 and "match" in out

    code, out = run(capsys, "restore", backup_id, "--target-database", "cli_restored", "--json",
                    "--policy", str(policy_file))
    assert code == 0
    assert {t["table"]: t["actual"] for t in json.loads(out)["tables"]} == EXPECTED_ROWS
    assert pg15.query("SELECT count(*) FROM sales.orders", "cli_restored") == [(1000,)]

    code, _ = run(capsys, "restore", backup_id, "--target-database", "cli_restored", "--policy", str(policy_file))
    assert code == jobenv.EXIT_USAGE  # exists: refused


def test_check_reports_a_corrupted_object(policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "backup", "--policy", str(policy_file))
    assert code == 0
    backup_id = json.loads(out)["backupId"]
    dump = next((tmp_path / "volume" / backup_id / "databases").iterdir())
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))

    code, out = run(capsys, "check", backup_id, "--policy", str(policy_file))

    assert code == jobenv.EXIT_FAILED
    assert "corrupt" in out and dump.name in out


def test_check_and_restore_name_a_manifest_changed_after_the_backup(policy_file: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "backup", "--policy", str(policy_file))
    assert code == 0
    backup_id = json.loads(out)["backupId"]
    manifest_file = tmp_path / "volume" / backup_id / "manifest.json"
    document = json.loads(manifest_file.read_text())
    document["databases"][0]["row_counts"]["sales.orders"] = 999
    manifest_file.write_text(json.dumps(document, indent=2))
    said = f"manifest.json of backup {backup_id} (file://{manifest_file}) does not match its recorded SHA-256"

    code, out = run(capsys, "check", backup_id, "--policy", str(policy_file))
    assert code == jobenv.EXIT_FAILED
    assert "manifest.json: changed" in out and said in out and "the manifest was changed after the backup" in out

    code = main(["restore", backup_id, "--target-database", "never_restored", "--policy", str(policy_file)])
    err = capsys.readouterr().err
    assert code == jobenv.EXIT_FAILED
    assert said in err and "the manifest was changed after the backup" in err


def test_retention_dry_run_deletes_nothing(policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = yaml.safe_load(policy_file.read_text())
    document["spec"]["retention"] = {"keepLast": 1}
    document["spec"]["logical"] = {"globals": False}
    policy_file.write_text(yaml.safe_dump(document))
    ids, stored = [], []
    for _ in range(2):
        code, out = run(capsys, "backup", "--policy", str(policy_file))
        assert code == 0
        ids.append(json.loads(out)["backupId"])
        stored.append(json.loads((tmp_path / "termination-log").read_text()).get("storedBackups"))
    # the summary the operator reads lists what storage holds after retention: status.backups follows it
    assert stored == [[ids[0]], [ids[1]]]
    # the second backup's own retention (keepLast 1) already pruned the first; dry-run keeps the second
    code, out = run(capsys, "retention", "--dry-run", "--policy", str(policy_file))
    assert code == 0
    assert ids[1] in out and "keep" in out
    assert (tmp_path / "volume" / ids[1] / "manifest.json").exists()
    assert not (tmp_path / "volume" / ids[0]).exists()


def test_policy_from_env(pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fixtures.postgres import load_sample

    db = load_sample(pg15)
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}}, databases=[db], logical={"globals": False})
    runner_env(pg15, monkeypatch, tmp_path, policy=document)
    code, out = run(capsys, "backup")
    assert code == 0 and json.loads(out)["phase"] == "Completed"


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["restore", "20261123T020000Z"],
    ["restore", "20261123T020000Z", "--target-database", "a", "--target-dir", "/tmp/x"],
    ["list", "--no-such-flag"],
])
def test_usage_errors_exit_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == jobenv.EXIT_USAGE
    assert "usage:" in capsys.readouterr().err


def test_invalid_or_missing_policy_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(jobenv.ENV_POLICY, raising=False)
    assert main(["list"]) == jobenv.EXIT_USAGE
    assert "--policy FILE" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec:\n  schedule: '0 2 * * *'\n  database: {host: db}\n")
    assert main(["list", "--policy", str(bad)]) == jobenv.EXIT_USAGE
    assert "is invalid" in capsys.readouterr().err


def test_unknown_backup_id_exits_3(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "20200101T000000Z", "--policy", str(policy_file)]) == jobenv.EXIT_USAGE
    assert "pgbackup list" in capsys.readouterr().err


def test_restore_latest_into_an_empty_existing_database(policy_file: Path, pg15: PgServer,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(capsys, "backup", "--policy", str(policy_file))
    assert code == 0
    pg15.query('CREATE DATABASE "cli_prepared"')
    code, out = run(capsys, "restore", "latest", "--target-database", "cli_prepared", "--policy", str(policy_file))
    assert code == jobenv.EXIT_USAGE  # exists, and the flag was not given
    code, out = run(capsys, "restore", "latest", "--target-database", "cli_prepared", "--allow-empty-target",
                    "--policy", str(policy_file))
    assert code == 0, out
    assert pg15.query("SELECT count(*) FROM customers", "cli_prepared") == [(200,)]
    code, out = run(capsys, "restore", "latest", "--target-database", "cli_prepared", "--allow-empty-target",
                    "--policy", str(policy_file))
    assert code == jobenv.EXIT_USAGE  # no longer empty: refused, untouched
    assert pg15.query("SELECT count(*) FROM customers", "cli_prepared") == [(200,)]


def test_backup_with_an_invalid_policy_still_leaves_a_failed_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "termination-log"
    monkeypatch.setenv(jobenv.ENV_SUMMARY_FILE, str(summary))
    monkeypatch.setenv(jobenv.ENV_POLICY, '{"name": "p", "namespace": "n", "spec": {"schedule": "daily"}}')
    assert main(["backup"]) == jobenv.EXIT_USAGE
    written = json.loads(summary.read_text())
    assert written["phase"] == "Failed" and written["reason"] == "InvalidPolicy"


def test_check_and_show_take_latest_like_restore(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "latest", "--policy", str(policy_file)]) == jobenv.EXIT_USAGE
    assert "holds no backup" in capsys.readouterr().err
    code, out = run(capsys, "backup", "--policy", str(policy_file))
    assert code == 0
    backup_id = json.loads(out)["backupId"]
    code, out = run(capsys, "check", "latest", "--policy", str(policy_file))
    assert code == 0 and backup_id in out and "match" in out
    code, out = run(capsys, "check", "latest", "--json", "--policy", str(policy_file))
    assert code == 0 and json.loads(out)["backup_id"] == backup_id
    code, out = run(capsys, "show", "latest", "--policy", str(policy_file))
    assert code == 0 and json.loads(out)["id"] == backup_id
