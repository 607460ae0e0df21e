"""A directory-format dump's tar, in the order backups write it (toc.dat, then the data files in TOC order), is read
as a custom-format dump: pg_restore makes the same SQL of it as of the directory, on PostgreSQL 15 and 18, with rows
longer than a chunk and an empty table; a tar in another order, or with large objects, is refused before anything is
produced, and data files out of TOC order fail naming the file. Real pg_dump and pg_restore.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest

from pgbackup.runner.backup.logical import tar_members
from pgbackup.runner.postgres.archive_toc import FORMAT_CUSTOM, OFFSET_NO_DATA, OFFSET_NOT_SET, read_toc
from pgbackup.runner.restore.directory_dump import ROWS_CHUNK, DirectoryAsCustom, NotOrdered
from pgbackup.runner.restore.pieces import LayoutUnexpected
from tests.fixtures.postgres import PgServer, load_sample

EXTRAS = f"""
CREATE TABLE IF NOT EXISTS long_rows AS SELECT i AS id, repeat(md5(i::text), {ROWS_CHUNK // 16}) AS body
 FROM generate_series(1, 5) AS i;
CREATE TABLE IF NOT EXISTS empty_one (id int);
"""


def directory_dump(server: PgServer, dbname: str, out: Path) -> Path:
    """As a backup runs it: uncompressed (the pipeline compresses)."""
    subprocess.run([str(server.bindir / "pg_dump"), "-Fd", "-Z", "0", "-f", str(out), "-d", dbname],
                   env=server.env(dbname), check=True)
    return out


def tar_of(directory: Path, members: list[str]) -> bytes:
    listing = directory.parent / "members"
    listing.write_text("".join(f"{member}\n" for member in members))
    return subprocess.run(["tar", "-C", str(directory), "-cf", "-", "--verbatim-files-from", "-T", str(listing)],
                          stdout=subprocess.PIPE, check=True).stdout


class Stream(io.BytesIO):
    """The object's bytes; `ended` once read to the end (where the pipeline verifies its checksum)."""

    ended = False

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.ended = self.ended or not data
        return data


def as_custom(tar: bytes, size: int = 7919) -> tuple[bytes, Stream]:
    stream = Stream(tar)
    converter = DirectoryAsCustom(stream)
    out = bytearray()
    while data := converter.read(size):
        assert len(data) <= size
        out += data
    return bytes(out), stream


def sql_of(server: PgServer, dump: Path) -> str:
    """The SQL pg_restore makes of `dump`, less the random key of its \\restrict lines (new in each run)."""
    sql = subprocess.run([str(server.bindir / "pg_restore"), "-f", "-", str(dump)], stdout=subprocess.PIPE,
                         check=True).stdout.decode()
    return re.sub(r"^\\(un)?restrict .*$", r"\\\1restrict", sql, flags=re.MULTILINE)


@pytest.fixture
def source(pg_server: PgServer) -> tuple[PgServer, str]:
    db = load_sample(pg_server, "directory_sample")
    with pg_server.connect(db) as conn:
        conn.execute(EXTRAS)
    return pg_server, db


def test_the_tar_a_backup_writes_reads_as_a_custom_dump_with_the_same_sql(source: tuple[PgServer, str],
                                                                         tmp_path: Path) -> None:
    server, db = source
    directory = directory_dump(server, db, tmp_path / "dump")
    members = tar_members(directory)
    assert members[0] == "toc.dat" and sorted(members) == sorted(p.name for p in directory.iterdir())

    custom, stream = as_custom(tar_of(directory, members))

    (tmp_path / "converted.dump").write_bytes(custom)
    assert sql_of(server, tmp_path / "converted.dump") == sql_of(server, directory)
    assert "COPY public.long_rows" in sql_of(server, directory)
    toc = read_toc(custom)
    assert toc.format == FORMAT_CUSTOM
    assert {e.data_state for e in toc.entries} == {OFFSET_NOT_SET, OFFSET_NO_DATA}
    assert stream.ended


def test_a_tar_that_does_not_start_with_its_toc_is_refused_before_anything_is_produced(
        source: tuple[PgServer, str], tmp_path: Path) -> None:
    server, db = source
    directory = directory_dump(server, db, tmp_path / "dump")
    old_layout = tar_of(directory, ["."])  # as backups wrote it before: `tar -cf - .`, "./" first

    with pytest.raises(NotOrdered, match="not 'toc.dat'"):
        DirectoryAsCustom(io.BytesIO(old_layout)).read(1 << 20)


def test_a_dump_with_large_objects_is_refused_before_anything_is_produced(pg15: PgServer, tmp_path: Path) -> None:
    db = load_sample(pg15, "directory_lo")
    with pg15.connect(db) as conn:
        if not conn.execute("SELECT 1 FROM pg_largeobject_metadata").fetchone():
            conn.execute("SELECT lo_from_bytea(0, convert_to(repeat('large object', 1000), 'UTF8'))")
    directory = directory_dump(pg15, db, tmp_path / "dump")

    with pytest.raises(NotOrdered, match="large objects"):
        DirectoryAsCustom(io.BytesIO(tar_of(directory, tar_members(directory)))).read(1 << 20)


def test_data_files_out_of_toc_order_fail_naming_the_file_expected(pg15: PgServer, tmp_path: Path) -> None:
    directory = directory_dump(pg15, load_sample(pg15, "directory_sample"), tmp_path / "dump")
    first, *data = tar_members(directory)
    assert len(data) > 1

    with pytest.raises(LayoutUnexpected, match=f"'{data[0]}' .* should come next"):
        as_custom(tar_of(directory, [first, *reversed(data)]))
