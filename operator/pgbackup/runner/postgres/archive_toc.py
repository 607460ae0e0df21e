"""The header and table of contents of pg_dump's custom and directory archive formats (PostgreSQL's
src/bin/pg_dump/pg_backup_archiver.c: WriteHead, WriteToc, WriteInt, WriteStr; the format's own part of each entry:
pg_backup_custom.c and pg_backup_directory.c, _WriteExtraToc), archive versions 1.12 (PostgreSQL 9.0) to 1.16.

Both formats write the same header and entries but for two things: the format byte of the header, and each entry's
last field, which in a custom archive says where its data block is (a flag and an offset) and in a directory one
names its data file (`<dump id>.dat`, or `blobs.toc` / `blobs_<dump id>.toc` for large objects; empty when the entry
has no data). Reading stops at anything unexpected (NotApplicable): another version, another integer size, data
compressed by pg_dump.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
FORMAT_DIRECTORY = 3
"""The header byte of a directory archive (pg_backup.h: archDirectory)."""
FORMAT_AT = len(MAGIC) + 3 + 2
"""Where the header's format byte is: after the magic, the version (3 bytes), the int and offset sizes."""
BLOCK_DATA = 1
BLOCK_LARGE_OBJECTS = 3
OFFSET_NOT_SET = 1
OFFSET_SET = 2
OFFSET_NO_DATA = 3
SECTION_PRE_DATA = 2
SECTION_POST_DATA = 4
INT_SIZE = 4
"""sizeof(int) of the machine pg_dump ran on: 4 on every platform PostgreSQL supports."""
OLDEST = (1, 12)
"""The oldest version read here (PostgreSQL 9.0): sections, tablespaces and dependencies are all present."""
NEWEST = (1, 16)
"""The newest version whose TOC layout is known here (PostgreSQL 17 and 18)."""
TOC_READ_LIMIT = 64 * 1024 * 1024
"""At most this much is read for the header and TOC (a schema of some 100,000 objects)."""


def archive_int(value: int) -> bytes:
    """A non-negative int as an archive writes it (ArchiveReader.int reads it back): a zero sign byte, then INT_SIZE
    bytes, least significant first."""
    return b"\0" + value.to_bytes(INT_SIZE, "little")


def data_block_header(dump_id: int) -> bytes:
    """A custom archive's data block header: its type, then the entry's id."""
    return bytes([BLOCK_DATA]) + archive_int(dump_id)


class NotApplicable(Exception):
    """The bytes are not an archive whose TOC is read here; the reason says why."""


class EndsEarly(NotApplicable):
    """The bytes read end inside the header or TOC."""


@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    data_state: int
    """OFFSET_NOT_SET / OFFSET_SET / OFFSET_NO_DATA (in a directory archive: NOT_SET when it names a file)."""
    offset_at: int
    """Where the entry's format-specific field starts (in a custom archive: the offset's flag byte, then the
    offset)."""
    desc: str = ""
    """What the entry is: TABLE, TABLE DATA, INDEX, CONSTRAINT, ..."""
    namespace: str = ""
    tag: str = ""
    """The object's name (a table's, for TABLE DATA)."""
    section: int = 0
    dependencies: tuple[int, ...] = ()
    copies: bool = False
    """Its data is COPY text (it has a COPY statement), not INSERT statements."""
    field_end: int = 0
    """Where the format-specific field ends (the next entry starts)."""
    filename: str = ""
    """A directory archive's data file of the entry ("" when it has none, or in a custom archive)."""


@dataclass(frozen=True)
class Toc:
    off_size: int
    entries: list[TocEntry]
    end: int
    """Where the TOC ends (in a custom archive: where the first data block starts)."""
    format: int = FORMAT_CUSTOM


class ArchiveReader:
    """Reads the archive's bytes, ints and strings from `position` on (pg_backup_archiver.c: ReadInt, ReadStr)."""

    def __init__(self, read_at: Callable[[int, int], bytes], position: int = 0) -> None:
        self._read_at = read_at
        self.pos = position

    def take(self, n: int) -> bytes:
        chunk = self._read_at(self.pos, n) if n >= 0 else b""
        if len(chunk) != n:
            raise EndsEarly(f"the archive ends early at {self.pos}")
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(INT_SIZE), "little")
        return -value if sign else value

    def str(self) -> bytes | None:
        length = self.int()
        return None if length < 0 else self.take(length)


def read_toc(head: bytes, formats: tuple[int, ...] = (FORMAT_CUSTOM,)) -> Toc:
    """The header and TOC of an archive of one of `formats` from its first bytes (a directory archive: its
    toc.dat); NotApplicable when it is not one read here."""
    reader = ArchiveReader(lambda position, n: head[position:position + n])
    if reader.take(5) != MAGIC:
        raise NotApplicable("not a pg_dump archive")
    major, minor = reader.byte(), reader.byte()
    version = (major, minor, reader.byte())
    if not OLDEST <= version[:2] <= NEWEST:
        raise NotApplicable(f"archive version {major}.{minor} is not one this runner knows")
    if reader.byte() != INT_SIZE:
        raise NotApplicable("the dump was made on a machine with another integer size")
    off_size = reader.byte()
    archive_format = reader.byte()
    if archive_format not in formats:
        raise NotApplicable(f"archive format {archive_format}, not one of {formats}")
    compressed = reader.byte() != 0 if version[:2] >= (1, 15) else reader.int() != 0  # algorithm, or gzip level
    if compressed:
        raise NotApplicable("the dump's data is compressed by pg_dump")
    for _ in range(7):  # the creation time
        reader.int()
    for _ in range(3):  # database name, server and pg_dump versions
        reader.str()
    entries = []
    for _ in range(reader.int()):
        dump_id = reader.int()
        reader.int()  # had a data dumper
        reader.str()  # table OID
        reader.str()  # OID
        tag, desc = _text(reader.str()), _text(reader.str())
        section = reader.int()
        reader.str()  # definition
        reader.str()  # drop statement
        copy_statement = reader.str()
        namespace = _text(reader.str())
        for _ in range(2 if version[:2] >= (1, 14) else 1):  # tablespace, table access method
            reader.str()
        if version[:2] >= (1, 16):
            reader.int()  # relkind
        reader.str()  # owner
        reader.str()  # "false": WITH OIDS
        dependencies = []
        while (dependency := reader.str()) is not None:
            dependencies.append(int(dependency))
        offset_at = reader.pos
        filename = ""
        if archive_format == FORMAT_CUSTOM:
            state = reader.byte()
            if state not in (OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA):
                raise NotApplicable(f"unexpected data offset flag {state} in entry {dump_id}")
            reader.take(off_size)
        else:
            filename = _text(reader.str())
            state = OFFSET_NOT_SET if filename else OFFSET_NO_DATA
        entries.append(TocEntry(dump_id, state, offset_at, desc, namespace, tag, section, tuple(dependencies),
                                bool(copy_statement), reader.pos, filename))
    return Toc(off_size, entries, reader.pos, archive_format)


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")
