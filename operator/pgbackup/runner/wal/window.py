"""What the archived WAL can recover, computed from a listing (no storage needed): the segment size the base
backups imply, gaps, the segments a base backup needs, and the recoverability window."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgbackup.runner.common.timestamps import as_utc
from pgbackup.runner.wal.listing import ArchivedSegment
from pgbackup.runner.wal.xlog import (
    DEFAULT_SEGMENT_SIZE,
    WalSegment,
    XlogError,
    infer_segment_size,
    parse_lsn,
    parse_segment_name,
    segment_from_number,
    segment_of,
)

if TYPE_CHECKING:  # only annotations: the manifest model (pydantic) is not imported by every wal-push
    from pgbackup.runner.catalog.manifest import Manifest


def backups_segment_size(catalog_backups: Sequence[Manifest]) -> int | None:
    """The wal_segment_size a physical base backup's start LSN and start segment name imply (None: none tells)."""
    for manifest in catalog_backups:
        info = manifest.physical
        if info is not None and info.start_wal_segment:
            try:
                inferred = infer_segment_size(parse_lsn(info.start_lsn), info.timeline, info.start_wal_segment)
            except XlogError:
                continue
            if inferred is not None:
                return inferred
    return None


def find_gaps(segments: Sequence[ArchivedSegment],
              seg_size: int = DEFAULT_SEGMENT_SIZE) -> list[tuple[WalSegment, WalSegment]]:
    gaps: list[tuple[WalSegment, WalSegment]] = []
    by_timeline: dict[int, list[int]] = {}
    for archived in segments:
        if not archived.partial:
            by_timeline.setdefault(archived.timeline, []).append(archived.segment.number(seg_size))
    for timeline, numbers in sorted(by_timeline.items()):
        ordered = sorted(set(numbers))
        for before, after in zip(ordered, ordered[1:]):
            if after - before > 1:
                gaps.append((segment_from_number(timeline, before + 1, seg_size),
                             segment_from_number(timeline, after - 1, seg_size)))
    return gaps


def format_gap(gap: tuple[WalSegment, WalSegment]) -> str:
    """'000000010000000A000000F3-000000010000000A000000F5' (status.wal.gaps)."""
    first, last = gap
    return first.name if first == last else f"{first.name}-{last.name}"


def base_backup_segments(physical: Any, seg_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[WalSegment, WalSegment] | None:
    """(start, stop) segment a physical base backup needs, from its recorded names or its LSNs."""
    try:
        start = (parse_segment_name(physical.start_wal_segment) if physical.start_wal_segment
                 else segment_of(parse_lsn(physical.start_lsn), physical.timeline, seg_size))
        stop = (parse_segment_name(physical.stop_wal_segment) if physical.stop_wal_segment
                else segment_of(parse_lsn(physical.stop_lsn), physical.timeline, seg_size))
    except (XlogError, AttributeError, TypeError):
        return None
    return start, stop


def recoverability_window(segments: Sequence[ArchivedSegment], catalog_backups: Sequence[Manifest],
                          seg_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[datetime | None, datetime | None]:
    """first = completion time of the oldest physical base backup whose WAL (start..stop segment) is archived
    without a gap; last = archived_at of the last segment contiguous from such a backup's start on its
    timeline, or of the .partial right after it when there is one (the newest over all such backups)."""
    full = {(s.timeline, s.segment.number(seg_size)): s for s in segments if not s.partial}
    partial = {(s.timeline, s.segment.number(seg_size)): s for s in segments if s.partial}
    first: datetime | None = None
    last: datetime | None = None
    physical = [m for m in catalog_backups if m.method == "physical" and m.physical is not None]
    for manifest in sorted(physical, key=lambda m: as_utc(m.completed_at)):
        needed = base_backup_segments(manifest.physical, seg_size)
        if needed is None:
            continue
        start, stop = needed
        timeline = start.timeline
        number = start.number(seg_size)
        end: ArchivedSegment | None = None
        while (timeline, number) in full:
            end = full[(timeline, number)]
            number += 1
        if end is None or end.segment.number(seg_size) < stop.number(seg_size):
            continue  # the backup's own WAL is incomplete: it cannot be restored to consistency
        tail = partial.get((timeline, number))
        reach = max(end.archived_at, tail.archived_at) if tail is not None else end.archived_at
        if first is None:
            first = as_utc(manifest.completed_at)
        last = reach if last is None else max(last, reach)
    return first, last
