"""Plain restores for round trips: a logical backup into a NEW database (row counts compared with the
manifest), a physical backup into a new data directory. The full restore feature (RestoreRequest) builds on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from psycopg import sql

from pgbackup.runner.config import RunnerError, UsageError
from pgbackup.runner.log import Progress, log, log_warning
from pgbackup.runner.manifest import Manifest, ManifestObject
from pgbackup.runner.pg import ConnParams, PgTools, count_rows, find_tools, server_info
from pgbackup.runner.safetar import extract_data
from pgbackup.runner.catalog import Catalog

CHUNK = 1 << 20


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


def restore_backup(catalog: Catalog, backup_id: str, target: ConnParams, target_database: str,
                   identity: str | None = None, *, source_database: str | None = None, with_globals: bool = False,
                   jobs: int = 1, scratch: Path | None = None, environ: Mapping[str, str] | None = None,
                   allow_empty_target: bool = False) -> RestoreReport:
    """Restore one database of a logical backup into the NEW database `target_database` on `target`, then
    compare every table's row count with the manifest. An existing target database is refused untouched
    (unless `allow_empty_target` and it holds no tables: e.g. created beforehand with the right owner)."""
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
        if with_globals:
            report.globals_restored = restore_globals(catalog, manifest, target, tools, identity)
        if not reuse:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target_database)))
    log("restore.start", backup_id=backup_id, database=obj.database, target_database=target_database,
        target=target.describe(), format=info.dump_format if info else "custom")
    try:
        report.bytes_read = _restore_dump(catalog, manifest, obj, target, tools, target_database, identity,
                                          info.dump_format if info else "custom", jobs, scratch)
    except BaseException:
        if not reuse:
            _drop_quietly(target, target_database)
        raise
    with target.connect(target_database) as conn:
        actual = count_rows(conn)
    expected = info.row_counts if info else {}
    report.tables = [TableCheck(table, expected.get(table), actual.get(table), checked=not manifest.imported)
                     for table in sorted(set(expected) | set(actual))]
    report.duration_seconds = round(time.monotonic() - started, 3)
    log("restore.done", backup_id=backup_id, target_database=target_database, tables=len(report.tables),
        mismatches=[c.table for c in report.mismatches], duration_seconds=report.duration_seconds)
    return report


def _restore_dump(catalog: Catalog, manifest: Manifest, obj: ManifestObject, target: ConnParams, tools: PgTools,
                  database: str, identity: str | None, dump_format: str, jobs: int, scratch: Path | None) -> int:
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
                          f"the new database was dropped unless it existed before", reason="RestoreFailed")
    return written


def _has_no_tables(target: ConnParams, database: str) -> bool:
    with target.connect(database) as conn:
        row = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                           ).fetchone()
    return bool(row) and row[0] == 0


def _drop_quietly(target: ConnParams, database: str) -> None:
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
    target_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(target_dir, 0o700)
    base = manifest.object_by_kind("base")
    if not base:
        raise RunnerError(f"backup {backup_id} has no base object; its manifest is damaged", reason="ManifestInvalid")
    log("restore.physical.start", backup_id=backup_id, target_dir=str(target_dir))
    with catalog.open_object(manifest, base[0], identity=identity) as stream:
        _extract_tar(stream, target_dir)
    log("restore.physical.done", backup_id=backup_id, target_dir=str(target_dir))
    return target_dir

