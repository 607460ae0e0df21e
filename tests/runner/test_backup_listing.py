"""What a backup run lists: only the backup directories, never the WAL archive beside them (2,000 WAL objects
on a real moto S3 server; requests and returned keys counted on the real boto3 client)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.postgres import PgServer, backup_policy, runner_env
from tests.fixtures.s3 import S3Bucket
from tests.runner.listing_support import CountingStorage, ListingCounter, fill_wal_archive

WAL_SEGMENTS = 1000
"""Each archived segment is two objects (data and its .meta.json sidecar): 2,000 objects under wal/."""


def tiny_db(server: PgServer, name: str = "listing_db") -> str:
    if not server.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        server.query(f'CREATE DATABASE "{name}"')
        with server.connect(name) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 10)")
    return name


def test_a_backup_run_lists_no_wal_key_of_a_big_archive(pg15: PgServer, s3_bucket: S3Bucket, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fill_wal_archive(s3_bucket, WAL_SEGMENTS)
    db = tiny_db(pg15)
    runner_env(pg15, monkeypatch, tmp_path)
    policy = policy_from_document(backup_policy(pg15, {"s3": s3_bucket.wire()}, databases=[db],
                                                logical={"globals": False}, retention={"keepLast": 2}), "test")
    for _ in range(2):  # backups for retention to read, and one for it to delete
        code, summary = backup_command(policy, storage=S3Storage(s3_bucket.spec()))
        assert code == 0, summary.error

    inner = S3Storage(s3_bucket.spec())
    requests = ListingCounter().attach(inner)
    storage = CountingStorage(inner)
    code, summary = backup_command(policy, storage=storage)

    assert code == 0, summary.error
    assert summary.stored_backups is not None and len(summary.stored_backups) == 2, "retention ran"
    wal_keys = requests.keys_under("wal/")
    print(f"\nbackup run: {len(storage.listings)} listings asked, {requests.requests} ListObjectsV2 requests, "
          f"{len(requests.keys)} keys returned ({len(wal_keys)} under wal/), {len(requests.dirs)} directories; "
          f"listings: {storage.listings}")
    assert wal_keys == [], f"{len(wal_keys)} WAL keys listed by a backup run"
    assert len(requests.keys) < 50, "only the backup directories' few objects are listed"
    assert len(s3_bucket.keys()) >= 2 * WAL_SEGMENTS, "the WAL archive is untouched"
