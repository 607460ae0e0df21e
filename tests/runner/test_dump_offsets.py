"""A custom-format dump written to a pipe (as every logical backup is) gets the data offsets `pg_dump -f FILE`
would have recorded, once it is staged for `pg_restore -j`: the same offsets, byte for byte, on PostgreSQL 15 and
18, with large objects, an empty table and a TOC longer than the first read; anything else is left as it was.
Real pg_dump and pg_restore.
"""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest

from pgbackup.runner.postgres.archive_toc import OFFSET_NOT_SET, OFFSET_SET, read_toc
from pgbackup.runner.restore.dump_offsets import ZeroRuns, fill_in_offsets
from tests.fixtures.postgres import PgServer, load_sample, table_digest

EXTRAS = """
CREATE TABLE IF NOT EXISTS empty_one (id int);
DO $$ BEGIN EXECUTE format('COMMENT ON TABLE empty_one IS %L', repeat('a TOC longer than 1 MiB ', 100000)); END $$;
SELECT lo_from_bytea(0, convert_to(repeat('large object ' || i, 3000), 'UTF8')) FROM generate_series(1, 3) AS i
 WHERE (SELECT count(*) FROM pg_largeobject_metadata) = 0;
"""


def dump(server: PgServer, dbname: str, out: Path, *, to_pipe: bool, compress: str = "0") -> Path:
    args = [str(server.bindir / "pg_dump"), "-Fc", "-Z", compress, "-d", dbname]
    if to_pipe:  # through a pipe, as the backup pipeline reads it (a file as stdout would be seekable)
        done = subprocess.run(args, env=server.env(dbname), stdout=subprocess.PIPE, check=True)
        out.write_bytes(done.stdout)
    else:
        subprocess.run([*args, "-f", str(out)], env=server.env(dbname), check=True)
    return out


def offsets(path: Path) -> dict[int, tuple[int, bytes]]:
    data = path.read_bytes()
    toc = read_toc(data)
    return {e.dump_id: (e.data_state, data[e.offset_at + 1:e.offset_at + 1 + toc.off_size]) for e in toc.entries}


def runs_of(path: Path, chunk: int = 7919) -> ZeroRuns:
    """The zero runs as staging notes them: chunk by chunk (an odd size, so that runs cross chunk borders)."""
    runs = ZeroRuns()
    data = path.read_bytes()
    for start in range(0, len(data), chunk):
        runs.feed(data[start:start + chunk])
    return runs


def fill(path: Path) -> bool:
    return fill_in_offsets(path, runs_of(path))


@pytest.fixture
def source(pg_server: PgServer) -> tuple[PgServer, str]:
    db = load_sample(pg_server, "offsets_sample")  # its own database: the large objects stay out of the others
    with pg_server.connect(db) as conn:
        conn.execute(EXTRAS)
    return pg_server, db


def test_a_piped_dump_gets_the_offsets_pg_dump_writes_into_a_file(source: tuple[PgServer, str],
                                                                  tmp_path: Path) -> None:
    server, db = source
    piped = dump(server, db, tmp_path / "piped.dump", to_pipe=True)
    written = dump(server, db, tmp_path / "file.dump", to_pipe=False)
    before = offsets(piped)
    assert read_toc(piped.read_bytes()).end > 1024 * 1024, "the TOC is longer than the first read"
    assert {state for state, _ in before.values()} >= {OFFSET_NOT_SET}, "a piped dump records no offsets"

    assert fill(piped)

    assert offsets(piped) == offsets(written)
    assert OFFSET_SET in {state for state, _ in offsets(piped).values()}
    listing = subprocess.run([str(server.bindir / "pg_restore"), "-l", str(piped)], capture_output=True, text=True)
    assert listing.returncode == 0 and "BLOBS" in listing.stdout, listing.stderr


def test_the_dump_with_offsets_restores_in_parallel_with_every_row(source: tuple[PgServer, str],
                                                                   tmp_path: Path) -> None:
    server, db = source
    piped = dump(server, db, tmp_path / "piped.dump", to_pipe=True)
    assert fill(piped)
    target = "offsets_restored"
    server.query(f'DROP DATABASE IF EXISTS "{target}"')
    server.query(f'CREATE DATABASE "{target}"')

    done = subprocess.run([str(server.bindir / "pg_restore"), "-j", "2", "--exit-on-error", "-d", target,
                           str(piped)], env=server.env(target), capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert table_digest(server, target) == table_digest(server, db)
    assert server.query("SELECT count(*) FROM pg_largeobject_metadata", target) == [(3,)]


@pytest.mark.parametrize("kind", ["written to a file", "compressed by pg_dump", "not a dump"])
def test_other_files_are_left_as_they_were(source: tuple[PgServer, str], tmp_path: Path, kind: str) -> None:
    server, db = source
    path = tmp_path / "other.dump"
    if kind == "written to a file":
        dump(server, db, path, to_pipe=False)
    elif kind == "compressed by pg_dump":
        dump(server, db, path, to_pipe=True, compress="1")
    else:
        path.write_bytes(b"-- a plain SQL script\nSELECT 1;\n")
    before = path.read_bytes()

    assert not fill(path)

    assert path.read_bytes() == before


def test_a_damaged_block_leaves_the_file_as_it_was(source: tuple[PgServer, str], tmp_path: Path) -> None:
    server, db = source
    piped = dump(server, db, tmp_path / "piped.dump", to_pipe=True)
    data = bytearray(piped.read_bytes())
    del data[-200:]  # a truncated last block: its end is not where the file ends
    piped.write_bytes(bytes(data))

    assert not fill(piped)

    assert piped.read_bytes() == bytes(data)


def test_zero_runs_are_found_whatever_the_chunks_the_staging_writes() -> None:
    """Every run of five or more zero bytes, exactly, however the stream is cut (runs across chunk borders)."""
    rng = random.Random(15)
    for _ in range(2000):
        data = bytes(rng.choice(b"\0\0\0\0\1\2") for _ in range(rng.randint(0, 300)))
        expected = [(m.start(), m.end()) for m in re.finditer(rb"\0{5,}", data)]
        runs, position = ZeroRuns(), 0
        while position < len(data):
            size = rng.randint(1, 20)
            runs.feed(data[position:position + size])
            position += size
        assert list(zip(runs.starts, runs.ends)) == expected, data
