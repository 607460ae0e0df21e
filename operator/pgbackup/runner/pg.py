"""Talking to the PostgreSQL server being backed up: connection parameters, client tools, and what the
manifest records about each database (version, extensions, exact row counts, sizes).

The password comes from PGPASSWORD (a secretKeyRef env var) and reaches child processes only through their
environment: never an argument list, a log line or an error message.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import psycopg
from psycopg import sql

from pgbackup.api import jobenv
from pgbackup.api.policy import DatabaseSpec
from pgbackup.runner.config import RunnerError, UsageError

CONNECT_TIMEOUT_SECONDS = 15
ENV_PG_BINDIR = "PGBACKUP_PG_BINDIR"


class DatabaseUnreachable(RunnerError):
    reason = "DatabaseUnreachable"
    exit_code = jobenv.EXIT_NETWORK


class AuthenticationFailed(RunnerError):
    reason = "AuthenticationFailed"
    exit_code = jobenv.EXIT_FAILED


@dataclass(frozen=True)
class ConnParams:
    """Where and as whom to connect; `password` is excluded from repr so it cannot leak through logging."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    credentials_hint: str = "the PGUSER/PGPASSWORD environment variables"

    @classmethod
    def from_spec(cls, spec: DatabaseSpec, environ: Mapping[str, str] | None = None) -> ConnParams:
        """Host/port/TLS from the policy, user and password from the env the Job fills from the Secret."""
        environ = os.environ if environ is None else environ
        secret = spec.credentials_secret
        user = environ.get(jobenv.ENV_DB_USER)
        if not user:
            raise UsageError(
                f"{jobenv.ENV_DB_USER} is not set: the backup Job takes it from key {secret.username_key!r} of "
                f"Secret {secret.name!r}; set it when running the runner by hand"
            )
        return cls(
            host=spec.host,
            port=spec.port,
            user=user,
            password=environ.get(jobenv.ENV_DB_PASSWORD) or None,
            sslmode=spec.ssl_mode,
            sslrootcert=environ.get(jobenv.ENV_DB_SSLROOTCERT) or None,
            credentials_hint=f"keys {secret.username_key!r}/{secret.password_key!r} of Secret {secret.name!r}",
        )

    def describe(self) -> str:
        return f"host {self.host} port {self.port} user {self.user}"

    def connect_kwargs(self, dbname: str) -> dict[str, object]:
        kwargs: dict[str, object] = {"host": self.host, "port": self.port, "user": self.user, "dbname": dbname,
                                     "sslmode": self.sslmode, "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                                     "application_name": "pgbackup"}
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslrootcert:
            kwargs["sslrootcert"] = self.sslrootcert
        return kwargs

    def connect(self, dbname: str = "postgres", *, autocommit: bool = True) -> psycopg.Connection:
        """A connection, or a RunnerError naming host, port and user and what to check."""
        try:
            return psycopg.connect(autocommit=autocommit, **self.connect_kwargs(dbname))  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            raise self.explain(exc, dbname) from None

    def explain(self, exc: BaseException | str, dbname: str) -> RunnerError:
        detail = self.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        where = f"PostgreSQL at {self.describe()} (database {dbname})"
        lowered = str(exc).lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered \
                or "authentication failed" in lowered:
            return AuthenticationFailed(
                f"{where} rejected the login: {detail}. Check the user name and password in "
                f"{self.credentials_hint} and the server's pg_hba.conf"
            )
        if "does not exist" in lowered and "database" in lowered:
            return RunnerError(f"{where}: {detail}. Check the database names in the policy", reason="DatabaseMissing")
        if "permission denied" in lowered or "no pg_hba.conf entry" in lowered:
            return AuthenticationFailed(f"{where} refused access: {detail}. Check pg_hba.conf and the role's rights")
        return DatabaseUnreachable(
            f"cannot connect to {where}: {detail}. Check that the server is running and reachable from here "
            f"(host name, port, NetworkPolicy/firewall, sslMode)"
        )

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text

    def child_env(self, dbname: str | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for pg_dump & co: libpq reads everything from here, so argv holds no secret."""
        env = dict(os.environ if base is None else base)
        for name in ("PGSERVICE", "PGPASSFILE", "PGOPTIONS"):
            env.pop(name, None)
        env.update({"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGSSLMODE": self.sslmode,
                    "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT_SECONDS), "PGAPPNAME": "pgbackup"})
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        else:
            env.pop("PGPASSWORD", None)
        if self.sslrootcert:
            env["PGSSLROOTCERT"] = self.sslrootcert
        if dbname is not None:
            env["PGDATABASE"] = dbname
        return env


# ---------------------------------------------------------------- client tools


@dataclass(frozen=True)
class PgTools:
    """One installation of the PostgreSQL client programs."""

    bindir: Path
    major: int
    version: str

    def path(self, program: str) -> str:
        return str(self.bindir / program)


def _pgserver_bindir() -> Path | None:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@lru_cache(maxsize=32)
def _tools_in(bindir: Path) -> PgTools | None:
    program = bindir / "pg_dump"
    if not os.access(program, os.X_OK):
        return None
    try:
        output = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", output)
    if not match:
        return None
    return PgTools(bindir=bindir, major=int(match.group(1)), version=output.strip().removeprefix("pg_dump (PostgreSQL) "))


def installed_tools(environ: Mapping[str, str] | None = None) -> list[PgTools]:
    environ = os.environ if environ is None else environ
    candidates: list[Path] = []
    if environ.get(ENV_PG_BINDIR):
        candidates.append(Path(environ[ENV_PG_BINDIR]))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    bundled = _pgserver_bindir()
    if bundled is not None:
        candidates.append(bundled)
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    found = [tools for tools in (_tools_in(c) for c in candidates) if tools is not None]
    return found


def find_tools(server_major: int, environ: Mapping[str, str] | None = None) -> PgTools:
    """The client tools for a server: PGBACKUP_PG_BINDIR when set, else the same major, else the newest newer one
    (pg_dump refuses servers newer than itself)."""
    environ = os.environ if environ is None else environ
    found = installed_tools(environ)
    if environ.get(ENV_PG_BINDIR):
        forced = _tools_in(Path(environ[ENV_PG_BINDIR]))
        if forced is None:
            raise UsageError(f"{ENV_PG_BINDIR}={environ[ENV_PG_BINDIR]} holds no working pg_dump")
        return forced
    same = [t for t in found if t.major == server_major]
    if same:
        return same[0]
    newer = sorted((t for t in found if t.major > server_major), key=lambda t: t.major, reverse=True)
    if newer:
        return newer[0]
    have = ", ".join(f"{t.major} ({t.bindir})" for t in found) or "none"
    raise RunnerError(
        f"no PostgreSQL client tools for server version {server_major}: found {have}; install "
        f"postgresql-client-{server_major} or newer, or point {ENV_PG_BINDIR} at its bin directory",
        reason="ToolsMissing",
    )


# ---------------------------------------------------------------- server and database facts


@dataclass(frozen=True)
class ServerInfo:
    version: str
    version_num: int
    wal_segment_size: int

    @property
    def major(self) -> int:
        return self.version_num // 10000


def server_info(conn: psycopg.Connection) -> ServerInfo:
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
    ).fetchone()
    assert row is not None
    return ServerInfo(version=row[0], version_num=row[1], wal_segment_size=int(row[2]))


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


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    """Exact count(*) of every user table, keyed 'schema.table' (in the caller's snapshot)."""
    counts: dict[str, int] = {}
    for schema, table in _user_tables(conn):
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def database_facts(conn: psycopg.Connection, name: str) -> DatabaseFacts:
    extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall())
    size_row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return DatabaseFacts(name=name, size_bytes=int(size_row[0]) if size_row else 0, extensions=extensions,
                         row_counts=count_rows(conn))


@contextmanager
def exported_snapshot(params: ConnParams, dbname: str) -> Iterator[tuple[str, DatabaseFacts]]:
    """A REPEATABLE READ transaction whose snapshot is exported for `pg_dump --snapshot`: the row counts
    recorded are exactly the rows in the dump. The transaction stays open until the dump has finished."""
    conn = params.connect(dbname, autocommit=False)
    try:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        facts = database_facts(conn, dbname)
        yield str(row[0]), facts
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


# ---------------------------------------------------------------- child processes


class ChildOutput:
    """The stdout of a client program (pg_dump, pg_basebackup, tar) as an iterable of chunks.

    Iteration raises RunnerError when the program exits non-zero or is killed, so a pipeline consuming it
    aborts its upload instead of committing a truncated object. stderr is kept (last lines) for the error.
    """

    CHUNK = 1 << 20

    def __init__(self, args: list[str], *, env: Mapping[str, str], what: str, hint: str = "",
                 cwd: str | None = None, scrub: tuple[str, ...] = ()) -> None:
        self.args = args
        self.what = what
        self.hint = hint
        self._scrub = tuple(s for s in scrub if s)
        self._stderr: list[str] = []
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(env), cwd=cwd)
        self._stderr_thread = threading.Thread(target=self._collect_stderr, daemon=True)
        self._stderr_thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            for secret in self._scrub:
                line = line.replace(secret, "***")
            self._stderr.append(line)
            del self._stderr[:-40]

    def stderr_text(self) -> str:
        self._stderr_thread.join(timeout=5)
        return "\n".join(self._stderr)

    def __iter__(self) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        read = self.proc.stdout.read1  # what the pipe holds now: stream as the program writes
        while True:
            chunk = read(self.CHUNK)
            if not chunk:
                break
            yield chunk
        self.check()

    def check(self) -> None:
        """Wait for the program; raise when it failed."""
        returncode = self.proc.wait()
        if returncode == 0:
            return
        stderr = self.stderr_text()
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        message = f"{self.what} {how}"
        if stderr:
            message += f": {stderr[-1000:]}"
        if self.hint:
            message += f". {self.hint}"
        raise RunnerError(message, reason="DumpFailed")

    def close(self) -> None:
        """Stop the program if it still runs (e.g. the upload failed) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ChildOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
