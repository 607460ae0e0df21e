"""WAL arithmetic: LSNs, segment names and ranges, checked against PostgreSQL's own conventions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgbackup.runner.catalog.manifest import PhysicalInfo
from pgbackup.runner.restore.pitr import segment_size_of
from pgbackup.runner.wal.xlog import (
    DEFAULT_SEGMENT_SIZE,
    WalSegment,
    XlogError,
    classify,
    format_lsn,
    lsn_of_segment_start,
    next_segment,
    parse_lsn,
    parse_segment_name,
    segment_of,
    segments_between,
    timeline_of,
)

lsns = st.integers(min_value=0, max_value=(1 << 64) - 1)
timelines = st.integers(min_value=1, max_value=0xFFFFFFFF)
seg_sizes = st.sampled_from([1 << n for n in range(20, 31)])


def test_parse_and_format_lsn_like_postgresql() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(0) == "0/0"
    assert parse_lsn("0/3000028") == 0x3000028


@pytest.mark.parametrize("bad", ["", "16", "16/", "/1", "G/1", "1/2/3", "123456789/0"])
def test_malformed_lsn_is_refused(bad: str) -> None:
    with pytest.raises(XlogError):
        parse_lsn(bad)


@given(lsns)
def test_lsn_round_trip(lsn: int) -> None:
    assert parse_lsn(format_lsn(lsn)) == lsn


def test_segment_of_matches_pg_walfile_name() -> None:
    # SELECT pg_walfile_name('16/B374D848') on timeline 1, 16 MiB segments -> 0000000100000016000000B3
    assert segment_of(parse_lsn("16/B374D848"), 1).name == "0000000100000016000000B3"
    # 64 MiB segments (initdb --wal-segsize=64): 4 segments per 16... B3 // 4 = 0x2C
    assert segment_of(parse_lsn("16/B374D848"), 1, 64 * 1024 * 1024).name == "00000001000000160000002C"


def test_names_and_kinds() -> None:
    seg = parse_segment_name("000000020000000A000000F3")
    assert seg == WalSegment(2, 0xA, 0xF3)
    assert parse_segment_name("000000020000000A000000F3.partial") == seg
    assert parse_segment_name("000000020000000A000000F3.00000028.backup") == seg
    assert classify("000000020000000A000000F3") == "segment"
    assert classify("000000020000000A000000F3.partial") == "partial"
    assert classify("00000002.history") == "history"
    assert classify("000000020000000A000000F3.00000028.backup") == "backup_label"
    for other in ("000000020000000a000000f3", "00000000.history", "x.history", "archive_status", ".partial-ab12"):
        assert classify(other) == "unknown"
    assert timeline_of("00000003.history") == 3
    with pytest.raises(XlogError):
        parse_segment_name("00000002.history")


def test_next_segment_wraps_into_the_next_log() -> None:
    assert next_segment(WalSegment(1, 0xA, 0xFF)) == WalSegment(1, 0xB, 0)
    assert next_segment(WalSegment(1, 0xA, 0x3F), 64 * 1024 * 1024) == WalSegment(1, 0xB, 0)


@given(lsns, timelines, seg_sizes)
def test_segment_of_contains_the_lsn(lsn: int, timeline: int, seg_size: int) -> None:
    seg = segment_of(lsn, timeline, seg_size)
    start = lsn_of_segment_start(seg, seg_size)
    assert start <= lsn < start + seg_size
    assert seg.timeline == timeline
    assert parse_segment_name(seg.name) == seg
    assert len(seg.name) == 24 and classify(seg.name) == "segment"


@given(st.integers(min_value=0, max_value=(1 << 33) - 2), timelines, seg_sizes)
def test_next_segment_starts_where_the_previous_ends(number: int, timeline: int, seg_size: int) -> None:
    seg = segment_of(number * seg_size, timeline, seg_size)
    following = next_segment(seg, seg_size)
    assert lsn_of_segment_start(following, seg_size) == lsn_of_segment_start(seg, seg_size) + seg_size
    assert following.name > seg.name  # names sort in WAL order within a timeline


@given(st.integers(min_value=0, max_value=(1 << 40) - 601), st.integers(min_value=0, max_value=600), timelines)
def test_segments_between_is_inclusive_and_contiguous(start: int, length: int, timeline: int) -> None:
    a = segment_of(start * DEFAULT_SEGMENT_SIZE, timeline)
    b = segment_of((start + length) * DEFAULT_SEGMENT_SIZE, timeline)
    between = segments_between(a, b)
    assert len(between) == length + 1
    assert between[0] == a and between[-1] == b
    assert all(next_segment(x) == y for x, y in zip(between, between[1:]))
    assert segments_between(b, a) == ([] if length else [a])


def test_segment_fields_are_checked() -> None:
    with pytest.raises(XlogError):
        WalSegment(0, 1, 1)
    with pytest.raises(XlogError):
        WalSegment(1, 1 << 32, 1)


def test_segment_size_is_inferred_from_a_backups_start() -> None:
    from pgbackup.runner.wal.xlog import infer_segment_size

    # pg_basebackup on a 64 MiB cluster: START WAL LOCATION: 0/8000028 (file 000000010000000000000002)
    assert infer_segment_size(parse_lsn("0/8000028"), 1, "000000010000000000000002") == 64 * 1024 * 1024
    assert infer_segment_size(parse_lsn("0/2000028"), 1, "000000010000000000000002") == DEFAULT_SEGMENT_SIZE
    assert infer_segment_size(parse_lsn("0/28"), 1, "000000010000000000000000") is None  # every size fits
    assert infer_segment_size(parse_lsn("0/2000028"), 1, "000000010000000000000009") is None


@given(st.integers(min_value=1 << 32, max_value=(1 << 62)), timelines, seg_sizes)
def test_segment_size_inference_is_never_wrong(lsn: int, timeline: int, seg_size: int) -> None:
    from pgbackup.runner.wal.xlog import infer_segment_size

    inferred = infer_segment_size(lsn, timeline, segment_of(lsn, timeline, seg_size).name)
    assert inferred in (seg_size, None)


def test_pitr_reads_the_segment_size_of_a_base_backup_that_starts_a_log() -> None:
    """A base backup of a default (16 MiB) server that starts in the first MiB of a log fits every segment size;
    PITR plans with 16 MiB segments then, as WAL status and retention do (it took 1 MiB, the smallest fitting
    size, and named the WAL range in 1 MiB segments)."""
    class Base:
        physical = PhysicalInfo(start_lsn="1/28", stop_lsn="1/2000100", timeline=1,
                                start_wal_segment="000000010000000100000000",
                                stop_wal_segment="000000010000000100000002")

    assert segment_size_of(Base()) == DEFAULT_SEGMENT_SIZE  # type: ignore[arg-type]
