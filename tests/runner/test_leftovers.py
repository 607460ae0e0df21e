"""Leftovers of failed and killed backups never pile up: a runner that is alive when its backup fails removes what
it wrote (a full volume recovers by itself), and housekeeping removes the objects of runs that are provably
dead (their claim's lease ran out) while the objects of a running backup are never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from pgbackup.api.jobenv import EXIT_FAILED, EXIT_OK
from pgbackup.api.summary import JobSummary
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.storage.factory import open_policy_storage
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.claim import ENV_LEASE_SECONDS, ClaimRecord
from pgbackup.runner.cli.main import main
from pgbackup.runner.common.config import PolicyConfig, policy_from_document
from pgbackup.runner.storage.base import Storage, StorageError
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.postgres import PgServer, backup_policy, runner_env
from tests.fixtures.s3 import S3Bucket
from tests.runner.claim_support import HookedStorage
from tests.runner.storage_support import fs_storage, s3_storage, storage  # noqa: F401 - fixtures

MIB = 1024 * 1024


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted where the runner's volume goes (tmp_path/volume), unmounted afterwards."""
    volume = tmp_path / "volume"
    volume.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(volume)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield volume
    finally:
        if subprocess.run(["umount", str(volume)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(volume)], check=True)


def filler_db(server: PgServer, name: str, mib: int) -> str:
    """A database whose dump is about `mib` MiB of incompressible text (created once per server)."""
    if not server.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        server.query(f'CREATE DATABASE "{name}"')
        with server.connect(name) as conn:
            conn.execute("CREATE TABLE filler (id int PRIMARY KEY, data text)")
            conn.execute(
                "INSERT INTO filler SELECT g, (SELECT string_agg(md5(random()::text || g || s), '') "
                "FROM generate_series(1, 2048) AS s) FROM generate_series(1, %s) AS g", (mib * 16,))
    return name


