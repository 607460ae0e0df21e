"""The database DDL of a restore: a database is made under a temporary name marked as an incomplete restore
(RestoreSpace) and renamed only when complete, with the database-level properties recorded at backup time
(owner, encoding/locale, privileges, settings, comment); dropping what a failed restore made; ending sessions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import sql

from pgbackup.runner.catalog.manifest import DatabaseProperties
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.common.timestamps import format_utc, utc_now
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.privileges import MissingPrivilege, cannot_create_databases, quote_role


MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1
TEMP_INFIX = "__pgbackup_restore_"
INCOMPLETE_MARKER = "pgbackup: incomplete restore"
"""Start of the COMMENT ON DATABASE of a database being restored; replaced when the restore completes."""
_LOCK_CLASS = 1885823602  # pg_advisory_lock(class, hashtext(name)) space of the temporary databases ('pgbr')
LEFTOVER_LOCK_WAIT = "5s"
_SHORT_ID = re.compile(r"[0-9a-f]{8}")
# GUCs whose value is a list of quoted elements (pg_dump's variable_is_guc_list_quote)
_LIST_SETTINGS = frozenset({"local_preload_libraries", "search_path", "session_preload_libraries",
                            "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"})


def fit_name(prefix: str, suffix: str) -> str:
    """`prefix + suffix` within PostgreSQL's 63-byte name limit, shortening the prefix (never mid-character)."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    encoded = prefix.encode()
    if len(encoded) > room:
        prefix = encoded[:room].decode(errors="ignore")
    return prefix + suffix


def new_short_id() -> str:
    return uuid.uuid4().hex[:8]


def temp_name(target: str, short_id: str) -> str:
    """'<target>__pgbackup_restore_<8 hex>': where a restore into `target` is made before it gets its name."""
    return fit_name(target, f"{TEMP_INFIX}{short_id}")


def is_temp_of(name: str, target: str) -> bool:
    """Whether `name` is a temporary name of a restore into `target` (temp_name's pattern)."""
    prefix = temp_name(target, "0" * 8)[:-8]
    return name.startswith(prefix) and _SHORT_ID.fullmatch(name[len(prefix):]) is not None


def find_leftovers(conn: psycopg.Connection) -> dict[str, bool]:
    """Databases named like a restore's temporary database -> whether they carry the incomplete-restore marker."""
    rows = conn.execute("SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
                        "WHERE strpos(datname, %s) > 0 ORDER BY 1", (TEMP_INFIX,)).fetchall()
    return {str(name): str(comment).startswith(INCOMPLETE_MARKER) for name, comment in rows}


def drop_statement(name: str, version_num: int) -> sql.Composed:
    force = sql.SQL(" WITH (FORCE)") if version_num >= 130000 else sql.SQL("")
    return sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force)


class RestoreSpace:
    """The temporary databases this process restores into. Each is created with the incomplete-restore marker
    (COMMENT ON DATABASE) and held under an advisory lock for as long as this process (its connection) lives:
    another attempt tells a leftover of a dead restore (marker, lock free: dropped) from a restore still
    running (lock held: left alone)."""

    def __init__(self, target: ConnParams, version_num: int) -> None:
        self.target, self.version_num = target, version_num
        self._conn = target.connect("postgres")

    def __enter__(self) -> RestoreSpace:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()  # releases the advisory locks

    def _try_lock(self, name: str) -> bool:
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, name)).fetchone()
        return bool(row and row[0])

    def _wait_lock(self, name: str) -> bool:
        """The lock of a leftover; waits a little, as the server may not yet have noticed a killed runner."""
        try:
            with self._conn.transaction():
                self._conn.execute(f"SET LOCAL lock_timeout = '{LEFTOVER_LOCK_WAIT}'")
                self._conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, name))
            return True
        except psycopg.errors.LockNotAvailable:
            return False

    def drop_leftovers(self, final: str) -> list[str]:
        """Drop the marked temporary databases of earlier, dead restores into `final`; returns their names."""
        dropped: list[str] = []
        for name, marked in find_leftovers(self._conn).items():
            if not (marked and is_temp_of(name, final)):
                continue
            if not self._wait_lock(name):
                log("restore.leftover_in_use", database=name, target_database=final)
                continue
            try:
                self._conn.execute(drop_statement(name, self.version_num))
                dropped.append(name)
                log("restore.leftover_dropped", database=name, target_database=final)
            except psycopg.Error as exc:
                log_warning("restore.leftover_drop_failed", database=name, error=exc,
                            hint=f"drop {name!r} by hand: it holds an incomplete restore")
            finally:
                self._conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, name))
        return dropped

    def create(self, name: str, final: str, backup_id: str, properties: DatabaseProperties | None) -> None:
        """CREATE DATABASE `name` (encoding and locale as recorded) and mark it as an incomplete restore."""
        if not self._try_lock(name):
            raise RunnerError(f"the temporary database {name!r} on {self.target.describe()} is in use by another "
                              f"restore; run this restore again", reason="RestoreFailed")
        try:
            create_database(self._conn, name, properties, self.version_num)
        except psycopg.errors.InsufficientPrivilege:
            raise cannot_create_databases(self.target) from None
        started = format_utc(utc_now())
        self._conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(
            f"{INCOMPLETE_MARKER} of backup {backup_id} into {final!r}, started {started}: incomplete until renamed; "
            f"the next restore into {final!r} drops it")))

    @contextmanager
    def aside(self, final: str, backup_id: str, properties: DatabaseProperties | None) -> Iterator[str]:
        """A new temporary database to restore into (yielded by name). When the body succeeds, the recorded
        properties are applied and it is renamed to `final` in one transaction, so `final` only ever holds a
        complete restore; when the body fails (SIGTERM included), it is dropped."""
        temp = temp_name(final, new_short_id())
        self.create(temp, final, backup_id, properties)
        try:
            yield temp
            apply_properties(self.target, temp, properties)
            with self.target.connect("postgres") as conn, conn.transaction():
                rename_database(conn, temp, final)
                mark_complete(conn, final, properties)
        except BaseException:
            drop_quietly(self.target, temp, self.version_num)
            raise


