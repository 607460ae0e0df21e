"""Plain restores for round trips: a logical backup into a NEW database (row counts compared with the
manifest), a physical backup into a new data directory. The full restore feature (RestoreRequest) builds on it.

Shared by every restore into a database: objects verified against the manifest (a damaged object is reported
as a checksum mismatch naming it, not as a decryption error); the database made under a temporary name marked
as an incomplete restore (RestoreSpace) and renamed only when complete; the database-level properties recorded
at backup time (owner, encoding/locale, privileges, settings, comment) re-applied to it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO

import psycopg
from psycopg import sql

from pgbackup.runner.config import RunnerError, UsageError
from pgbackup.runner.log import Progress, log, log_warning
from pgbackup.runner.manifest import DatabaseProperties, Manifest, ManifestObject
from pgbackup.runner.pg import ConnParams, PgTools, count_rows, find_tools, server_info
from pgbackup.runner.safetar import extract_data
from pgbackup.runner.catalog import Catalog
from pgbackup.runner.pipeline import DecryptionError, IntegrityError
from pgbackup.runner.storage.base import ObjectNotFound

CHUNK = 1 << 20


class BackupDamaged(RunnerError):
    """An object of the backup does not match its manifest entry (size or SHA-256): damage, not a key problem."""

    reason = "BackupDamaged"


def object_damage(catalog: Catalog, manifest: Manifest, obj: ManifestObject) -> str | None:
    """What is wrong with the stored bytes of `obj` (size, SHA-256, missing), or None when they match.
    Reads the stored bytes only: no identity is needed and nothing is decrypted."""
    digest = hashlib.sha256()
    size = 0
    try:
        with catalog.storage.open_reader(catalog.object_key(manifest.id, obj.key)) as reader:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except ObjectNotFound:
        return "missing"
    if size != obj.size:
        return f"size mismatch ({size} bytes stored, the manifest records {obj.size})"
    if digest.hexdigest() != obj.sha256:
        return f"SHA-256 mismatch (the stored bytes hash to {digest.hexdigest()}, the manifest records {obj.sha256})"
    return None


def damaged(manifest: Manifest, problems: Sequence[tuple[ManifestObject, str]], changed: str) -> BackupDamaged:
    listing = "; ".join(f"object {obj.key}: {problem}" for obj, problem in problems)
    return BackupDamaged(f"backup {manifest.id} is damaged, {changed}: {listing}. Run `pgbackup check {manifest.id}` "
                         f"to see every damaged object of it, and restore another backup (`pgbackup list` shows them)")


def verify_objects(catalog: Catalog, manifest: Manifest, objects: Sequence[ManifestObject], *,
                   changed: str = "nothing was restored or changed") -> None:
    """Compare size and SHA-256 of the stored bytes of `objects` with the manifest (before anything changes);
    raises BackupDamaged naming each damaged object."""
    problems = [(obj, problem) for obj in objects if (problem := object_damage(catalog, manifest, obj))]
    log("restore.objects_verified", backup_id=manifest.id, objects=len(objects), damaged=len(problems))
    if problems:
        raise damaged(manifest, problems, changed)


@contextmanager
def damage_reported(catalog: Catalog, manifest: Manifest, obj: ManifestObject, changed: str) -> Iterator[None]:
    """Reading `obj` failed (decryption, decompression or checksum error): if its stored bytes differ from the
    manifest, say so (checksum mismatch, the object, `pgbackup check`) instead of a decryption error."""
    try:
        yield
    except (DecryptionError, IntegrityError) as exc:
        problem = object_damage(catalog, manifest, obj)
        if problem is None:
            raise
        raise damaged(manifest, [(obj, problem)], changed) from exc


@dataclass(frozen=True)
class TableCheck:
    table: str
    expected: int | None
    actual: int | None
    checked: bool = True
    """False when the backup recorded no row counts (an imported dump): nothing to compare with."""

    @property
    def ok(self) -> bool:
        return not self.checked or self.expected == self.actual


@dataclass
class RestoreReport:
    backup_id: str
    source_database: str
    target_database: str
    tables: list[TableCheck] = field(default_factory=list)
    bytes_read: int = 0
    duration_seconds: float = 0.0
    globals_restored: bool = False

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.tables)

    @property
    def mismatches(self) -> list[TableCheck]:
        return [check for check in self.tables if not check.ok]


def _pick_database(manifest: Manifest, source_database: str | None) -> ManifestObject:
    dumps = [o for o in manifest.objects if o.kind == "database"]
    names = [o.database for o in dumps]
    if source_database is None:
        if len(dumps) != 1:
            raise UsageError(f"backup {manifest.id} holds {len(dumps)} databases ({', '.join(map(str, names))}): "
                             f"choose one with --source-database")
        return dumps[0]
    for obj in dumps:
        if obj.database == source_database:
            return obj
    raise UsageError(f"backup {manifest.id} has no database {source_database!r}; it holds {', '.join(map(str, names))}")


def _feed(catalog: Catalog, manifest: Manifest, obj: ManifestObject, identity: str | None,
          proc: subprocess.Popen[bytes], progress: Progress) -> int:
    """Stream an object's original bytes into a program's stdin; returns bytes written."""
    assert proc.stdin is not None
    with catalog.open_object(manifest, obj, identity=identity) as stream:
        return feed_stdin(stream, proc.stdin, progress.add)


def feed_stdin(stream: BinaryIO, stdin: IO[bytes], on_chunk: Callable[[int], None] | None = None) -> int:
    """Copy `stream` into a program's stdin and close it; returns bytes written. `stream` is read to the end
    either way, so its checksum is still verified."""
    written = 0
    try:
        while chunk := stream.read(CHUNK):
            stdin.write(chunk)
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    except BrokenPipeError:
        # The program stopped reading: its exit status says why. Read on so the checksum is still verified.
        while stream.read(CHUNK):
            pass
    finally:
        try:
            stdin.close()
        except BrokenPipeError:
            pass
    return written


def _run_with_stdin(args: list[str], env: Mapping[str, str], catalog: Catalog, manifest: Manifest,
                    obj: ManifestObject, identity: str | None, phase: str) -> tuple[int, str, int]:
    with tempfile.TemporaryFile() as errors, Progress(phase) as progress:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=dict(env))
        try:
            written = _feed(catalog, manifest, obj, identity, proc, progress)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        returncode = proc.wait()
        errors.seek(0)
        return returncode, errors.read().decode(errors="replace"), written


def _extract_tar(stream: BinaryIO, into: Path) -> None:
    extract_data(stream, into)
    while stream.read(CHUNK):  # read to the end so the checksum is verified
        pass


def restore_globals(catalog: Catalog, manifest: Manifest, target: ConnParams, tools: PgTools,
                    identity: str | None) -> bool:
    """Replay roles/tablespaces with psql. 'already exists' errors (e.g. the superuser) are expected."""
    objects = manifest.object_by_kind("globals")
    if not objects:
        log_warning("restore.globals_missing", backup_id=manifest.id)
        return False
    args = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0", "-f", "-"]
    returncode, stderr, _ = _run_with_stdin(args, target.child_env("postgres"), catalog, manifest, objects[0],
                                            identity, "globals")
    problems = [line for line in stderr.splitlines() if "ERROR" in line and "already exists" not in line]
    if returncode != 0 or problems:
        log_warning("restore.globals_errors", errors=problems[:20])
    return True


# ---------------------------------------------------------------- restoring aside: temporary names, properties

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


def _drop_statement(name: str, version_num: int) -> sql.Composed:
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
                self._conn.execute(_drop_statement(name, self.version_num))
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
        create_database(self._conn, name, properties, self.version_num)
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
            drop_database_quietly(self.target, temp)
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
    except (psycopg.errors.DuplicateDatabase, psycopg.OperationalError):
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


def restore_backup(catalog: Catalog, backup_id: str, target: ConnParams, target_database: str,
                   identity: str | None = None, *, source_database: str | None = None, with_globals: bool = False,
                   jobs: int = 1, scratch: Path | None = None, environ: Mapping[str, str] | None = None,
                   allow_empty_target: bool = False) -> RestoreReport:
    """Restore one database of a logical backup into the NEW database `target_database` on `target`, then
    compare every table's row count with the manifest. An existing target database is refused untouched
    (unless `allow_empty_target` and it holds no tables: e.g. created beforehand with the right owner).

    A new database is restored under a temporary name (marked as incomplete) and renamed to `target_database`
    only when complete, with the database-level properties the backup recorded; leftovers of a killed attempt
    into the same name are dropped first. An empty existing database is restored into directly."""
    environ = os.environ if environ is None else environ
    started = time.monotonic()
    manifest = catalog.get(backup_id)
    if manifest.method != "logical":
        raise UsageError(f"backup {backup_id} is a physical backup: restore it with --target-dir into a new data "
                         f"directory, not into a database")
    obj = _pick_database(manifest, source_database)
    info = next((d for d in manifest.databases if d.name == obj.database), None)
    with target.connect("postgres") as conn:
        server = server_info(conn)
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target_database,)).fetchone()
        reuse = bool(exists) and allow_empty_target and _has_no_tables(target, target_database)
        if exists and not reuse:
            raise UsageError(f"database {target_database!r} already exists on {target.describe()}: a restore only "
                             f"creates a new database; choose another --target-database or drop it first",
                             reason="TargetDatabaseExists")
    dump_major = int((manifest.tools.get("pg_dump") or "0").split(".")[0] or 0)
    tools = find_tools(max(server.major, dump_major), environ)
    report = RestoreReport(backup_id=backup_id, source_database=str(obj.database), target_database=target_database)
    dump_format = info.dump_format if info else "custom"
    if reuse:  # created by the caller (a RestoreRequest's temporary database, or an empty one made beforehand)
        if with_globals:
            report.globals_restored = restore_globals(catalog, manifest, target, tools, identity)
        log("restore.start", backup_id=backup_id, database=obj.database, target_database=target_database,
            target=target.describe(), format=dump_format)
        report.bytes_read = _restore_dump(catalog, manifest, obj, target, tools, target_database, identity,
                                          dump_format, jobs, scratch)
        actual = _rows(target, target_database)
    else:
        with RestoreSpace(target, server.version_num) as space:
            space.drop_leftovers(target_database)
            if with_globals:
                report.globals_restored = restore_globals(catalog, manifest, target, tools, identity)
            with space.aside(target_database, manifest.id, info.properties if info else None) as temp:
                log("restore.start", backup_id=backup_id, database=obj.database, target_database=target_database,
                    temporary_database=temp, target=target.describe(), format=dump_format)
                report.bytes_read = _restore_dump(catalog, manifest, obj, target, tools, temp, identity, dump_format,
                                                  jobs, scratch)
                actual = _rows(target, temp)
    expected = info.row_counts if info else {}
    report.tables = [TableCheck(table, expected.get(table), actual.get(table), checked=not manifest.imported)
                     for table in sorted(set(expected) | set(actual))]
    report.duration_seconds = round(time.monotonic() - started, 3)
    log("restore.done", backup_id=backup_id, target_database=target_database, tables=len(report.tables),
        mismatches=[c.table for c in report.mismatches], duration_seconds=report.duration_seconds)
    return report


def _rows(target: ConnParams, database: str) -> dict[str, int]:
    with target.connect(database) as conn:
        return count_rows(conn)


def _restore_dump(catalog: Catalog, manifest: Manifest, obj: ManifestObject, target: ConnParams, tools: PgTools,
                  database: str, identity: str | None, dump_format: str, jobs: int, scratch: Path | None) -> int:
    with damage_reported(catalog, manifest, obj, "nothing was restored (what this restore created is dropped)"):
        return _restore_dump_unchecked(catalog, manifest, obj, target, tools, database, identity, dump_format, jobs,
                                       scratch)


def _restore_dump_unchecked(catalog: Catalog, manifest: Manifest, obj: ManifestObject, target: ConnParams,
                            tools: PgTools, database: str, identity: str | None, dump_format: str, jobs: int,
                            scratch: Path | None) -> int:
    what = f"pg_restore of backup {manifest.id} database {obj.database!r} into {database!r} on {target.describe()}"
    base = [tools.path("pg_restore"), "--no-password", "--exit-on-error", "-d", database]
    env = target.child_env(database)
    if dump_format == "custom":
        returncode, stderr, written = _run_with_stdin(base, env, catalog, manifest, obj, identity, "restore")
    elif dump_format == "plain":  # an imported `pg_dump | gzip` SQL script: psql replays it, stopping at the first error
        what = f"psql replay of backup {manifest.id} database {obj.database!r} into {database!r} on {target.describe()}"
        args = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-d", database, "-f", "-"]
        returncode, stderr, written = _run_with_stdin(args, env, catalog, manifest, obj, identity, "restore")
    else:
        workdir = Path(tempfile.mkdtemp(prefix="pgbackup-restore-", dir=scratch))
        try:
            with catalog.open_object(manifest, obj, identity=identity) as stream:
                _extract_tar(stream, workdir)
            written = obj.raw_size
            done = subprocess.run([*base, "-j", str(jobs), str(workdir)], env=env, capture_output=True, text=True)
            returncode, stderr = done.returncode, done.stderr
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if returncode != 0:
        raise RunnerError(f"{what} failed (exit {returncode}): {target.scrub(stderr.strip()[-1200:])}; "
                          f"the database this restore created was dropped, nothing else was changed",
                          reason="RestoreFailed")
    return written


def _has_no_tables(target: ConnParams, database: str) -> bool:
    with target.connect(database) as conn:
        row = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                           ).fetchone()
    return bool(row) and row[0] == 0


def drop_database_quietly(target: ConnParams, database: str) -> None:
    try:
        with target.connect("postgres") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    except Exception as exc:  # noqa: BLE001 - the restore failure is what gets reported
        log_warning("restore.cleanup_failed", database=database, error=exc)


def restore_physical(catalog: Catalog, backup_id: str, target_dir: Path, identity: str | None = None) -> Path:
    """Extract a physical backup into a new, empty data directory, ready for `pg_ctl start`."""
    manifest = catalog.get(backup_id)
    if manifest.method != "physical":
        raise UsageError(f"backup {backup_id} is a logical backup: restore it with --target-database")
    if target_dir.exists() and any(target_dir.iterdir()):
        raise UsageError(f"{target_dir} is not empty: a physical restore needs a new, empty data directory",
                         reason="TargetDirectoryNotEmpty")
    base = manifest.object_by_kind("base")
    if not base:
        raise RunnerError(f"backup {backup_id} has no base object; its manifest is damaged", reason="ManifestInvalid")
    missing = [path for path in [target_dir, *target_dir.parents] if not path.exists()]
    created = missing[-1] if missing else None  # the topmost directory the restore makes (target_dir or above)
    log("restore.physical.start", backup_id=backup_id, target_dir=str(target_dir))
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(target_dir, 0o700)
        with catalog.open_object(manifest, base[0], identity=identity) as stream:
            _extract_tar(stream, target_dir)
    except BaseException as exc:  # a damaged object, a broken stream, a full disk, SIGTERM: nothing half-done stays
        exc.add_note(_undo_physical_restore(target_dir, created))
        raise
    log("restore.physical.done", backup_id=backup_id, target_dir=str(target_dir))
    return target_dir


def _undo_physical_restore(target_dir: Path, created: Path | None) -> str:
    """Remove what a failed physical restore extracted: the directories it created (`created`: the topmost), else
    the contents of the empty directory it was given (it refuses a non-empty one, so they are all its own).
    Returns what was done, for the error message."""
    try:
        if created is not None:
            if created.exists():
                shutil.rmtree(created)
        else:
            for child in list(target_dir.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    except OSError as exc:
        log_warning("restore.physical.cleanup_failed", target_dir=str(target_dir), error=exc)
        what = created if created is not None else f"the contents of {target_dir}"
        return f"removing the partly restored files failed ({exc}): delete {what} by hand before restoring again"
    log("restore.physical.cleaned_up", target_dir=str(target_dir), removed=str(created) if created else None)
    if created is None:
        return f"{target_dir} was emptied again (it was empty before the restore)"
    if created == target_dir:
        return f"the partly restored data directory {target_dir} was removed (the restore had created it)"
    return (f"the partly restored data directory {target_dir} was removed, and {created} with it (the restore had "
            f"created both)")

