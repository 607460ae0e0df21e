"""Hardening of the runner against real servers: leftovers of failed backups are cleaned after a grace period,
SIGTERM (activeDeadlineSeconds, node drain) unwinds cleanly, unreachable storage is a network failure, a fresh
volume path is created while an unmounted volume is a clear error, and new ids never list the whole storage."""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pgbackup.runner.storage.parts import PART_MEMORY
from pgbackup.api import jobenv
from pgbackup.api.policy import Storage as StorageSpec
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.common.errors import exit_code_for
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.storage.base import ObjectInfo, ObjectWriter, Storage, StorageError, StorageUnreachable
from pgbackup.runner.storage.factory import open_storage
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.postgres import PgServer, backup_policy, free_port, load_sample, runner_env
from tests.fixtures.s3 import TEST_CREDENTIALS, RelayProxy, S3Bucket, make_bucket
from tests.runner.storage_support import fs_storage, s3_storage  # noqa: F401 - fixtures


def _age(path: Path, by: timedelta) -> None:
    """Backdate every file under `path` (what a Job killed `by` ago leaves behind)."""
    when = (datetime.now(UTC) - by).timestamp()
    for file in path.rglob("*"):
        if file.is_file():
            os.utime(file, (when, when))


def _orphan(root: Path, backup_id: str, age: timedelta) -> Path:
    directory = root / backup_id
    (directory / "databases").mkdir(parents=True)
    (directory / "databases" / "shop.dump.zst").write_bytes(b"half a dump")
    _age(directory, age)
    return directory


# --- 1. unfinished backups are cleaned after the next backup --------------------------------------


