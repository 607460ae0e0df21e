"""Loading a custom-format dump while it is staged, its tables cut into pieces at row boundaries and loaded side by
side (pgbackup.runner.restore.parallel_load): the restored database has the same rows, schema and sequence values
as the source on PostgreSQL 15 and 18 (TOC layouts 1.14 and 1.16), with rows whose length bytes look like a
newline or a zero; a dump it does not load (large objects) is left to pg_restore -j; a failing pg_restore stops
the staging and leaves no session behind. Real pg_dump, pg_restore and PostgreSQL; the dump arrives in odd-sized
chunks, as staging writes it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pgbackup.runner.restore import parallel_load, pieces
from pgbackup.runner.restore.parallel_load import ParallelLoad, PgRestoreFailed
from tests.fixtures.postgres import PgServer, load_sample, table_digest

ROWS = """
CREATE TABLE IF NOT EXISTS lengths (id int PRIMARY KEY, filler text NOT NULL);
INSERT INTO lengths SELECT i, repeat('x', i % 300) FROM generate_series(1, 3000) AS i ON CONFLICT DO NOTHING;
CREATE INDEX IF NOT EXISTS lengths_filler ON lengths (filler);
SELECT setval('invoice_no', 42);
"""
"""Rows of every length up to 300 bytes: chunk headers holding 0x0A (a row of 10 bytes) and 0x00 (256)."""
LARGE_OBJECT = "SELECT lo_from_bytea(0, convert_to(repeat('large object', 1000), 'UTF8'))"


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of 4 KiB, their ends looked for within 16 KiB: the sample database is cut into dozens of pieces."""
    monkeypatch.setattr(parallel_load, "MIN_PIECE", 4096)
    monkeypatch.setattr(parallel_load, "PIECES_PER_JOB", 1000)
    monkeypatch.setattr(pieces, "SEARCH_WINDOW", 16384)


def piped_dump(server: PgServer, dbname: str) -> bytes:
    """pg_dump -Fc -Z0 into a pipe, as a logical backup runs it."""
    args = [str(server.bindir / "pg_dump"), "-Fc", "-Z", "0", "-d", dbname]
    return subprocess.run(args, env=server.env(dbname), stdout=subprocess.PIPE, check=True).stdout


def new_database(server: PgServer, name: str) -> str:
    server.query(f'DROP DATABASE IF EXISTS "{name}"')
    server.query(f'CREATE DATABASE "{name}"')
    return name


def count(server: PgServer, dbname: str) -> Callable[[str, str], int]:
    def rows(schema: str, table: str) -> int:
        return int(server.query(f'SELECT count(*) FROM "{schema}"."{table}"', dbname)[0][0])
    return rows


def stage_and_load(server: PgServer, dump: bytes, target: str, scratch: Path, *, jobs: int = 2,
                   chunk: int = 7919) -> tuple[ParallelLoad, dict[str, int] | None]:
    """Write `dump` into scratch chunk by chunk, feeding the loader each as staging does; finish it unless it is
    classic. The loader (closed) and the row counts it took."""
    path = scratch / "dump"
    pg_restore = [str(server.bindir / "pg_restore"), "--no-password", "--exit-on-error", "-d", target]
    load = ParallelLoad(scratch, len(dump), jobs, pg_restore, server.env(target), count(server, target))
    try:
        load.attach(path)
        with path.open("wb") as out:
            for start in range(0, len(dump), chunk):
                out.write(dump[start:start + chunk])
                out.flush()
                load.feed(dump[start:start + chunk])
        return load, None if load.classic else load.finish(len(dump))
    finally:
        load.close()


def schema_of(server: PgServer, dbname: str) -> list[str]:
    done = subprocess.run([str(server.bindir / "pg_dump"), "-s", "-d", dbname], env=server.env(dbname),
                          stdout=subprocess.PIPE, text=True, check=True)
    return [line for line in done.stdout.splitlines() if not line.startswith(("--", "\\restrict", "\\unrestrict"))]


def test_a_dump_loaded_in_pieces_while_staged_has_the_source_rows_schema_and_sequences(
        pg_server: PgServer, tmp_path: Path, small_pieces: None) -> None:
    source = load_sample(pg_server, "pieces_sample")
    with pg_server.connect(source) as conn:
        conn.execute(ROWS)
    dump = piped_dump(pg_server, source)
    target = new_database(pg_server, "pieces_restored")

    load, counts = stage_and_load(pg_server, dump, target, tmp_path)

    assert not load.classic, load.reason
    assert table_digest(pg_server, target) == table_digest(pg_server, source)
    assert schema_of(pg_server, target) == schema_of(pg_server, source)
    sequence = "SELECT last_value, is_called FROM invoice_no"
    assert pg_server.query(sequence, target) == pg_server.query(sequence, source)
    tables = len(table_digest(pg_server, source))
    assert load.pieces > 2 * tables, "the bigger tables were cut into pieces"
    exact = {f"{s}.{t}": int(pg_server.query(f'SELECT count(*) FROM "{s}"."{t}"', source)[0][0])
             for s, t in pg_server.query("SELECT schemaname, tablename FROM pg_tables "
                                         "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", source)}
    assert counts == exact


