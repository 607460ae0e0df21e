"""WAL retention: never removes WAL a retained base backup needs, never opens a gap (property tests over
generated archives and catalogs), and runs after backup retention against a real archive on a volume."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pgbackup.api.policy import Compression, Retention
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, PhysicalInfo
from pgbackup.runner.backup.housekeeping import apply_retention
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.listing import ArchivedSegment
from pgbackup.runner.wal.window import find_gaps
from pgbackup.runner.wal.retention import plan_wal_retention
from pgbackup.runner.wal.xlog import WalSegment, format_lsn, lsn_of_segment_start, segment_from_number
from tests.runner.storage_support import fs_storage  # noqa: F401 - fixture

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Physical:
    """What a manifest's PhysicalInfo offers retention (start/stop segment, or only LSNs)."""

    start_lsn: str
    stop_lsn: str
    timeline: int
    start_wal_segment: str | None
    stop_wal_segment: str | None


def archived(timeline: int, number: int, partial: bool = False) -> ArchivedSegment:
    segment = segment_from_number(timeline, number)
    return ArchivedSegment(timeline=timeline, segment=segment, partial=partial,
                           name=segment.name + (".partial" if partial else ""),
                           archived_at=T0 + timedelta(minutes=number), size=1000)


archives = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 600), st.booleans()), max_size=80).map(
    lambda items: sorted({archived(tl, n, partial and n % 7 == 0) for tl, n, partial in items}))
backups = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 600), st.integers(0, 3), st.booleans()), max_size=6).map(
    lambda items: [Physical(start_lsn=format_lsn(lsn_of_segment_start(segment_from_number(tl, n)) + 40),
                            stop_lsn=format_lsn(lsn_of_segment_start(segment_from_number(tl, n + extra)) + 300),
                            timeline=tl,
                            start_wal_segment=segment_from_number(tl, n).name if named else None,
                            stop_wal_segment=segment_from_number(tl, n + extra).name if named else None)
                   for tl, n, extra, named in items])


def start_number(backup: Physical) -> int:
    from pgbackup.runner.wal.xlog import parse_lsn, segment_of

    return segment_of(parse_lsn(backup.start_lsn), backup.timeline).number()


@given(archives, backups)
def test_no_wal_a_retained_backup_needs_is_ever_deleted(segments: list[ArchivedSegment],
                                                        retained: list[Physical]) -> None:
    plan = plan_wal_retention(segments, retained)

    assert sorted(plan.keep + plan.delete) == sorted(segments)
    assert not set(plan.keep) & set(plan.delete)
    if not retained:
        assert plan.delete == []
        return
    oldest = min(start_number(b) for b in retained)
    assert all(s.segment.number() < oldest for s in plan.delete)
    assert all(s in plan.keep for s in segments if s.segment.number() >= oldest)


@given(archives, backups)
def test_deleting_never_opens_a_gap(segments: list[ArchivedSegment], retained: list[Physical]) -> None:
    plan = plan_wal_retention(segments, retained)
    assert set(find_gaps(plan.keep)) <= set(find_gaps(segments))


@given(archives, backups, st.randoms(use_true_random=False))
def test_plan_is_deterministic(segments: list[ArchivedSegment], retained: list[Physical], rnd: random.Random) -> None:
    shuffled_segments, shuffled_backups = list(segments), list(retained)
    rnd.shuffle(shuffled_segments)
    rnd.shuffle(shuffled_backups)
    assert plan_wal_retention(shuffled_segments, shuffled_backups) == plan_wal_retention(segments, retained)


def test_a_backup_without_wal_position_keeps_everything() -> None:
    segments = [archived(1, n) for n in range(10)]
    unknown = Physical(start_lsn="garbage", stop_lsn="garbage", timeline=1, start_wal_segment=None,
                       stop_wal_segment=None)
    plan = plan_wal_retention(segments, [unknown])
    assert plan.delete == [] and "all WAL is kept" in plan.reason


def test_history_files_survive_and_timelines_are_cut_at_one_position() -> None:
    segments = [archived(1, n) for n in range(0, 12)] + [archived(2, n) for n in range(8, 15)]
    backup = Physical(start_lsn=format_lsn(lsn_of_segment_start(WalSegment(2, 0, 10))), stop_lsn="0/0", timeline=2,
                      start_wal_segment=WalSegment(2, 0, 10).name, stop_wal_segment=WalSegment(2, 0, 10).name)
    plan = plan_wal_retention(segments, [backup])
    assert [s.name for s in plan.delete] == [archived(1, n).name for n in range(10)] + \
        [archived(2, n).name for n in (8, 9)]
    assert plan.cutoff == WalSegment(2, 0, 10)


