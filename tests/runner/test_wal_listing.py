"""WAL retention lists only the WAL before its cut; the WAL streamer's status refresh lists only what was archived since its last listing (S3 StartAfter), and
the whole archive again every full_listing_interval, which is when deletions show (real moto S3, requests
counted on the real boto3 client)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pgbackup.api.policy import Retention
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, PhysicalInfo
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.backup.housekeeping import apply_retention
from pgbackup.runner.storage.s3 import S3Storage
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.status import WalStateTracker
from pgbackup.runner.wal.xlog import WalSegment, format_lsn, lsn_of_segment_start
from tests.fixtures.s3 import S3Bucket, free_port
from tests.runner.listing_support import ListingCounter, fill_wal_archive, put_wal_file, segment_name

SEGMENTS = 1000
"""2,000 objects under wal/."""


def test_a_status_refresh_lists_only_the_wal_archived_since_the_last_one(s3_bucket: S3Bucket) -> None:
    fill_wal_archive(s3_bucket, SEGMENTS)
    storage = S3Storage(s3_bucket.spec())
    requests = ListingCounter().attach(storage)
    now = [0.0]
    nobody_listens = ConnParams(host="127.0.0.1", port=free_port(), user="postgres", password="unused")
    tracker = WalStateTracker(nobody_listens, WalArchive(storage), slot="s", catalog_interval=300,
                              clock=lambda: now[0])

    def refresh_listing() -> list[str]:
        requests.reset()
        tracker.refresh()
        return sorted(key.split("/wal/", 1)[1] for key in requests.keys_under("wal/"))

    assert len(refresh_listing()) == 2 * SEGMENTS  # the first listing reads it all
    assert tracker.snapshot().last_archived_segment == segment_name(SEGMENTS)

    added = put_wal_file(s3_bucket, segment_name(SEGMENTS + 1)) + put_wal_file(s3_bucket, segment_name(SEGMENTS + 2))
    now[0] += 15
    assert refresh_listing() == sorted(key.split("wal/", 1)[1] for key in added)
    assert tracker.snapshot().last_archived_segment == segment_name(SEGMENTS + 2)
    print(f"\nstatus refresh after the first: {requests.requests} ListObjectsV2 requests, {len(requests.keys)} keys")

    partial = put_wal_file(s3_bucket, segment_name(SEGMENTS + 3) + ".partial")
    now[0] += 15
    assert refresh_listing() == sorted(key.split("wal/", 1)[1] for key in partial)
    assert tracker.snapshot().last_partial_at is not None
    now[0] += 15
    assert len(refresh_listing()) == 2, "the .partial being shipped is listed again (it is overwritten), nothing else"

    complete = put_wal_file(s3_bucket, segment_name(SEGMENTS + 3))
    s3_bucket.client.delete_objects(Bucket=s3_bucket.bucket, Delete={"Objects": [
        {"Key": f"{s3_bucket.prefix}/{key}"} for key in partial]})  # the full segment supersedes its .partial
    now[0] += 15
    assert refresh_listing() == sorted(key.split("wal/", 1)[1] for key in complete)
    assert tracker.snapshot().last_archived_segment == segment_name(SEGMENTS + 3)
    assert tracker.snapshot().gaps == []

    lost = segment_name(500)  # deleted in storage (a retention, or by hand): seen at the next full listing
    s3_bucket.client.delete_objects(Bucket=s3_bucket.bucket, Delete={"Objects": [
        {"Key": f"{s3_bucket.prefix}/wal/00000001/{lost}{suffix}"} for suffix in (".zst", ".meta.json")]})
    now[0] += 300
    assert len(refresh_listing()) == 2 * (SEGMENTS + 3) - 2
    assert tracker.snapshot().gaps == [lost]


def physical_backup(backup_id: str, completed_at: datetime, start: int) -> Manifest:
    segment = WalSegment(1, start // 256, start % 256)
    begin = lsn_of_segment_start(segment)
    return Manifest(id=backup_id, policy="orders-db", namespace="shop", method="physical", started_at=completed_at,
                    completed_at=completed_at, objects=[], server_version="15.0", compression="zstd",
                    physical=PhysicalInfo(start_lsn=format_lsn(begin + 40), stop_lsn=format_lsn(begin + 400),
                                          timeline=1, start_wal_segment=segment.name, stop_wal_segment=segment.name))


def test_wal_retention_lists_only_the_wal_before_its_cut(s3_bucket: S3Bucket) -> None:
    fill_wal_archive(s3_bucket, SEGMENTS)
    storage = S3Storage(s3_bucket.spec())
    catalog = Catalog(storage)
    now = datetime.now(UTC)
    catalog.write_manifest(physical_backup("20261101T020000Z", now - timedelta(days=2), start=10))
    catalog.write_manifest(physical_backup("20261102T020000Z", now - timedelta(days=1), start=60))
    requests = ListingCounter().attach(storage)

    decisions = apply_retention(catalog, Retention(keep_last=1), now)

    wal_keys, sent = requests.keys_under("wal/"), requests.requests
    print(f"\nWAL retention: {sent} ListObjectsV2 requests, {len(wal_keys)} WAL keys returned ({2 * 59} deleted)")
    assert [d.id for d in decisions if not d.keep] == ["20261101T020000Z"]
    remaining = [s.segment for s in WalArchive(storage).segments()]
    assert [(s.log, s.seg) for s in remaining] == [(n // 256, n % 256) for n in range(60, SEGMENTS + 1)]
    assert len(wal_keys) <= 1000, "no listing page beyond the one holding the cut (S3 pages hold 1,000 keys)"
