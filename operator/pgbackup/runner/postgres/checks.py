"""Checks after a restore (verification and RestoreRequest): row counts against the manifest, the user's SQL
checks, extensions present. Each returns api.restore.CheckResult entries, one per thing checked, with a
message a person can act on; none raises for a failing check.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import psycopg
from psycopg import sql

from pgbackup.api.policy import SqlCheck
from pgbackup.api.restore import CheckResult
from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.postgres.pg import ConnParams

ROWCOUNT_PREFIX = "rowcount:"
EXTENSION_PREFIX = "extension:"
DEFAULT_CHECK_TIMEOUT_SECONDS = 60
_MAX_VALUE_CHARS = 200


def compare_row_counts(expected: Mapping[str, int], actual: Mapping[str, int], *,
                       database: str | None = None) -> list[CheckResult]:
    """One result per table in either mapping (keys 'schema.table', or 'db.schema.table' without
    `database`), named 'rowcount:<db>.<schema>.<table>'. Tables missing from the restore, or present there
    but not in the backup, fail."""
    prefix = f"{database}." if database else ""
    results: list[CheckResult] = []
    for table in sorted(set(expected) | set(actual)):
        name = f"{ROWCOUNT_PREFIX}{prefix}{table}"
        want, got = expected.get(table), actual.get(table)
        if want is None:
            message = f"table is in the restore ({got} rows) but not in the backup's manifest"
            results.append(CheckResult(name=name, passed=False, message=message))
        elif got is None:
            results.append(CheckResult(name=name, passed=False,
                                       message=f"table is missing after the restore; the manifest records {want} rows"))
        elif want != got:
            results.append(CheckResult(name=name, passed=False,
                                       message=f"manifest records {want} rows, the restore has {got}"))
        else:
            results.append(CheckResult(name=name, passed=True, message=f"{got} rows"))
    return results


def _show(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS] + "..."


def _judge(check: SqlCheck, cursor: psycopg.Cursor) -> CheckResult:
    """Passes with at least one row whose first value is neither false nor NULL."""
    if cursor.description is None:
        return CheckResult(name=check.name, passed=False,
                           message="the statement returned no result set: a check must be a query, e.g. "
                                   "SELECT count(*) > 0 FROM orders")
    row = cursor.fetchone()
    if row is None:
        return CheckResult(name=check.name, passed=False, message="returned no rows")
    first = row[0] if len(row) else None
    if first is None:
        return CheckResult(name=check.name, passed=False, message="returned NULL")
    if first is False:
        return CheckResult(name=check.name, passed=False, message="returned false")
    return CheckResult(name=check.name, passed=True, message=f"returned {_show(first)}")


def _sql_error(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"cancelled by statement_timeout: {text}"
    return f"SQL error: {text}"


def run_sql_checks(params: ConnParams, checks: Iterable[SqlCheck], *,
                   timeout_seconds: int = DEFAULT_CHECK_TIMEOUT_SECONDS) -> list[CheckResult]:
    """Run each check in its own READ ONLY transaction with a statement_timeout, in its database; results in
    the order given. A database that cannot be reached fails its checks with the connection error."""
    ordered = list(checks)
    by_database: dict[str, list[int]] = defaultdict(list)
    for index, check in enumerate(ordered):
        by_database[check.database].append(index)
    results: dict[int, CheckResult] = {}
    for database, indexes in by_database.items():
        try:
            conn = params.connect(database, autocommit=False)
        except RunnerError as exc:
            for index in indexes:
                results[index] = CheckResult(name=ordered[index].name, passed=False,
                                             message=f"cannot connect to database {database!r}: {exc}")
            continue
        with conn:
            for index in indexes:
                results[index] = _run_one(conn, ordered[index], timeout_seconds)
    return [results[index] for index in range(len(ordered))]


def _run_one(conn: psycopg.Connection, check: SqlCheck, timeout_seconds: int) -> CheckResult:
    try:
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{timeout_seconds}s")))
        cursor = conn.execute(check.sql)  # the user's own query, by design (read-only, time-limited)
        return _judge(check, cursor)
    except psycopg.Error as exc:
        return CheckResult(name=check.name, passed=False, message=_sql_error(exc))
    finally:
        try:
            conn.rollback()
        except psycopg.Error:
            pass


def check_extensions(params: ConnParams, database: str, expected: Iterable[str] | Mapping[str, str]
                     ) -> list[CheckResult]:
    """One 'extension:<db>.<name>' result per expected extension: present in `database`? A mapping of
    name -> version (as the manifest records it) notes a different version without failing."""
    wanted = dict(expected) if isinstance(expected, Mapping) else {name: "" for name in expected}
    if not wanted:
        return []
    try:
        with params.connect(database) as conn:
            installed: dict[str, str] = dict(conn.execute("SELECT extname, extversion FROM pg_extension").fetchall())
            available = {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
    except RunnerError as exc:
        return [CheckResult(name=f"{EXTENSION_PREFIX}{database}.{name}", passed=False,
                            message=f"cannot connect to database {database!r}: {exc}") for name in sorted(wanted)]
    results: list[CheckResult] = []
    for name in sorted(wanted):
        check_name = f"{EXTENSION_PREFIX}{database}.{name}"
        version = installed.get(name)
        if version is None:
            hint = ("it is available on the server but was not created" if name in available
                    else "the server does not have it installed")
            results.append(CheckResult(name=check_name, passed=False, message=f"extension {name} is missing: {hint}"))
        elif wanted[name] and wanted[name] != version:
            results.append(CheckResult(name=check_name, passed=True,
                                       message=f"version {version} (the backup had {wanted[name]})"))
        else:
            results.append(CheckResult(name=check_name, passed=True, message=f"version {version}"))
    return results


def failed(results: Iterable[CheckResult]) -> list[CheckResult]:
    return [result for result in results if not result.passed]
