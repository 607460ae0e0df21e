"""Giving a staged custom-format dump the data offsets a streamed one lacks.

`pg_dump -Fc` writing to a pipe (as every logical backup does: the pipeline compresses and uploads its stdout)
cannot go back and record in its table of contents where each table's data starts. `pg_restore -j N` then has
every worker read through the file from the top to find the data it needs, and schedules the tables in TOC order
instead of largest first. Once the dump is staged in a file, this module finds the data blocks and writes their
offsets into the TOC, exactly as `pg_dump -Fc -f FILE` would have: the parallel restore seeks straight to each
table's data, biggest table first.

The TOC is read by pgbackup.runner.postgres.archive_toc; the data blocks are PostgreSQL's custom archive format
(pg_backup_custom.c), versions 1.12 (PostgreSQL 9.0) to 1.16. Anything
unexpected (another version, a block that is not where the TOC says, a compressed dump) leaves the file as it
was: pg_restore then reads it as before, only slower.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pgbackup.runner.common.log import log
from pgbackup.runner.postgres.archive_toc import (BLOCK_DATA, BLOCK_LARGE_OBJECTS, INT_SIZE, OFFSET_NOT_SET,
                                                 OFFSET_SET, TOC_READ_LIMIT, ArchiveReader, EndsEarly, NotApplicable,
                                                 Toc, TocEntry, read_toc)

BLOCK_END = b"\0" * (1 + INT_SIZE)
"""A zero length (sign byte and int): the end of a data block, the only such run of zero bytes in COPY text."""
_NOT_ZERO = re.compile(rb"[^\0]")


@dataclass
class ZeroRuns:
    """The runs of at least len(BLOCK_END) zero bytes in a file, noted while it is written (chunk by chunk, in
    the staging writer's thread, so that finding the data blocks needs no second pass over the file)."""

    limit: int = 100_000
    starts: list[int] = field(default_factory=list, init=False)
    ends: list[int] = field(default_factory=list, init=False)
    overflow: bool = field(default=False, init=False)
    _offset: int = field(default=0, init=False)
    _trailing: int = field(default=0, init=False)
    """Zero bytes at the end of what was fed so far."""

    def feed(self, chunk: bytes) -> None:
        base = self._offset
        first = _NOT_ZERO.search(chunk)
        lead = first.start() if first else len(chunk)
        if self._trailing + lead >= len(BLOCK_END):  # a run across the border, or one the chunk starts with
            self._note(base - self._trailing, base + lead)
        position = chunk.find(BLOCK_END, lead)
        while position >= 0 and not self.overflow:
            stop = _NOT_ZERO.search(chunk, position + len(BLOCK_END))
            end = stop.start() if stop else len(chunk)
            self._note(base + position, base + end)
            position = chunk.find(BLOCK_END, end)
        if lead == len(chunk):
            self._trailing += len(chunk)
        else:
            self._trailing = len(chunk) - len(chunk.rstrip(b"\0"))
        self._offset += len(chunk)

    def _note(self, start: int, end: int) -> None:
        if self.ends and start <= self.ends[-1]:  # the run continues from the chunk before
            self.ends[-1] = max(self.ends[-1], end)
            return
        if len(self.starts) >= self.limit:
            self.overflow = True
            return
        self.starts.append(start)
        self.ends.append(end)

    def block_end_at_or_after(self, position: int) -> int | None:
        """Where the first run of len(BLOCK_END) zero bytes at or after `position` starts."""
        index = bisect.bisect_right(self.ends, position)
        while index < len(self.starts):
            start = max(self.starts[index], position)
            if self.ends[index] - start >= len(BLOCK_END):
                return start
            index += 1
        return None


def data_offsets(read_at: Callable[[int, int], bytes], size: int, toc: Toc, runs: ZeroRuns) -> dict[int, int]:
    """Where each entry's data block starts, checked: the blocks follow the TOC one after the other, in the order
    of its entries with data, each starting with its entry's id, and the last one ends the file."""
    if runs.overflow:
        raise NotApplicable("too many runs of zero bytes to tell the data blocks apart")
    offsets: dict[int, int] = {}
    reader = ArchiveReader(read_at, toc.end)
    for dump_id in (entry.dump_id for entry in toc.entries if entry.data_state == OFFSET_NOT_SET):
        start = reader.pos
        kind, found = reader.byte(), reader.int()
        if kind not in (BLOCK_DATA, BLOCK_LARGE_OBJECTS) or found != dump_id:
            raise NotApplicable(f"the data of entry {dump_id} is not at {start}")
        offsets[dump_id] = start
        if kind == BLOCK_DATA:  # COPY text: no zero byte in it, in chunks each after its length
            end = runs.block_end_at_or_after(reader.pos)
            if end is None:
                raise NotApplicable(f"the data block at {start} has no end")
            reader.pos = end + len(BLOCK_END)
        else:  # large objects, binary: an OID, its chunks and a zero length, each; a zero OID ends the block
            while reader.int() != 0:
                while (length := reader.int()) != 0:
                    reader.pos += length
    if reader.pos != size:
        raise NotApplicable(f"the data blocks end at {reader.pos}, the file at {size}")
    return offsets


def fill_in_offsets(path: Path, runs: ZeroRuns) -> bool:
    """Write the data offsets into the TOC of the custom-format dump at `path` when it has none (it was written
    to a pipe); `runs`: its runs of zero bytes, noted while it was staged. True when it now has them; the file
    is left unchanged when anything is not as expected."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        try:
            toc = _read_toc_of(fd, size)
            if not any(entry.data_state == OFFSET_NOT_SET for entry in toc.entries):
                return False
            offsets = data_offsets(lambda position, n: os.pread(fd, n, position), size, toc, runs)
        except NotApplicable as exc:
            log("restore.offsets_unknown", reason=str(exc))
            return False
        _write_offsets(fd, toc.entries, offsets, toc.off_size)
    finally:
        os.close(fd)
    log("restore.offsets_filled_in", blocks=len(offsets))
    return True


def _read_toc_of(fd: int, size: int) -> Toc:
    """The TOC, reading the file's first MiB, and more only when the TOC is longer."""
    length = 1024 * 1024
    while True:
        head = os.pread(fd, min(size, length), 0)
        try:
            return read_toc(head)
        except EndsEarly:
            if len(head) >= min(size, TOC_READ_LIMIT):
                raise
            length *= 4


def _write_offsets(fd: int, entries: Sequence[TocEntry], offsets: dict[int, int], off_size: int) -> None:
    for entry in entries:
        if entry.dump_id in offsets:
            os.pwrite(fd, bytes([OFFSET_SET]) + offsets[entry.dump_id].to_bytes(off_size, "little"), entry.offset_at)
