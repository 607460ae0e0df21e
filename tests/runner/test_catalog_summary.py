"""`pgbackup catalog-summary`: what the operator's catalog-sync Job reports, read from real storage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pgbackup.api import JobSummary, jobenv
from pgbackup.runner.cli.main import main
from tests.fixtures.postgres import PgServer, backup_policy, runner_env


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


def test_catalog_summary_names_the_newest_backup_and_every_stored_id(policy_file: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["catalog-summary", "--policy", str(policy_file)])
    empty = JobSummary.from_termination_message(capsys.readouterr().out.strip())
    assert code == jobenv.EXIT_OK and empty is not None
    assert (empty.kind, empty.phase, empty.backup_id, empty.stored_backups) == ("catalog", "Completed", None, [])

    ids = []
    for _ in range(2):
        assert main(["backup", "--policy", str(policy_file)]) == jobenv.EXIT_OK
        ids.append(json.loads(capsys.readouterr().out)["backupId"])

    assert main(["catalog-summary", "--policy", str(policy_file)]) == jobenv.EXIT_OK
    printed = capsys.readouterr().out.strip()
    summary = JobSummary.from_termination_message((tmp_path / "termination-log").read_text())
    assert summary is not None and summary == JobSummary.from_termination_message(printed)
    assert summary.kind == "catalog" and summary.phase == "Completed"
    assert summary.backup_id == ids[-1] and summary.method == "logical"
    assert summary.stored_backups == list(reversed(ids))
    assert summary.size_bytes and summary.size_bytes > 0 and summary.completed_at is not None
