"""What `pgbackup` prints, seen from a shell: a reader that stops early (`| head -1`), the verification column,
the help and `--version`. The catalog is written straight into a volume (no PostgreSQL needed to list it)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from pgbackup import installed_version
from pgbackup.api.policy import Compression
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, ManifestObject
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.pipeline import store_stream

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
SIGPIPE_STATUS = 141  # 128 + SIGPIPE, what a shell reports for `cat big | head -1`


def write_backups(root: Path, count: int) -> list[str]:
    """`count` small complete backups of orders-db (shop), one a day, as the backup command leaves them."""
    catalog = Catalog(FilesystemStorage(root))
    ids = []
    for day in range(count):
        when = T0 + timedelta(days=day)
        backup_id = catalog.new_id(when)
        stored = store_stream(io.BytesIO(b"rows\n" * 100), catalog.storage, catalog.object_key(backup_id, "orders.dump"),
                              compression=Compression())
        catalog.write_manifest(Manifest(
            id=backup_id, policy="orders-db", namespace="shop", method="logical", started_at=when - timedelta(seconds=5),
            completed_at=when, objects=[ManifestObject.from_stored(stored, backup_id, kind="database", database="orders")],
            server_version="18.3", tools={"pg_dump": "18.3"}, compression="zstd"))
        ids.append(backup_id)
    return ids


@pytest.fixture
def shell(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A policy file for a volume under tmp_path, and the environment a user's shell gives `pgbackup`."""
    (tmp_path / "volume").mkdir()
    policy = {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy",
              "metadata": {"name": "orders-db", "namespace": "shop"},
              "spec": {"database": {"host": "127.0.0.1", "port": 5432, "databases": ["orders"],
                                    "credentialsSecret": {"name": "db-credentials"}},
                       "schedule": "0 2 * * *", "storage": {"volume": {"claimName": "backups"}},
                       "retention": {"keepLast": 5}}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PGBACKUP_VOLUME_ROOT": str(tmp_path / "volume"),
           "PGBACKUP_SUMMARY_FILE": str(tmp_path / "summary.json")}
    return path, env


def pgbackup(*argv: str, env: dict[str, str], stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgbackup.runner", *argv], stdout=stdout, stderr=subprocess.PIPE,
                          env=env, text=True, timeout=120)


def assert_quiet(stderr: str) -> None:
    """No traceback and no error log line: a reader that stopped early is not a failure worth reporting."""
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    for line in stderr.splitlines():
        if line.startswith("{"):
            assert json.loads(line).get("level") != "error", line


def test_list_piped_into_head_ends_quietly(shell: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    policy, env = shell
    write_backups(tmp_path / "volume", 400)  # about 600 KiB of JSON: far more than a pipe holds
    done = subprocess.run(["bash", "-c", f'set -o pipefail; "{sys.executable}" -m pgbackup.runner list --json '
                                         f'--policy "{policy}" | head -1'],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout == "[\n"
    assert done.returncode == SIGPIPE_STATUS, done.stderr  # what `cat big-file | head -1` gives under pipefail
    assert_quiet(done.stderr)


@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["show", "{id}"], ["check", "{id}"],
                                  ["catalog-summary"], ["retention", "--dry-run"], ["--help"], ["list", "--help"],
                                  ["--version"]])
def test_every_printing_command_ends_quietly_when_stdout_is_closed(argv: list[str], shell: tuple[Path, dict[str, str]],
                                                                   tmp_path: Path) -> None:
    policy, env = shell
    backup_id = write_backups(tmp_path / "volume", 8)[-1]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line: every write fails with EPIPE
    try:
        done = pgbackup(*[arg.format(id=backup_id) for arg in argv], "--policy", str(policy), env=env, stdout=write_end)
    finally:
        os.close(write_end)
    assert done.returncode == SIGPIPE_STATUS, done.stderr
    assert_quiet(done.stderr)


def test_list_tells_passed_from_failed_from_not_yet(shell: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    policy, env = shell
    never, failed, passed = write_backups(tmp_path / "volume", 3)
    storage = FilesystemStorage(tmp_path / "volume")
    storage.put_bytes(f"{failed}/verification.json", json.dumps({"phase": "Failed", "passed": False}).encode())
    storage.put_bytes(f"{passed}/verification.json", json.dumps({"phase": "Passed", "passed": True}).encode())

    done = pgbackup("list", "--policy", str(policy), env=env)

    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    column = {row.split()[0]: row[header.index("VERIFIED"):] for row in rows}
    assert column == {passed: "passed", failed: "failed", never: "not yet"}
    listed = json.loads(pgbackup("list", "--json", "--policy", str(policy), env=env).stdout)
    assert {m["id"]: (m["verification"], m["verified"]) for m in listed} == {
        passed: ("passed", True), failed: ("failed", False), never: (None, False)}


def test_version_and_exit_codes_once(shell: tuple[Path, dict[str, str]]) -> None:
    _, env = shell
    done = pgbackup("--version", env=env)
    assert done.returncode == 0 and done.stdout == f"pgbackup {installed_version()}\n"

    top = pgbackup("--help", env=env)
    assert top.returncode == 0 and "3  usage" in top.stdout and "--version" in top.stdout
    assert "141  the reader of stdout stopped early" in top.stdout
    for command in ("backup", "list", "show", "restore", "verify", "wal-push"):
        sub = pgbackup(command, "--help", env=env)
        assert sub.returncode == 0, command
        assert "3  usage" not in sub.stdout, command  # the table is printed once, by `pgbackup --help`
        assert "pgbackup --help" in sub.stdout, command  # ...and each command says where it is


def test_the_installed_version_is_read_in_one_place() -> None:
    """`pgbackup --version`, the `tools.pgbackup` of every manifest and the operator's default image tag all come
    from pgbackup.installed_version() ('dev' in a never-installed tree), so they cannot disagree."""
    package = Path(__file__).resolve().parents[2] / "operator" / "pgbackup"
    readers = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                     if "importlib.metadata" in path.read_text())
    assert readers == ["__init__.py"]