def test_a_dump_with_large_objects_is_left_to_pg_restore_and_nothing_is_loaded(
        pg15: PgServer, tmp_path: Path) -> None:
    source = load_sample(pg15, "pieces_with_lo")
    if not pg15.query("SELECT 1 FROM pg_largeobject_metadata", source):
        pg15.query(LARGE_OBJECT, source)
    target = new_database(pg15, "pieces_lo_target")

    load, _ = stage_and_load(pg15, piped_dump(pg15, source), target, tmp_path)

    assert load.classic
    assert "large objects" in load.reason
    assert not load.started
    assert not pg15.query("SELECT 1 FROM pg_tables WHERE schemaname = 'public'", target)


def test_a_failing_pg_restore_stops_the_staging_and_leaves_no_session(
        pg15: PgServer, tmp_path: Path, small_pieces: None) -> None:
    source = load_sample(pg15, "pieces_sample")
    target = new_database(pg15, "pieces_conflict")
    pg15.query("CREATE TABLE customers (id int)", target)  # the schema cannot be created: pg_restore fails

    with pytest.raises(PgRestoreFailed) as failed:
        stage_and_load(pg15, piped_dump(pg15, source), target, tmp_path)

    assert "customers" in failed.value.stderr and "already exists" in failed.value.stderr
    assert not pg15.query(f"SELECT pid FROM pg_stat_activity WHERE datname = '{target}'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump"], "the loader's own files are removed"



REFUSE_ROWS = """
CREATE FUNCTION refuse_rows() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE created record;
BEGIN
    FOR created IN SELECT object_identity FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT refused CHECK (false) NOT VALID', created.object_identity);
    END LOOP;
END $$;
CREATE EVENT TRIGGER refuse_rows ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION refuse_rows();
"""
"""Every table the restore creates refuses rows."""
READ_ONLY_AFTER_SCHEMA = """
CREATE FUNCTION read_only_after_schema() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database());
END $$;
CREATE EVENT TRIGGER read_only_after_schema ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION read_only_after_schema();
"""
"""Once the schema is created, new sessions are read-only: a piece's COPY fails as it starts, and its pg_restore
exits while its input is still being written."""


def big_source(server: PgServer) -> str:
    """One table of about 50 MB: its pieces are far bigger than the socket buffer that feeds pg_restore."""
    name = "pieces_big_source"
    if not server.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        server.query(f'CREATE DATABASE "{name}"')
        server.query("CREATE TABLE events AS SELECT i AS id, repeat(md5(i::text), 4) AS body "
                     "FROM generate_series(1, 300000) AS i", name)
    return name


def test_a_piece_whose_rows_are_refused_fails_the_load_with_what_pg_restore_said(
        pg15: PgServer, tmp_path: Path) -> None:
    target = new_database(pg15, "pieces_refused")
    with pg15.connect(target) as conn:
        conn.execute(REFUSE_ROWS)

    with pytest.raises(PgRestoreFailed) as failed:
        stage_and_load(pg15, piped_dump(pg15, big_source(pg15)), target, tmp_path, chunk=1 << 20)

    assert "refused" in failed.value.stderr and "events" in failed.value.stderr, failed.value.stderr
    assert not pg15.query(f"SELECT pid FROM pg_stat_activity WHERE datname = '{target}'")
    assert pg15.query("SELECT count(*) FROM events", target) == [(0,)]


def test_a_pg_restore_that_exits_while_its_piece_is_written_fails_the_load_with_what_it_said(
        pg15: PgServer, tmp_path: Path) -> None:
    target = new_database(pg15, "pieces_read_only")
    with pg15.connect(target) as conn:
        conn.execute(READ_ONLY_AFTER_SCHEMA)

    with pytest.raises(PgRestoreFailed) as failed:
        stage_and_load(pg15, piped_dump(pg15, big_source(pg15)), target, tmp_path, chunk=1 << 20)

    assert "read-only transaction" in failed.value.stderr, failed.value.stderr
    assert not pg15.query(f"SELECT pid FROM pg_stat_activity WHERE datname = '{target}'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump"], "the loader's own files are removed"