def _locale_options(properties: DatabaseProperties, version_num: int) -> list[sql.Composable]:
    options: list[sql.Composable] = []
    if properties.encoding:
        options.append(sql.SQL("ENCODING {}").format(sql.Literal(properties.encoding)))
    if properties.collate:
        options.append(sql.SQL("LC_COLLATE {}").format(sql.Literal(properties.collate)))
    if properties.ctype:
        options.append(sql.SQL("LC_CTYPE {}").format(sql.Literal(properties.ctype)))
    provider = properties.locale_provider
    if provider is None or version_num < 150000:
        if provider not in (None, "libc"):
            raise UsageError(f"locale provider {provider} needs PostgreSQL 15 or newer")
        return options
    if provider == "builtin" and version_num < 170000:
        raise UsageError("the builtin locale provider needs PostgreSQL 17 or newer")
    options.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(provider)))
    if provider == "icu" and properties.locale:
        options.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(properties.locale)))
    if provider == "builtin" and properties.locale:
        options.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(properties.locale)))
    if provider == "icu" and properties.icu_rules and version_num >= 160000:
        options.append(sql.SQL("ICU_RULES {}").format(sql.Literal(properties.icu_rules)))
    return options


def create_database(conn: psycopg.Connection, name: str, properties: DatabaseProperties | None,
                    version_num: int) -> None:
    """CREATE DATABASE from template0 with the recorded encoding and locale; when the target server cannot
    (a locale it does not have, an older version), with its defaults and a warning."""
    plain = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if properties is None:
        conn.execute(plain)
        return
    try:
        options = _locale_options(properties, version_num)
        conn.execute(sql.SQL(" ").join([plain, *options]))
    except (psycopg.errors.DuplicateDatabase, psycopg.errors.InsufficientPrivilege, psycopg.OperationalError):
        raise
    except (psycopg.Error, UsageError) as exc:
        log_warning("restore.locale_not_applied", database=name, encoding=properties.encoding,
                    collate=properties.collate, ctype=properties.ctype, locale_provider=properties.locale_provider,
                    locale=properties.locale, error=str(exc).strip().splitlines()[0],
                    hint="the database is created with the server's default encoding and locale; install the "
                         "locale on the target server to keep the original one")
        conn.execute(plain)


def _setting_value(name: str, value: str) -> sql.Composable:
    """The SET value of a 'name=value' from pg_db_role_setting, quoted as pg_dump does."""
    if name.lower() not in _LIST_SETTINGS:
        return sql.Literal(value)
    items, current, quoted, i = [], "", False, 0
    while i < len(value):
        char = value[i]
        if char == '"':
            if quoted and value[i + 1:i + 2] == '"':
                current += '"'
                i += 1
            else:
                quoted = not quoted
        elif char == "," and not quoted:
            items.append(current.strip())
            current = ""
        else:
            current += char
        i += 1
    items.append(current.strip())
    return sql.SQL(", ").join(sql.Literal(item) for item in items)


def _settings(prefix: sql.Composable, entries: Sequence[str]) -> list[sql.Composed]:
    out = []
    for entry in entries:
        name, _, value = entry.partition("=")
        out.append(sql.SQL("{} SET {} TO {}").format(prefix, sql.Identifier(*name.split(".")),
                                                     _setting_value(name, value)))
    return out


