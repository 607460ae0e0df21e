"""What the manifest records about a server and each database (version, extensions, exact row counts, sizes),
read in the snapshot pg_dump is given, while pg_dump runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from pgbackup.runner.postgres.pg import ConnParams


@dataclass(frozen=True)
class ServerInfo:
    version: str
    version_num: int
    wal_segment_size: int
    summarize_wal: bool = False
    """summarize_wal = on (PostgreSQL 17+): the server can take incremental backups."""
    system_identifier: str | None = None
    """pg_control_system()'s system_identifier (None when the user may not call it)."""

    @property
    def major(self) -> int:
        return self.version_num // 10000


def server_info(conn: psycopg.Connection) -> ServerInfo:
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),"
        " coalesce(current_setting('summarize_wal', true), 'off'),"
        " CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')"
        " THEN (SELECT system_identifier::text FROM pg_control_system()) END"
    ).fetchone()
    assert row is not None
    return ServerInfo(version=row[0], version_num=row[1], wal_segment_size=int(row[2]), summarize_wal=row[3] == "on",
                      system_identifier=row[4])


def list_databases(conn: psycopg.Connection) -> list[str]:
    """Every database that can be backed up: not a template, accepting connections."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname"
    ).fetchall()
    return [row[0] for row in rows]


@dataclass
class DatabaseFacts:
    name: str
    size_bytes: int
    extensions: dict[str, str]
    row_counts: dict[str, int]


def _user_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Ordinary tables whose data pg_dump writes: not system, not temp, not members of an extension."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relpersistence <> 't'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
          AND n.nspname NOT LIKE 'pg\\_temp%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.deptype = 'e')
        ORDER BY 1, 2
        """
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def count_rows(conn: psycopg.Connection, counted: Mapping[str, int] | None = None) -> dict[str, int]:
    """Exact count(*) of every user table, keyed 'schema.table' (in the caller's snapshot); the tables in
    `counted` are not counted again (counted already, and unchanged since)."""
    counts: dict[str, int] = {}
    for schema, table in _user_tables(conn):
        key = f"{schema}.{table}"
        counts[key] = counted[key] if counted is not None and key in counted else count_table(conn, schema, table)
    return counts


def count_table(conn: psycopg.Connection, schema: str, table: str) -> int:
    """Exact count(*) of one table."""
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def database_facts(conn: psycopg.Connection, name: str) -> DatabaseFacts:
    extensions: dict[str, str] = dict(conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall())
    size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return DatabaseFacts(name=name, size_bytes=int(size_row[0]) if size_row else 0, extensions=extensions,
                         row_counts=count_rows(conn))


class ExportedSnapshot:
    """An exported snapshot and the facts being read in it, on the exporting connection, while a dump runs."""

    def __init__(self, snapshot: str, counting: Future[DatabaseFacts]) -> None:
        self.snapshot = snapshot
        self._counting = counting

    def facts(self) -> DatabaseFacts:
        """The database's facts in this snapshot (waits until the row counts are done; raises their error)."""
        return self._counting.result()


@contextmanager
def exported_snapshot(params: ConnParams, dbname: str) -> Iterator[ExportedSnapshot]:
    """A REPEATABLE READ transaction whose snapshot is exported for `pg_dump --snapshot`: the row counts
    recorded are exactly the rows in the dump. The counts are taken on the exporting connection in a thread of
    their own, so they run while pg_dump does instead of before it. The transaction stays open until the dump
    has finished and the counts are done; on an error the counting is cancelled."""
    conn = params.connect(dbname, autocommit=False)
    counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgbackup-count")
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        # from here on only the counting thread uses the connection (until it is done)
        yield ExportedSnapshot(str(row[0]), counter.submit(database_facts, conn, dbname))
    except BaseException:
        conn.cancel()  # a failed dump does not wait for the counts
        raise
    finally:
        counter.shutdown(wait=True)
        try:
            conn.rollback()
        finally:
            conn.close()
