"""Verification under a UID that has no passwd entry (OpenShift's restricted SCC, a runAsUser override): a real
`pgbackup verify` subprocess runs as that UID against real backups of PostgreSQL 15 and 18. initdb refuses to
run without a passwd entry ("could not look up effective user ID"); the runner gives its server programs one."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.common.config import policy_from_document
from tests.fixtures.postgres import PgServer, backup_policy, runner_env
from tests.runner import uid_support
from tests.runner.uid_support import RUNNER, as_uid, chown_tree, owned_by, unused_uid, uid_workspace


@dataclass
class Stored:
    server: PgServer
    volume: Path
    document: dict
    ids: dict[str, str]


@pytest.fixture(scope="module")
def stored(sample_db: tuple[PgServer, str], tmp_path_factory: pytest.TempPathFactory) -> Stored:
    """One logical and one physical backup of the sample database, per PostgreSQL version."""
    server, db = sample_db
    root = tmp_path_factory.mktemp(f"any-uid-pg{server.version}")
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, databases=[db])
    ids = {}
    with pytest.MonkeyPatch.context() as patch:
        runner_env(server, patch, root)
        for method in ("physical", "logical"):
            code, summary = backup_command(policy_from_document(
                {**document, "spec": {**document["spec"], "method": method}}, "test"))
            assert code == 0, summary.error
            ids[method] = str(summary.backup_id)
    return Stored(server, root / "volume", document, ids)


@pytest.mark.parametrize("method", ["logical", "physical"])
def test_verification_runs_under_a_uid_without_a_passwd_entry(stored: Stored, method: str) -> None:
    uid = unused_uid()
    prefix = as_uid(uid)
    with uid_workspace(uid) as home:
        volume, scratch, summary_file = home / "volume", home / "scratch", home / "termination-log"
        shutil.copytree(stored.volume, volume)
        scratch.mkdir()
        chown_tree(home, uid)
        env = uid_support.runner_env(
            HOME=str(scratch), TMPDIR=str(scratch), PGBACKUP_SCRATCH=str(scratch), PGBACKUP_VOLUME_ROOT=str(volume),
            PGBACKUP_SUMMARY_FILE=str(summary_file), PGBACKUP_POLICY=json.dumps(stored.document),
            PGUSER=stored.server.user)
        before_tmp = set(owned_by(uid, Path(tempfile.gettempdir())))

        done = subprocess.run([*prefix, *RUNNER, "verify", stored.ids[method]], env=env, cwd="/",
                              capture_output=True, text=True, timeout=900)

        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        assert done.returncode == 0, f"{summary.get('error')}\n{done.stderr[-3000:]}"
        assert (summary["phase"], summary["reason"]) == ("Completed", "RestoreVerified"), summary
        assert list(scratch.iterdir()) == []  # the server, its passwd file and its socket are gone
        assert set(owned_by(uid, Path(tempfile.gettempdir()))) == before_tmp  # nothing written outside scratch
