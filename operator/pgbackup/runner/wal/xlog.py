"""WAL arithmetic as plain functions (barman's xlog.py): LSNs, segment names, ranges. Pure: no I/O.

A segment name is 24 hex digits: timeline (8), "log" (8) and segment-within-log (8). A log is 4 GiB of WAL
(2**32 bytes), so the number of segments per log depends on the cluster's wal_segment_size (16 MiB by default:
segments 00000000..000000FF). Positions across timelines are comparable: a new timeline continues the WAL
position of its parent, only the name's first 8 digits change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENT_SIZES = tuple(1 << power for power in range(20, 31))  # what initdb --wal-segsize allows (1 MiB..1 GiB)
LOG_SIZE = 1 << 32  # bytes of WAL per "log" (the middle 8 hex digits of a segment name)

FileKind = Literal["segment", "partial", "history", "backup_label", "unknown"]

_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL = re.compile(r"^([0-9A-F]{24})\.partial$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_BACKUP_LABEL = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class XlogError(ValueError):
    """A malformed LSN or WAL file name."""


def check_segment_size(seg_size: int) -> int:
    """wal_segment_size must be a power of two between 1 MiB and 1 GiB (initdb --wal-segsize)."""
    if seg_size < 1 << 20 or seg_size > 1 << 30 or seg_size & (seg_size - 1):
        raise XlogError(f"WAL segment size {seg_size} is not a power of two between 1 MiB and 1 GiB")
    return seg_size


def segments_per_log(seg_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return LOG_SIZE // check_segment_size(seg_size)


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> 0x16B374D848."""
    match = _LSN.match(text.strip())
    if match is None:
        raise XlogError(f"{text!r} is not an LSN (expected two hex numbers like '16/B374D848')")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    """0x16B374D848 -> '16/B374D848' (PostgreSQL's %X/%X)."""
    if lsn < 0 or lsn >= 1 << 64:
        raise XlogError(f"LSN {lsn} is outside 0..2**64-1")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True, order=True)
class WalSegment:
    """One WAL segment file. Ordering is (timeline, log, seg); use .position to compare across timelines."""

    timeline: int
    log: int
    seg: int

    def __post_init__(self) -> None:
        for field, value in (("timeline", self.timeline), ("log", self.log), ("seg", self.seg)):
            if not 0 <= value <= 0xFFFFFFFF:
                raise XlogError(f"WAL segment {field} {value} is outside 0..0xFFFFFFFF")
        if self.timeline == 0:
            raise XlogError("WAL timeline 0 does not exist (timelines start at 1)")

    @property
    def name(self) -> str:
        return f"{self.timeline:08X}{self.log:08X}{self.seg:08X}"

    @property
    def position(self) -> tuple[int, int]:
        """Where the segment lies in the WAL stream, whatever the timeline."""
        return self.log, self.seg

    def number(self, seg_size: int = DEFAULT_SEGMENT_SIZE) -> int:
        """The segment's absolute number (segment start LSN // seg_size)."""
        return self.log * segments_per_log(seg_size) + self.seg

    def __str__(self) -> str:
        return self.name


def segment_from_number(timeline: int, number: int, seg_size: int = DEFAULT_SEGMENT_SIZE) -> WalSegment:
    per_log = segments_per_log(seg_size)
    return WalSegment(timeline, number // per_log, number % per_log)


def parse_segment_name(name: str) -> WalSegment:
    """The segment a WAL file belongs to: '000000010000000A000000F3', also with '.partial' or a
    '.<offset>.backup' suffix. A '.history' file has no segment (XlogError)."""
    base = name.rsplit("/", 1)[-1]
    for pattern in (_PARTIAL, _BACKUP_LABEL):
        match = pattern.match(base)
        if match:
            base = match.group(1)
            break
    match = _SEGMENT.match(base)
    if match is None:
        raise XlogError(f"{name!r} is not a WAL segment name (24 upper-case hex digits)")
    return WalSegment(*(int(part, 16) for part in match.groups()))


def classify(name: str) -> FileKind:
    """What kind of file PostgreSQL archives under this name."""
    base = name.rsplit("/", 1)[-1]
    if _SEGMENT.match(base):
        return "segment"
    if _PARTIAL.match(base):
        return "partial"
    if _HISTORY.match(base) and base[:8] != "00000000":
        return "history"
    if _BACKUP_LABEL.match(base):
        return "backup_label"
    return "unknown"


def timeline_of(name: str) -> int:
    """The timeline of any WAL file name (segment, partial, history, backup label)."""
    kind = classify(name)
    if kind == "unknown":
        raise XlogError(f"{name!r} is not a WAL file name (segment, .partial, .history or .backup)")
    return int(name.rsplit("/", 1)[-1][:8], 16)


def segment_of(lsn: int, timeline: int, seg_size: int = DEFAULT_SEGMENT_SIZE) -> WalSegment:
    """The segment holding the byte at `lsn` (XLByteToSeg)."""
    return segment_from_number(timeline, lsn // check_segment_size(seg_size), seg_size)


def wal_segment_name(timeline: int, lsn: int, seg_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The name of the segment holding `lsn` (what pg_walfile_name answers)."""
    return segment_of(lsn, timeline, seg_size).name


def lsn_of_segment_start(seg: WalSegment, seg_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return seg.number(seg_size) * seg_size


def next_segment(seg: WalSegment, seg_size: int = DEFAULT_SEGMENT_SIZE) -> WalSegment:
    return segment_from_number(seg.timeline, seg.number(seg_size) + 1, seg_size)


def segments_between(a: WalSegment, b: WalSegment, seg_size: int = DEFAULT_SEGMENT_SIZE) -> list[WalSegment]:
    """[a, a+1, ..., b] inclusive, on a's timeline (empty when b lies before a)."""
    first, last = a.number(seg_size), b.number(seg_size)
    return [segment_from_number(a.timeline, number, seg_size) for number in range(first, last + 1)]


def infer_segment_size(lsn: int, timeline: int, name: str) -> int | None:
    """The wal_segment_size under which `lsn` lies in segment `name` (e.g. a base backup's start LSN and start
    segment); None when no size or several fit (an LSN in the first MiB of a log fits every size)."""
    fitting = [size for size in SEGMENT_SIZES if segment_of(lsn, timeline, size).name == name]
    return fitting[0] if len(fitting) == 1 else None


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"
