"""Policies that share a bucket: each sees, prunes and cleans up only its own backups (real PostgreSQL, real
S3 protocol on moto). Two policies with the same bucket and the same prefix are a misconfiguration the
operator reports (Ready=False StorageOverlap); until it is fixed, neither may lose a backup to the other."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgbackup.api.policy import Compression, Retention
from pgbackup.runner.cli import main as cli
from pgbackup.runner.backup.housekeeping import clean_leftovers
from pgbackup.runner.backup.run import backup_command, take_backup
from pgbackup.runner.catalog.catalog import BackupNotFound, Catalog
from pgbackup.runner.common.config import PolicyConfig, policy_from_document
from pgbackup.runner.catalog.manifest import Manifest, PhysicalInfo
from pgbackup.runner.backup.housekeeping import apply_retention
from pgbackup.runner.storage.factory import open_storage
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.xlog import WalSegment, format_lsn, lsn_of_segment_start
from tests.fixtures.postgres import PgServer, backup_policy, runner_env
from tests.fixtures.s3 import S3Bucket
from tests.runner.claim_support import HookedStorage


def policy(server: PgServer, name: str, s3: dict[str, Any], keep_last: int = 5) -> PolicyConfig:
    document = backup_policy(server, {"s3": s3}, databases=["postgres"], retention={"keepLast": keep_last})
    document["name"] = name
    return policy_from_document(document, "test")


def backup(policy: PolicyConfig) -> str:
    code, summary = backup_command(policy)
    assert code == 0, summary.error
    return str(summary.backup_id)


def test_an_unset_prefix_gives_each_policy_its_own_directory(pg15: PgServer, s3_bucket: S3Bucket, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    runner_env(pg15, monkeypatch, tmp_path)
    wire = s3_bucket.wire()
    del wire["prefix"]
    first = backup(policy(pg15, "orders-a", wire))
    second = backup(policy(pg15, "orders-b", wire))

    keys = s3_bucket.keys()
    assert f"shop/orders-a/{first}/manifest.json" in keys
    assert f"shop/orders-b/{second}/manifest.json" in keys
    assert all(key.startswith(("shop/orders-a/", "shop/orders-b/")) for key in keys), keys


def test_retention_of_one_policy_never_deletes_another_policys_backups(pg15: PgServer, s3_bucket: S3Bucket,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    runner_env(pg15, monkeypatch, tmp_path)
    shared = s3_bucket.wire()  # the same bucket AND the same prefix
    a, b = policy(pg15, "orders-a", shared, keep_last=1), policy(pg15, "orders-b", shared)
    b_ids = [backup(b), backup(b)]
    a_ids = [backup(a), backup(a)]

    storage = open_storage(a.spec.storage)
    assert all(Catalog(storage).check(backup_id).ok for backup_id in b_ids)  # B's survived A's keepLast 1
    assert Catalog(storage, b).ids() == list(reversed(b_ids))
    assert Catalog(storage, a).ids() == [a_ids[-1]]
    assert Catalog(storage, a).latest().id == a_ids[-1]  # type: ignore[union-attr]
    with pytest.raises(BackupNotFound, match="belongs to BackupPolicy shop/orders-b"):
        Catalog(storage, a).get(b_ids[0])

    # By hand with a bare spec (no name): nothing of "default/local" there, and the hint names the owners.
    bare = tmp_path / "spec.json"
    bare.write_text(json.dumps(a.spec.to_wire()))
    capsys.readouterr()
    assert cli.main(["list", "--policy", str(bare)]) == 0
    assert "only of shop/orders-a, shop/orders-b" in capsys.readouterr().err


def test_cleanup_of_one_policy_leaves_another_policys_running_backup_alone(pg15: PgServer, s3_bucket: S3Bucket,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    runner_env(pg15, monkeypatch, tmp_path)
    shared = s3_bucket.wire()
    a, b = policy(pg15, "orders-a", shared), policy(pg15, "orders-b", shared)
    a_storage = open_storage(a.spec.storage)
    interleaved: list[str] = []

    def while_b_dumps(key: str) -> None:
        # B has stored its globals and is streaming its database: A backs up and cleans up "leftovers", as if
        # B had been running far longer than A's grace period.
        if "/databases/" not in key or interleaved:
            return
        interleaved.append(backup(a))
        clean_leftovers(a, a_storage, now=datetime.now(UTC) + timedelta(days=2))

    outcome = take_backup(b, HookedStorage(open_storage(b.spec.storage), on_write=while_b_dumps))

    assert interleaved, "A's backup did not run while B's was in flight"
    report = Catalog(a_storage).check(outcome.manifest.id)
    assert report.ok, report.summary()
    assert [o.kind for o in outcome.manifest.objects] == ["globals", "database"]


def test_wal_retention_of_a_shared_archive_keeps_the_other_policys_base_backups(tmp_path: Path) -> None:
    """Guard: policy A's retention prunes a shared WAL archive only before the oldest base backup of ANY policy
    there (a scoped catalog must neither ignore B's base backups nor take them for unreadable manifests)."""
    (tmp_path / "shared").mkdir()
    storage = FilesystemStorage(tmp_path / "shared")
    archive = WalArchive(storage, compression=Compression(algorithm="none"))
    for n in range(2, 10):
        segment = tmp_path / WalSegment(1, 0, n).name
        segment.write_bytes(b"w" * 100)
        archive.push(segment)
    now = datetime.now(UTC)

    def base(policy_name: str, backup_id: str, age_days: int, start: int) -> None:
        lsn = lsn_of_segment_start(WalSegment(1, 0, start))
        Catalog(storage).write_manifest(Manifest(
            id=backup_id, policy=policy_name, namespace="shop", method="physical", objects=[],
            started_at=now - timedelta(days=age_days), completed_at=now - timedelta(days=age_days),
            server_version="15.0", compression="none",
            physical=PhysicalInfo(start_lsn=format_lsn(lsn + 40), stop_lsn=format_lsn(lsn + 400), timeline=1,
                                  start_wal_segment=WalSegment(1, 0, start).name,
                                  stop_wal_segment=WalSegment(1, 0, start).name)))

    base("orders-b", "20261101T020000Z", 5, 3)  # B's only base backup needs WAL from segment 3 on
    base("orders-a", "20261102T020000Z", 4, 5)
    base("orders-a", "20261103T020000Z", 3, 7)
    a = PolicyConfig(name="orders-a", namespace="shop", spec=None)  # type: ignore[arg-type]

    decisions = apply_retention(Catalog(storage, a), Retention(keep_last=1), now)

    assert [d.id for d in decisions if not d.keep] == ["20261102T020000Z"]
    assert [s.segment.seg for s in archive.segments()] == list(range(3, 10))
