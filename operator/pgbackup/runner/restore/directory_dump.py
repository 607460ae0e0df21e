"""A directory-format dump's tar read as the custom-format dump `pg_dump -Fc` would have written to a pipe, so that
a directory-format backup is restored as a custom-format one is: loaded while it is staged, its big tables split
across the jobs (pgbackup.runner.restore.parallel_load).

Backups write the tar in the order this needs (pgbackup.runner.backup.logical.tar_members): toc.dat first, then
each table's data file in TOC order; a tar that does not start with toc.dat (a backup made before that order was
kept) is refused before anything is produced (NotOrdered), and so is one with large objects. The two formats share
the header and the TOC but for the header's format byte and each entry's last field: a data offset (not set) in a
custom archive, a file name in a directory one (pgbackup.runner.postgres.archive_toc). A data file holds the bytes
`pg_dump -Fc` puts in the entry's data block, where they come in chunks, each after its length: here one chunk per
some ROWS_CHUNK bytes of whole rows.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import IO, BinaryIO

from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.postgres.archive_toc import (FORMAT_AT, FORMAT_CUSTOM, FORMAT_DIRECTORY, OFFSET_NO_DATA,
                                                 OFFSET_NOT_SET, TOC_READ_LIMIT, NotApplicable, Toc, archive_int,
                                                 data_block_header, read_toc)
from pgbackup.runner.restore.dump_offsets import BLOCK_END
from pgbackup.runner.restore.pieces import LayoutUnexpected

TOC_MEMBER = "toc.dat"
ROWS_CHUNK = 64 * 1024
"""About how many bytes of rows go into one chunk: few chunk headers, and chunks small enough that
pgbackup.runner.restore.pieces finds a row boundary to cut at near any point."""


class NotOrdered(Exception):
    """The tar is not one read here (toc.dat not first, large objects, a TOC the runner cannot read); raised by the
    first read, before anything is produced."""


class DirectoryAsCustom:
    """Reading it gives the custom-format dump; `stream` (the tar) is read to its end, so that whatever verifies
    it there (the object's checksum) does."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._parts = self._convert()
        self._pending = b""

    def read(self, size: int = -1, /) -> bytes:
        while not self._pending:
            part = next(self._parts, None)
            if part is None:
                return b""
            self._pending = part
        if 0 <= size < len(self._pending):
            out, self._pending = self._pending[:size], self._pending[size:]
            return out
        out, self._pending = self._pending, b""
        return out

    def _convert(self) -> Iterator[bytes]:
        archive = tarfile.open(fileobj=self._stream, mode="r|", bufsize=CHUNK)
        members = iter(archive)
        first = next(members, None)
        if first is None or first.name != TOC_MEMBER or not first.isreg() or first.size > TOC_READ_LIMIT:
            raise NotOrdered(f"the tar starts with {first.name if first else 'nothing'!r}, not {TOC_MEMBER!r}")
        toc_file = archive.extractfile(first)
        assert toc_file is not None  # a regular file
        head = toc_file.read()
        try:
            toc = read_toc(head, formats=(FORMAT_DIRECTORY,))
        except NotApplicable as exc:
            raise NotOrdered(f"its TOC is not one this runner reads: {exc}") from exc
        data = [entry for entry in toc.entries if entry.data_state == OFFSET_NOT_SET]
        if any(not entry.filename.endswith(".dat") for entry in data):
            raise NotOrdered("it holds large objects")
        yield custom_head(head, toc)
        for entry in data:
            member = next(members, None)
            if member is None or member.name != entry.filename or not member.isreg():
                found = f"{member.name!r}" if member else "the end of the tar"
                raise LayoutUnexpected(f"the data file {entry.filename!r} of entry {entry.dump_id} should come next "
                                       f"in the tar, but {found} does")
            rows = archive.extractfile(member)
            assert rows is not None
            yield data_block_header(entry.dump_id)
            yield from _chunks(rows)
            yield BLOCK_END
        extra = next(members, None)
        if extra is not None:
            raise LayoutUnexpected(f"tar member {extra.name!r} follows the last data file")
        archive.close()
        while self._stream.read(CHUNK):
            pass


def custom_head(head: bytes, toc: Toc) -> bytes:
    """The header and TOC of the custom-format dump: toc.dat with the custom format byte, and each entry's file
    name replaced with a data offset, not set (as pg_dump -Fc writing to a pipe leaves it)."""
    out = bytearray(head[:FORMAT_AT])
    out.append(FORMAT_CUSTOM)
    position = FORMAT_AT + 1
    for entry in toc.entries:
        out += head[position:entry.offset_at]
        out.append(OFFSET_NOT_SET if entry.filename else OFFSET_NO_DATA)
        out += bytes(toc.off_size)
        position = entry.field_end
    out += head[position:toc.end]
    return bytes(out)


def _chunks(rows: IO[bytes]) -> Iterator[bytes]:
    """A data file's rows in chunks, each after its length (a zero sign byte and the int)."""
    rest = b""
    while data := rows.read(CHUNK):
        data = rest + data if rest else data
        parts: list[bytes] = []
        start = 0
        while (stop := _row_end(data, start)) > 0:
            parts += (archive_int(stop - start), data[start:stop])
            start = stop
        rest = data[start:]
        if parts:
            yield b"".join(parts)
    if rest:  # not COPY text ending in a newline (INSERT statements): a chunk as it is
        yield archive_int(len(rest)) + rest


def _row_end(data: bytes, start: int) -> int:
    """Where a chunk starting at `start` ends: after the last newline in the next ROWS_CHUNK bytes, else after the
    first one beyond (a long row); 0 when there is none."""
    return (data.rfind(b"\n", start, start + ROWS_CHUNK) + 1) or (data.find(b"\n", start + ROWS_CHUNK) + 1)