def files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def wait_for(condition: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {condition}"
        time.sleep(0.05)


def policy_of(server: PgServer, databases: list[str]) -> PolicyConfig:
    return policy_from_document(
        backup_policy(server, {"volume": {"claimName": "backups"}}, databases=databases, logical={"globals": False},
                      compression={"algorithm": "none"}), "test")


def test_a_backup_that_fills_the_volume_leaves_nothing_and_the_next_one_fits(
        pg15: PgServer, small_volume: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small, big = filler_db(pg15, "space_small", 3), filler_db(pg15, "space_big", 6)
    runner_env(pg15, monkeypatch, tmp_path)

    code, summary = backup_command(policy_of(pg15, [small, big]))  # 3 MiB fit, then 6 more do not

    assert code == EXIT_FAILED, summary
    assert "No space left on device" in str(summary.error)
    assert files(small_volume) == [], "the failed run left its objects on the full volume"
    assert "apply retention" not in str(summary.error)
    assert "grow the PersistentVolumeClaim" in str(summary.error)

    # nobody deletes anything by hand: a backup that fits in the volume now succeeds
    policy = policy_of(pg15, [big])
    code, summary = backup_command(policy)
    assert code == EXIT_OK, summary.error
    assert Catalog(open_policy_storage(policy)).check(str(summary.backup_id)).ok


def test_a_killed_run_is_cleared_once_provably_dead_and_a_running_one_is_never_touched(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done, held = filler_db(pg15, "lease_done", 1), filler_db(pg15, "lease_held", 1)
    runner_env(pg15, monkeypatch, tmp_path)
    policy = policy_of(pg15, [done, held])
    storage = open_policy_storage(policy)
    catalog = Catalog(storage)

    def backup_dirs() -> set[str]:
        return {info.key.split("/", 1)[0] for info in storage.list() if "/" in info.key}

    def committed(backup_id: str, database: str) -> bool:
        return storage.exists(f"{backup_id}/databases/{database}.dump")

    # pg_dump of `held` waits for this lock: both runs stop there, with `done` already stored
    lock = psycopg.connect(pg15.conninfo(held))
    lock.execute("LOCK TABLE filler IN ACCESS EXCLUSIVE MODE")
    try:
        env = {**os.environ, "PGBACKUP_POLICY": json.dumps(backup_policy(
            pg15, {"volume": {"claimName": "backups"}}, databases=[done, held], logical={"globals": False},
            compression={"algorithm": "none"})), ENV_LEASE_SECONDS: "1"}
        killed = subprocess.Popen([str(Path(sys.executable).parent / "pgbackup"), "backup"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for("the runner stored its first database", lambda: any(committed(b, done) for b in backup_dirs()))
        finally:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait()
        (killed_id,) = backup_dirs()

        results: list[tuple[int, JobSummary]] = []
        running = threading.Thread(target=lambda: results.append(
            backup_command(policy, storage=storage, environ={**os.environ, ENV_LEASE_SECONDS: "4"})))
        running.start()
        wait_for("the second runner stored its first database",
                 lambda: any(committed(b, done) for b in backup_dirs() - {killed_id}))
        (running_id,) = backup_dirs() - {killed_id}
        # the upload of `held` opens as pg_dump starts on it (then waits for the lock): take the list once it has
        wait_for("the second runner is dumping the locked database",
                 lambda: any(f"{held}.dump" in info.key for info in storage.list(f"{running_id}/databases/")))
        running_objects = {info.key for info in storage.list(f"{running_id}/databases/")}

        wait_for("the killed run's lease ran out",
                 lambda: killed_id in catalog.unfinished(timedelta(hours=7), datetime.now(UTC)))
        assert running_id not in catalog.unfinished(timedelta(hours=7), datetime.now(UTC))

        code, summary = backup_command(policy_of(pg15, [done]), storage=storage)
        assert code == EXIT_OK, summary.error

        assert killed_id not in backup_dirs(), "the killed run's objects are still there"
        assert {info.key for info in storage.list(f"{running_id}/databases/")} == running_objects
        assert storage.exists(f"{running_id}/claim.json")
    finally:
        lock.rollback()
        lock.close()
    running.join(timeout=120)
    ((code, running_summary),) = results
    assert code == EXIT_OK, running_summary.error
    assert running_summary.backup_id == running_id
    assert catalog.check(running_id).ok
    assert sorted(catalog.ids()) == sorted([running_id, str(summary.backup_id)])


def test_a_run_that_cannot_renew_its_claim_writes_no_manifest(pg15: PgServer, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Housekeeping elsewhere may take a run whose lease ran out for dead: such a run must not commit."""
    db = filler_db(pg15, "lease_lost", 1)
    runner_env(pg15, monkeypatch, tmp_path)
    refused: list[str] = []

    def refuse_heartbeats(key: str) -> None:
        if key.endswith("/claim.json"):
            refused.append(key)
            raise StorageError("injected: the storage refuses this write")

    storage = HookedStorage(FilesystemStorage(tmp_path / "volume"), on_write=refuse_heartbeats)
    results: list[tuple[int, JobSummary]] = []
    lock = psycopg.connect(pg15.conninfo(db))
    lock.execute("LOCK TABLE filler IN ACCESS EXCLUSIVE MODE")  # the dump waits while heartbeats fail
    try:
        runner = threading.Thread(target=lambda: results.append(backup_command(
            policy_of(pg15, [db]), storage=storage, environ={**os.environ, ENV_LEASE_SECONDS: "2"})))
        runner.start()
        wait_for("three heartbeats failed (more than half the lease)", lambda: len(refused) >= 3)
    finally:
        lock.rollback()
        lock.close()
    runner.join(timeout=120)

    ((code, summary),) = results
    assert code == EXIT_FAILED
    assert "could not renew its claim" in str(summary.error) and "no manifest is written" in str(summary.error)
    assert files(tmp_path / "volume") == []


def test_housekeeping_keeps_unclaimed_leftovers_for_the_grace_period(tmp_path: Path) -> None:
    """Directories without a claim (older runners, copies in progress) keep the old rule: removed only after
    the grace period."""
    storage: Storage = FilesystemStorage(tmp_path)
    storage.put_bytes("20261123T020000Z/databases/shop.dump", b"x")
    catalog = Catalog(storage)
    now = datetime.now(UTC)
    assert catalog.clean_unfinished(timedelta(hours=7), now) == []
    assert catalog.clean_unfinished(timedelta(hours=7), now + timedelta(hours=8)) == ["20261123T020000Z"]


def write_claim(storage: Storage, backup_id: str, *, lease: int, state: str = "running") -> None:
    now = datetime.now(UTC)
    record = ClaimRecord(runner="r" + backup_id[-2:], host="pod", pid=1, started_at=now, heartbeat_at=now,
                         lease_seconds=lease, state=state)  # type: ignore[arg-type]
    storage.put_bytes(f"{backup_id}/claim.json", record.model_dump_json().encode())


def test_housekeeping_removes_runs_whose_claim_ended_or_expired(s3_bucket: S3Bucket, storage: Storage) -> None:
    """On both backends: a claim not renewed for longer than its lease, or marked ended, makes its directory a
    dead run's leftover at once (S3 multipart uploads of it aborted too); a renewed claim protects it."""
    catalog = Catalog(storage)
    for backup_id in ("20261123T020000Z", "20261123T030000Z", "20261123T040000Z"):
        storage.put_bytes(f"{backup_id}/databases/shop.dump", os.urandom(1000))
    write_claim(storage, "20261123T020000Z", lease=60)  # killed: no heartbeat since
    write_claim(storage, "20261123T030000Z", lease=600)  # running: renewed within its lease
    write_claim(storage, "20261123T040000Z", lease=600, state="ended")  # failed, could not clean up
    if isinstance(storage, S3Storage):
        writer = storage.open_writer("20261123T020000Z/databases/big.dump")
        writer.write(os.urandom(6 * MIB))  # one part uploaded, then the runner was killed (no abort)
    later = datetime.now(UTC) + timedelta(seconds=120)

    assert catalog.clean_unfinished(timedelta(hours=7), later) == ["20261123T020000Z", "20261123T040000Z"]

    assert sorted(info.key for info in storage.list()) == ["20261123T030000Z/claim.json",
                                                         "20261123T030000Z/databases/shop.dump"]
    if isinstance(storage, S3Storage):
        assert s3_bucket.incomplete_uploads() == []


def test_retention_command_also_clears_leftovers_of_dead_runs(tmp_path: Path, pg15: PgServer,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    runner_env(pg15, monkeypatch, tmp_path, policy=backup_policy(pg15, {"volume": {"claimName": "backups"}}))
    storage = FilesystemStorage(tmp_path / "volume")
    storage.put_bytes("20261123T020000Z/databases/shop.dump", b"x" * 1000)
    write_claim(storage, "20261123T020000Z", lease=1, state="ended")

    assert main(["retention", "--dry-run"]) == EXIT_OK
    assert "20261123T020000Z       would delete unfinished" in capsys.readouterr().out
    assert storage.exists("20261123T020000Z/databases/shop.dump")
    assert main(["retention"]) == EXIT_OK
    assert files(tmp_path / "volume") == []
