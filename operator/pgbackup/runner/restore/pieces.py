"""Cutting a custom-format dump into pieces of rows while it is staged, for loading them side by side
(pgbackup.runner.restore.parallel_load).

The dump's TOC comes first; then each table's data block, in TOC order: its header (type, entry id), its rows in
chunks (a zero sign byte and a length, then that many bytes of COPY text ending in a row's newline: one row per
chunk from pg_dump, several from a directory-format dump read as a custom one) and a zero length. COPY text has no
zero byte, so a chunk boundary is a newline followed by a chunk header that checks out, and a block ends at its first run of five zero bytes (found as in
pgbackup.runner.restore.dump_offsets). A piece is a run of whole chunks of one block; with the TOC and the block's
header before it and a zero length after it, it is a dump `pg_restore -L` loads on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pgbackup.runner.postgres.archive_toc import (INT_SIZE, OFFSET_NOT_SET, OFFSET_SET, TOC_READ_LIMIT, EndsEarly,
                                                 NotApplicable, Toc, TocEntry, data_block_header, read_toc)
from pgbackup.runner.restore.dump_offsets import BLOCK_END, ZeroRuns

SEARCH_WINDOW = 4 * 1024 * 1024
"""How far past a piece's intended end its row boundary is looked for (and how much must be staged beyond it)."""
_CHECKED_ROWS = 8
"""Rows checked after a candidate boundary."""
_BLOCK_HEADER = 1 + 1 + INT_SIZE
"""Type byte, then the entry's id (sign byte and int)."""


class LayoutUnexpected(Exception):
    """The data is not laid out as the TOC said, found once loading may have begun."""


@dataclass(frozen=True)
class Piece:
    """Rows of one table's data block: the chunks between `start` and `end` in the staged file."""

    entry: TocEntry
    start: int
    end: int

    @property
    def header(self) -> bytes:
        """The block's header (its type and the entry's id), put before the chunks."""
        return data_block_header(self.entry.dump_id)


@dataclass(frozen=True)
class Layout:
    """What the dump's TOC says, once it has arrived whole."""

    toc: Toc
    head: bytes
    """The dump's header and TOC: what each pg_restore run reads first."""


class DumpCutter:
    """`attach` it to the file being staged, `feed` it each chunk once written there; it tells which pieces and
    which whole tables have been staged. `layout` is the TOC once read, `unusable` why the dump cannot be cut
    (large objects, INSERT statements, data compressed by pg_dump, offsets already set)."""

    def __init__(self, piece_size: int) -> None:
        self._piece_size = piece_size
        self._fd = -1
        self._path = Path()
        self._head = bytearray()
        self._written = 0
        self.runs = ZeroRuns()
        """The staged file's runs of zero bytes (for dump_offsets when it is restored from the file)."""
        self.layout: Layout | None = None
        self.unusable: str | None = None
        self._blocks: list[TocEntry] = []
        self._next_block = 0
        self._position = 0
        """Where the next block starts (or the current one, while it is cut)."""
        self._cut: int | None = None
        """Where the current block's next piece starts; None between blocks."""

    def attach(self, path: Path) -> None:
        self._path = path

    def feed(self, chunk: bytes) -> tuple[list[Piece], list[TocEntry]]:
        """The pieces now staged whole, and the tables whose data is all staged (cut into those pieces and the
        ones before); raises LayoutUnexpected."""
        self.runs.feed(chunk)
        self._written += len(chunk)
        if self.layout is None and self.unusable is None:
            self._read_toc(chunk)
        if self.layout is None:
            return [], []
        return self._walk()

    def check_end(self, size: int) -> None:
        """Once all `size` bytes are staged: every block was found, and the last one ends the file."""
        if self._next_block < len(self._blocks) or self._position != size:
            raise LayoutUnexpected(f"the data blocks end at {self._position}, the file at {size}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _read_toc(self, chunk: bytes) -> None:
        self._head += chunk
        try:
            toc = read_toc(bytes(self._head))
        except EndsEarly:
            if len(self._head) >= TOC_READ_LIMIT:
                self._unusable("its TOC is longer than the runner reads")
            return
        except NotApplicable as exc:
            self._unusable(str(exc))
            return
        blocks = [e for e in toc.entries if e.data_state == OFFSET_NOT_SET]
        if any(e.data_state == OFFSET_SET for e in toc.entries):
            self._unusable("the dump has data offsets already")
        elif not all(e.desc == "TABLE DATA" and e.copies for e in blocks):
            self._unusable("the dump holds data other than COPY rows (large objects, INSERT statements)")
        else:
            self.layout = Layout(toc, bytes(self._head[:toc.end]))
            self._head = bytearray()
            self._blocks = blocks
            self._position = toc.end
            self._fd = os.open(self._path, os.O_RDONLY)

    def _unusable(self, reason: str) -> None:
        self.unusable = reason
        self._head = bytearray()

    def _walk(self) -> tuple[list[Piece], list[TocEntry]]:
        pieces: list[Piece] = []
        staged: list[TocEntry] = []
        while self._next_block < len(self._blocks):
            entry = self._blocks[self._next_block]
            if self._cut is None:
                if self._written < self._position + _BLOCK_HEADER:
                    break
                if os.pread(self._fd, _BLOCK_HEADER, self._position) != data_block_header(entry.dump_id):
                    raise LayoutUnexpected(f"the data of entry {entry.dump_id} is not at {self._position}")
                self._cut = self._position + _BLOCK_HEADER
            end = self.runs.block_end_at_or_after(self._cut)
            if end is not None:
                if end > self._cut:
                    pieces.append(Piece(entry, self._cut, end))
                staged.append(entry)
                self._next_block += 1
                self._position, self._cut = end + len(BLOCK_END), None
                continue
            if self.runs.overflow:
                raise LayoutUnexpected("too many runs of zero bytes to tell the data blocks apart")
            while self._written - self._cut >= self._piece_size + SEARCH_WINDOW:
                cut = self._row_boundary(self._cut + self._piece_size)
                if cut is None:
                    break  # rows longer than the window: this block is not cut further
                pieces.append(Piece(entry, self._cut, cut))
                self._cut = cut
            break
        return pieces, staged

    def _row_boundary(self, position: int) -> int | None:
        """The first chunk boundary at or after `position`."""
        window = os.pread(self._fd, SEARCH_WINDOW, position)
        at = window.find(b"\n\0")
        while at >= 0:
            if _rows_follow(window, at + 1):
                return position + at + 1
            at = window.find(b"\n\0", at + 1)
        return None


def _rows_follow(window: bytes, at: int) -> bool:
    """Whether chunks of whole COPY rows start at `at`, for a few chunks or up to the block's end (pg_dump writes a
    row per chunk; a directory-format dump read as a custom one has several rows in each,
    pgbackup.runner.restore.directory_dump)."""
    for _ in range(_CHECKED_ROWS):
        if at + 5 > len(window) or window[at] != 0:
            return False
        length = int.from_bytes(window[at + 1:at + 5], "little")
        if length == 0:
            return True
        end = at + 5 + length
        if end > len(window):
            return False
        row = window[at + 5:end]
        if row[-1] != 0x0A or row.find(b"\0") >= 0:
            return False
        at = end
    return True