def apply_properties(target: ConnParams, name: str, properties: DatabaseProperties | None) -> list[str]:
    """Re-apply what the backup recorded to the restored database `name` (before it gets its final name and
    owner): settings, per-role settings, privileges, connection limit. A statement the target cannot take (a
    role it does not have) is skipped with a warning; returns those warnings."""
    if properties is None:
        return []
    database = sql.Identifier(name)
    statements: list[sql.Composed] = _settings(sql.SQL("ALTER DATABASE {}").format(database), properties.settings)
    for role, entries in sorted(properties.role_settings.items()):
        statements += _settings(sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), database),
                                entries)
    if properties.acl is not None:
        statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        statements.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM CURRENT_USER").format(database))
        for grant in properties.acl:
            grantee = sql.SQL("PUBLIC") if grant.grantee == "PUBLIC" else sql.Identifier(grant.grantee)
            plain = [p for p in grant.privileges if p not in grant.grantable]
            for privileges, option in ((plain, ""), (grant.grantable, " WITH GRANT OPTION")):
                if privileges:
                    statements.append(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                        sql.SQL(", ").join(sql.SQL(p) for p in privileges if p in _DATABASE_PRIVILEGES),
                        database, grantee, sql.SQL(option)))
    if properties.connection_limit != -1:
        statements.append(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
            database, sql.Literal(properties.connection_limit)))
    warnings: list[str] = []
    with target.connect("postgres") as conn:
        for statement in statements:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                text = f"{statement.as_string(conn)}: {str(exc).strip().splitlines()[0]}"
                warnings.append(text)
                log_warning("restore.property_not_applied", database=name, error=text,
                            hint="create the missing role on the target server and apply it by hand")
    return warnings


_DATABASE_PRIVILEGES = frozenset({"CREATE", "CONNECT", "TEMPORARY"})


def rename_database(conn: psycopg.Connection, temp: str, final: str) -> None:
    try:
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(temp), sql.Identifier(final)))
    except psycopg.errors.DuplicateDatabase:
        raise UsageError(f"database {final!r} was created by someone else while this restore ran; the restore is "
                         f"dropped, {final!r} is untouched: choose another name or drop it first",
                         reason="TargetDatabaseExists") from None


def mark_complete(conn: psycopg.Connection, name: str, properties: DatabaseProperties | None, *,
                  fallback_owner: str | None = None) -> None:
    """In the transaction that gives the database its final name: replace the incomplete-restore marker with the
    recorded comment, and hand the database to its recorded owner (else `fallback_owner`)."""
    comment = properties.comment if properties else None
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))
    for owner in dict.fromkeys(o for o in ((properties.owner if properties else None), fallback_owner) if o):
        row = conn.execute("SELECT current_user = %s, EXISTS (SELECT FROM pg_roles WHERE rolname = %s)",
                           (owner, owner)).fetchone()
        if row and row[0]:
            return
        if not (row and row[1]):
            log_warning("restore.owner_missing", database=name, owner=owner,
                        hint=f"create role {owner!r} on the target server and run ALTER DATABASE ... OWNER TO")
            continue
        try:
            with conn.transaction():  # a savepoint: a refused owner change keeps the rest
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name),
                                                                             sql.Identifier(owner)))
            return
        except psycopg.Error as exc:
            log_warning("restore.owner_not_set", database=name, owner=owner, error=str(exc).strip().splitlines()[0])


def drop_database(target: ConnParams, name: str, version_num: int) -> None:
    """DROP DATABASE IF EXISTS, ending its sessions (WITH (FORCE)) where the server can (13 and newer)."""
    with target.connect("postgres") as conn:
        conn.execute(drop_statement(name, version_num))


def drop_quietly(target: ConnParams, name: str, version_num: int) -> bool:
    """Drop what a failed restore created; a failure to do so is logged (with what to drop by hand), not raised:
    the original failure is what gets reported. Returns whether it was dropped."""
    try:
        drop_database(target, name, version_num)
        log("restore.dropped", database=name)
        return True
    except Exception as exc:  # noqa: BLE001 - the original failure is what gets reported
        log_warning("restore.cleanup_failed", database=name, error=exc,
                    hint=f"drop database {name!r} by hand; no other database was changed")
        return False


def terminate_sessions(conn: psycopg.Connection, database: str) -> int:
    """End the other sessions connected to `database`; returns how many there were."""
    try:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                            "AND pid <> pg_backend_pid()", (database,)).fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise MissingPrivilege(
            f"role {conn.info.user!r} may not end the other sessions on database {database!r} "
            f"(target.terminateConnections): {str(exc).strip().splitlines()[0]}. As a superuser: GRANT "
            f"pg_signal_backend TO {quote_role(conn.info.user)} (a superuser's sessions only a superuser may end), "
            f"or stop the applications first") from None
    return len(rows)