def test_backup_removes_stale_unfinished_backups_and_keeps_one_that_may_still_run(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = load_sample(pg15)
    document = backup_policy(pg15, {"volume": {"claimName": "backups", "path": "shop/orders-db"}}, databases=[db],
                             logical={"globals": False}, jobTemplate={"activeDeadlineSeconds": 3600})
    runner_env(pg15, monkeypatch, tmp_path)
    root = tmp_path / "volume" / "shop" / "orders-db"
    # grace = activeDeadlineSeconds (1 h) + 1 h: a Job killed 3 h ago is over, one started 90 min ago may not be
    stale = _orphan(root, "20260101T000000Z", timedelta(hours=3))
    running = _orphan(root, "20260101T010000Z", timedelta(minutes=90))
    (root / "wal").mkdir()
    (root / "wal" / "000000010000000000000001").write_bytes(b"wal")
    _age(root / "wal", timedelta(days=3))

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == jobenv.EXIT_OK, summary.error
    assert not stale.exists()
    assert (running / "databases" / "shop.dump.zst").read_bytes() == b"half a dump"
    assert (root / "wal" / "000000010000000000000001").exists()  # not a backup directory: never touched
    assert [m.id for m in Catalog(FilesystemStorage(root)).backups()] == [summary.backup_id]


# --- 2. SIGTERM --------------------------------------------------------------------------------------


class SlowPartProxy(RelayProxy):
    """Holds every multipart UploadPart for `delay` seconds on its way to the real moto server: a slow link,
    so a test can act while a backup is mid-upload."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.delay = delay
        super().__init__(upstream_port, timeout=60)

    def intercept(self, request: Any) -> bool:
        if request.command == "PUT" and "partNumber=" in request.path:
            time.sleep(self.delay)
        return False


@pytest.fixture(scope="module")
def bulk_db(pg15: PgServer) -> str:
    """Incompressible bytea whose dump (hex: two bytes per byte) is 1.25x what the runner may hold of an upload in
    memory (parts filling and on the wire): pg_dump is still writing while parts upload, as with any database larger
    than that. 1 KiB per row."""
    rows = int(PART_MEMORY * 1.25 / 2 / 1024)
    name = "hardening_bulk"
    if not pg15.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        pg15.query(f'CREATE DATABASE "{name}"')
        pg15.query("CREATE TABLE blob (id int PRIMARY KEY, payload bytea NOT NULL)", name)
        pg15.query("INSERT INTO blob SELECT g, decode(string_agg(md5(random()::text || g || i), ''), 'hex') "
                   f"FROM generate_series(1, {rows}) g, generate_series(1, 64) i GROUP BY g", name)
    return name


def _pids_of_children(parent: int) -> dict[int, str]:
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        if stat[stat.rindex(")") + 2:].split()[1] == str(parent):
            found[int(entry.name)] = comm
    return found


def _alive(pid: int, comm: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return f"({comm})" in stat and ") Z" not in stat


def test_sigterm_mid_upload_aborts_the_upload_stops_pg_dump_and_reports_terminated(
        pg15: PgServer, bulk_db: str, moto_server: Any, tmp_path: Path) -> None:
    bucket = make_bucket(moto_server.endpoint)
    proxy = SlowPartProxy(moto_server.port, delay=1.0)
    try:
        document = backup_policy(pg15, {"s3": bucket.wire(endpoint=proxy.endpoint)}, databases=[bulk_db],
                                 logical={"globals": False}, compression={"algorithm": "none"})
        summary_file = tmp_path / "termination-log"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PG", "AWS_"))}
        env.update(TEST_CREDENTIALS)
        env.update({"PGUSER": pg15.user, "PGPASSWORD": pg15.password, "AWS_CONFIG_FILE": "/dev/null",
                    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "NO_PROXY": "127.0.0.1,localhost",
                    jobenv.ENV_POLICY: json.dumps(document), jobenv.ENV_SUMMARY_FILE: str(summary_file),
                    jobenv.ENV_SCRATCH: str(tmp_path)})
        runner = subprocess.Popen([sys.executable, "-m", "pgbackup.runner", "backup"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not bucket.incomplete_uploads() and runner.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert runner.poll() is None, "the backup ended before its upload was seen in progress"
            assert bucket.incomplete_uploads(), "no multipart upload started within 60 s"
            children = {pid: comm for pid, comm in _pids_of_children(runner.pid).items() if comm == "pg_dump"}
            assert children, "pg_dump is not running under the runner"
            runner.send_signal(signal.SIGTERM)
            _, stderr = runner.communicate(timeout=60)
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()

        assert runner.returncode == jobenv.EXIT_FAILED, stderr.decode()[-2000:]
        summary = json.loads(summary_file.read_text())
        assert summary["phase"] == "Failed" and summary["reason"] == "Terminated"
        assert "SIGTERM" in summary["error"] and "activeDeadlineSeconds" in summary["error"]
        assert not [key for key in bucket.keys() if key.endswith("manifest.json")]
        assert bucket.incomplete_uploads() == []
        assert not [pid for pid, comm in children.items() if _alive(pid, comm)]
        assert pg15.password not in stderr.decode()
    finally:
        proxy.close()


# --- 3. unreachable storage is a network failure -------------------------------------------------


def test_unreachable_s3_is_storage_unreachable_with_the_network_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.s3 import s3_env

    s3_env(monkeypatch)
    spec = StorageSpec.model_validate({"s3": {"bucket": "backups", "endpoint": f"http://127.0.0.1:{free_port()}",
                                              "forcePathStyle": True}}).s3
    assert spec is not None
    storage = S3Storage(spec, max_attempts=2, connect_timeout=2)

    with pytest.raises(StorageUnreachable, match="unreachable") as raised:
        list(storage.list())

    assert "s3://backups" in str(raised.value)
    assert exit_code_for(raised.value) == jobenv.EXIT_NETWORK


def test_missing_bucket_is_a_plain_failure_not_a_network_one(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.spec(bucket="no-such-bucket-here"), max_attempts=2)

    with pytest.raises(StorageError) as raised:
        list(storage.list())

    assert not isinstance(raised.value, StorageUnreachable)
    assert exit_code_for(raised.value) == jobenv.EXIT_FAILED


# --- 4. volume: a fresh path is created, an unmounted volume is named ----------------------------


def test_first_backup_to_a_new_path_on_a_mounted_volume_creates_it(pg15: PgServer, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = load_sample(pg15)
    document = backup_policy(pg15, {"volume": {"claimName": "backups", "path": "team-a/orders-db"}},
                             databases=[db], logical={"globals": False})
    runner_env(pg15, monkeypatch, tmp_path)
    assert not (tmp_path / "volume" / "team-a").exists()

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == jobenv.EXIT_OK, summary.error
    catalog = Catalog(FilesystemStorage(tmp_path / "volume" / "team-a" / "orders-db"))
    assert [m.id for m in catalog.backups()] == [summary.backup_id]


def test_unmounted_volume_is_reported_as_not_mounted_and_nothing_is_created(pg15: PgServer, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    db = load_sample(pg15)
    document = backup_policy(pg15, {"volume": {"claimName": "backups", "path": "team-a/orders-db"}},
                             databases=[db], logical={"globals": False})
    runner_env(pg15, monkeypatch, tmp_path)
    missing = tmp_path / "not-mounted"
    monkeypatch.setenv(jobenv.ENV_VOLUME_ROOT, str(missing))

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == jobenv.EXIT_FAILED
    assert summary.phase == "Failed"
    assert f"not mounted at {missing}" in str(summary.error) and "claimName" in str(summary.error)
    assert not missing.exists()


def test_unmounted_volume_fails_listing_instead_of_showing_an_empty_catalog(tmp_path: Path) -> None:
    spec = StorageSpec.model_validate({"volume": {"claimName": "backups", "path": "orders-db"}})
    storage = open_storage(spec, volume_root=tmp_path / "mnt")

    with pytest.raises(StorageError, match=f"not mounted at {tmp_path / 'mnt'}"):
        Catalog(storage).backups()
    with pytest.raises(StorageError, match="not mounted"):
        storage.put_bytes("x", b"1")


# --- 5. new ids list only their own prefix -------------------------------------------------------


class RecordingStorage(Storage):
    """A real storage that records the prefixes it is asked to list."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.listed: list[str] = []

    @property
    def url(self) -> str:
        return self.inner.url

    def open_writer(self, key: str) -> ObjectWriter:
        return self.inner.open_writer(key)

    def open_reader(self, key: str) -> BinaryIO:
        return self.inner.open_reader(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.listed.append(prefix)
        return self.inner.list(prefix)

    def delete(self, keys: builtins.list[str]) -> None:
        self.inner.delete(keys)


@pytest.mark.parametrize("backend", ["fs_storage", "s3_storage"])
def test_new_id_skips_an_unfinished_run_of_the_same_second_and_lists_only_that_second(
        backend: str, request: pytest.FixtureRequest) -> None:
    inner: Storage = request.getfixturevalue(backend)
    now = datetime(2026, 11, 23, 15, 0, 0, tzinfo=UTC)
    inner.put_bytes("20261123T150000Z/databases/shop.dump.zst", b"unfinished")
    inner.put_bytes("20261123T150000Z-1/globals.sql.zst", b"unfinished too")
    inner.put_bytes("wal/000000010000000000000001", b"wal")
    storage = RecordingStorage(inner)

    assert Catalog(storage).new_id(now) == "20261123T150000Z-2"
    assert storage.listed == ["20261123T150000Z"]
    assert Catalog(storage).new_id(now + timedelta(seconds=1)) == "20261123T150001Z"

