"""`pgbackup wal-push` is archive_command: PostgreSQL starts it once per WAL segment, so it must start without
what the other commands need (the database driver, the catalog, backup, restore), and still behave as the full
command line does (archives the file, same exit codes and messages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgbackup.api import jobenv
from pgbackup.runner.cli.entry import main
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive

SEGMENT = "000000010000000000000003"
# what `pgbackup wal-push` has no use for: each costs start-up time on every WAL segment
NOT_NEEDED = ("psycopg", "pgbackup.runner.catalog.manifest", "pgbackup.runner.catalog.catalog",
              "pgbackup.runner.backup", "pgbackup.runner.restore", "pgbackup.runner.postgres", "pgbackup.runner.verify")


def policy_file(tmp_path: Path, **spec: object) -> Path:
    document = {"name": "walpush", "namespace": "db", "spec": {
        "database": {"host": "db", "databases": ["app"], "credentialsSecret": {"name": "db"}},
        "schedule": "0 2 * * *", "retention": {"keepLast": 3},
        "storage": {"volume": {"claimName": "backups", "path": "wal-archive"}}, **spec}}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document))
    return path


def segment_file(directory: Path, content: bytes = b"wal" * 1000) -> Path:
    path = directory / SEGMENT
    path.write_bytes(content + bytes(16 * 1024 * 1024 - len(content)))
    return path


def imported_modules(importtime_stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.mark.parametrize("command", ["console script", "python -m pgbackup.runner"])
def test_wal_push_archives_the_file_without_loading_the_other_commands(tmp_path: Path, command: str) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    segment = segment_file(tmp_path)
    start = ([sys.executable, "-X", "importtime", str(Path(sys.executable).parent / "pgbackup")]
             if command == "console script" else [sys.executable, "-X", "importtime", "-m", "pgbackup.runner"])
    done = subprocess.run([*start, "wal-push", "--policy", str(policy_file(tmp_path)), str(segment)],  # noqa: S603
                          env={**os.environ, jobenv.ENV_VOLUME_ROOT: str(volume)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == jobenv.EXIT_OK, done.stderr[-2000:]

    archive = WalArchive(FilesystemStorage(volume / "wal-archive", volume_root=volume))
    fetched = tmp_path / "fetched"
    assert archive.fetch(SEGMENT, fetched)
    assert fetched.read_bytes() == segment.read_bytes()
    loaded = imported_modules(done.stderr)
    assert "pgbackup.runner.wal.archive" in loaded
    assert not {m for m in loaded if m.startswith(NOT_NEEDED)}, "wal-push loaded modules it does not need"


def test_wal_push_keeps_the_documented_exit_codes_and_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    monkeypatch.setenv(jobenv.ENV_VOLUME_ROOT, str(volume))
    policy = str(policy_file(tmp_path))
    segment = segment_file(tmp_path)

    assert main(["wal-push", "--policy", policy, str(segment)]) == jobenv.EXIT_OK
    assert main(["wal-push", "--policy", policy, str(segment)]) == jobenv.EXIT_OK  # identical re-push
    other = tmp_path / "other"
    other.mkdir()
    assert main(["wal-push", "--policy", policy, str(segment_file(other, b"different"))]) == jobenv.EXIT_FAILED
    assert "already archived" in capsys.readouterr().err

    assert main(["wal-push", "--policy", policy, str(tmp_path / "policy.json")]) == jobenv.EXIT_FAILED
    assert "is not a WAL file" in capsys.readouterr().err

    bad = policy_file(tmp_path, retention={})
    assert main(["wal-push", "--policy", str(bad), str(segment)]) == jobenv.EXIT_USAGE
    assert "policy" in capsys.readouterr().err

    assert main(["wal-push"]) == jobenv.EXIT_USAGE  # no PATH
    assert "PATH" in capsys.readouterr().err
    assert main(["wal-push", "--help"]) == jobenv.EXIT_OK
    assert "archive_command" in capsys.readouterr().out