# ---------------------------------------------------------------- applied with backup retention


def _physical_manifest(backup_id: str, completed_at: datetime, start: WalSegment) -> Manifest:
    return Manifest(id=backup_id, policy="orders-db", namespace="shop", method="physical", started_at=completed_at,
                    completed_at=completed_at, objects=[], server_version="15.0", compression="zstd",
                    physical=PhysicalInfo(start_lsn=format_lsn(lsn_of_segment_start(start) + 40),
                                          stop_lsn=format_lsn(lsn_of_segment_start(start) + 400),
                                          timeline=start.timeline, start_wal_segment=start.name,
                                          stop_wal_segment=start.name))


def test_backup_retention_then_prunes_the_wal_only_the_deleted_backups_needed(fs_storage: FilesystemStorage,
                                                                               tmp_path: Path) -> None:
    archive = WalArchive(fs_storage, compression=Compression(algorithm="none"))
    for n in range(2, 12):
        seg = WalSegment(1, 0, n)
        path = tmp_path / seg.name
        path.write_bytes(seg.name.encode() * 10)
        archive.push(path)
    label = tmp_path / f"{WalSegment(1, 0, 2).name}.00000028.backup"
    label.write_bytes(b"START WAL LOCATION")
    archive.push(label)
    history = tmp_path / "00000002.history"
    history.write_bytes(b"1\t0/9000000\tno recovery target specified\n")
    archive.push(history)
    catalog = Catalog(fs_storage)
    now = datetime.now(UTC)
    catalog.write_manifest(_physical_manifest("20261101T020000Z", now - timedelta(days=3), WalSegment(1, 0, 2)))
    catalog.write_manifest(_physical_manifest("20261102T020000Z", now - timedelta(days=2), WalSegment(1, 0, 5)))
    catalog.write_manifest(_physical_manifest("20261103T020000Z", now - timedelta(days=1), WalSegment(1, 0, 8)))

    decisions = apply_retention(catalog, Retention(keep_last=2), now)

    assert [d.id for d in decisions if not d.keep] == ["20261101T020000Z"]
    assert [s.segment.seg for s in archive.segments()] == list(range(5, 12))
    assert archive.backup_labels() == [] and archive.history_files() == ["00000002.history"]
    assert archive.gaps() == []
    first, last = archive.recoverability(catalog.backups())
    assert first is not None and last == archive.segments()[-1].archived_at


def test_dry_run_and_no_physical_backup_delete_no_wal(fs_storage: FilesystemStorage, tmp_path: Path) -> None:
    archive = WalArchive(fs_storage, compression=Compression(algorithm="none"))
    for n in range(2, 5):
        path = tmp_path / WalSegment(1, 0, n).name
        path.write_bytes(b"x" * 100)
        archive.push(path)
    catalog = Catalog(fs_storage)
    now = datetime.now(UTC)
    apply_retention(catalog, Retention(keep_last=1), now)  # no backups at all: WAL may await the first one
    assert len(archive.segments()) == 3
    catalog.write_manifest(_physical_manifest("20261103T020000Z", now, WalSegment(1, 0, 4)))
    apply_retention(catalog, Retention(keep_last=1), now, dry_run=True)
    assert len(archive.segments()) == 3
    apply_retention(catalog, Retention(keep_last=1), now)
    assert [s.segment.seg for s in archive.segments()] == [4]


def test_an_unreadable_manifest_stops_wal_retention(fs_storage: FilesystemStorage, tmp_path: Path) -> None:
    archive = WalArchive(fs_storage, compression=Compression(algorithm="none"))
    for n in range(2, 6):
        path = tmp_path / WalSegment(1, 0, n).name
        path.write_bytes(b"x" * 100)
        archive.push(path)
    catalog = Catalog(fs_storage)
    now = datetime.now(UTC)
    catalog.write_manifest(_physical_manifest("20261101T020000Z", now - timedelta(days=1), WalSegment(1, 0, 2)))
    catalog.write_manifest(_physical_manifest("20261103T020000Z", now, WalSegment(1, 0, 4)))
    fs_storage.put_bytes("20261101T020000Z/manifest.json", b"{ damaged")  # its backup may still need 02, 03

    apply_retention(catalog, Retention(keep_last=5), now)

    assert [s.segment.seg for s in archive.segments()] == [2, 3, 4, 5]
