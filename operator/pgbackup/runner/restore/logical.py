"""Restoring a logical backup: one database into a NEW database (row counts compared with the manifest), and the
roles and tablespaces (globals). The RestoreRequest (pgbackup.runner.restore.execute) builds on it; the database
is made aside and renamed when complete (pgbackup.runner.restore.ddl).
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
from typing import BinaryIO

from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, ManifestObject
from pgbackup.runner.common.errors import RunnerError, UsageError, program_ended
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.postgres.facts import count_rows, count_table, server_info
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools
from pgbackup.runner.postgres.privileges import require_createdb
from pgbackup.runner.restore.ddl import RestoreSpace
from pgbackup.runner.restore.directory_dump import DirectoryAsCustom, NotOrdered
from pgbackup.runner.restore.dump_offsets import fill_in_offsets
from pgbackup.runner.restore.parallel_load import ParallelLoad, PgRestoreFailed
from pgbackup.runner.restore.pieces import LayoutUnexpected
from pgbackup.runner.restore.ownership import Ownership
from pgbackup.runner.restore.reading import tools_for, damage_reported, extract_tar, pick_database, run_with_stdin
from pgbackup.runner.restore.staging import Readable, ScratchFull, ScratchRoom, scratch_room, staged_object


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


def restore_globals(catalog: Catalog, manifest: Manifest, target: ConnParams, tools: PgTools,
                    identity: str | None) -> bool:
    """Replay roles/tablespaces with psql. 'already exists' errors (e.g. the superuser) are expected."""
    objects = manifest.object_by_kind("globals")
    if not objects:
        log_warning("restore.globals_missing", backup_id=manifest.id)
        return False
    args = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=0", "-f", "-"]
    returncode, stderr, _ = run_with_stdin(args, target.child_env("postgres"), catalog, manifest, objects[0],
                                            identity, "globals")
    problems = [line for line in stderr.splitlines() if "ERROR" in line and "already exists" not in line]
    if returncode != 0 or problems:
        log_warning("restore.globals_errors", errors=problems[:20])
    return True


def restore_backup(catalog: Catalog, backup_id: str, target: ConnParams, target_database: str,
                   identity: str | None = None, *, source_database: str | None = None, with_globals: bool = False,
                   jobs: int = 1, scratch: Path | None = None, environ: Mapping[str, str] | None = None,
                   allow_empty_target: bool = False, ownership: Ownership = Ownership(),
                   scratch_limit: int | None = None, stage: bool = True) -> RestoreReport:
    """Restore one database of a logical backup into the NEW database `target_database` on `target`, then
    compare every table's row count with the manifest. An existing target database is refused untouched
    (unless `allow_empty_target` and it holds no tables: e.g. created beforehand with the right owner).

    A new database is restored under a temporary name (marked as incomplete) and renamed to `target_database`
    only when complete, with the database-level properties the backup recorded; leftovers of a killed attempt
    into the same name are dropped first. An empty existing database is restored into directly. `ownership`:
    what is kept of the backup's owners and privileges (pg_restore --no-owner / --no-privileges).

    With `jobs` > 1 and `stage`, a custom-format dump is first staged in `scratch` (when it fits there, within
    `scratch_limit` bytes when given) and restored by `pg_restore -j jobs`; else it is streamed into one pg_restore.
    `stage=False` when scratch is kept for something else (a verification's throwaway server)."""
    environ = os.environ if environ is None else environ
    started = time.monotonic()
    manifest = catalog.get(backup_id)
    if manifest.method != "logical":
        raise UsageError(f"backup {backup_id} is a physical backup: restore it with --target-dir into a new data "
                         f"directory, not into a database")
    obj = pick_database(manifest, source_database)
    info = next((d for d in manifest.databases if d.name == obj.database), None)
    with target.connect("postgres") as conn:
        server = server_info(conn)
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target_database,)).fetchone()
        reuse = bool(exists) and allow_empty_target and _has_no_tables(target, target_database)
        if exists and not reuse:
            raise UsageError(f"database {target_database!r} already exists on {target.describe()}: a restore only "
                             f"creates a new database; choose another --target-database or drop it first",
                             reason="TargetDatabaseExists")
        if not reuse:
            require_createdb(conn, target)
    tools = tools_for(manifest, server.major, environ)
    report = RestoreReport(backup_id=backup_id, source_database=str(obj.database), target_database=target_database)
    dump_format = info.dump_format if info else "custom"
    if dump_format == "plain" and ownership.changes_anything:
        raise UsageError(f"backup {backup_id} holds a plain SQL script (an imported `pg_dump | gzip`): it is replayed "
                         f"as written, so {' / '.join(ownership.option_names)} cannot apply; restore it as a role "
                         f"that may take its owners, or import a custom-format dump (pg_dump -Fc)",
                         reason="UnsupportedRestore")
    if reuse:  # created by the caller (a RestoreRequest's temporary database, or an empty one made beforehand)
        if with_globals:
            report.globals_restored = restore_globals(catalog, manifest, target, tools, identity)
        log("restore.start", backup_id=backup_id, database=obj.database, target_database=target_database,
            target=target.describe(), format=dump_format)
        report.bytes_read, counted = _restore_dump(catalog, manifest, obj, target, tools, target_database,
                                                   identity, dump_format, jobs, scratch, ownership, scratch_limit,
                                                   stage)
        actual = _rows(target, target_database, counted)
    else:
        with RestoreSpace(target, server.version_num) as space:
            space.drop_leftovers(target_database)
            if with_globals:
                report.globals_restored = restore_globals(catalog, manifest, target, tools, identity)
            with space.aside(target_database, manifest.id, ownership.recorded(info.properties if info else None)
                             ) as temp:
                log("restore.start", backup_id=backup_id, database=obj.database, target_database=target_database,
                    temporary_database=temp, target=target.describe(), format=dump_format)
                report.bytes_read, counted = _restore_dump(catalog, manifest, obj, target, tools, temp, identity,
                                                           dump_format, jobs, scratch, ownership, scratch_limit, stage)
                actual = _rows(target, temp, counted)
    expected = info.row_counts if info else {}
    report.tables = [TableCheck(table, expected.get(table), actual.get(table), checked=not manifest.imported)
                     for table in sorted(set(expected) | set(actual))]
    report.duration_seconds = round(time.monotonic() - started, 3)
    log("restore.done", backup_id=backup_id, target_database=target_database, tables=len(report.tables),
        mismatches=[c.table for c in report.mismatches], duration_seconds=report.duration_seconds)
    return report


def _rows(target: ConnParams, database: str, counted: dict[str, int] | None = None) -> dict[str, int]:
    """Every table's row count; those in `counted` were counted as soon as their data was in."""
    with target.connect(database) as conn:
        return count_rows(conn, counted)


def _counter(target: ConnParams, database: str) -> Callable[[str, str], int]:
    def count(schema: str, table: str) -> int:
        with target.connect(database) as conn:
            return count_table(conn, schema, table)
    return count


def _restore_dump(catalog: Catalog, manifest: Manifest, obj: ManifestObject, target: ConnParams, tools: PgTools,
                  database: str, identity: str | None, dump_format: str, jobs: int, scratch: Path | None,
                  ownership: Ownership, scratch_limit: int | None, stage: bool) -> tuple[int, dict[str, int] | None]:
    """Bytes of the dump restored, and the row counts of the tables counted on the way (None: none were)."""
    with damage_reported(catalog, manifest, obj, "nothing was restored (what this restore created is dropped)"):
        return _restore_dump_unchecked(catalog, manifest, obj, target, tools, database, identity, dump_format, jobs,
                                       scratch, ownership, scratch_limit, stage)


def _restore_dump_unchecked(catalog: Catalog, manifest: Manifest, obj: ManifestObject, target: ConnParams,
                            tools: PgTools, database: str, identity: str | None, dump_format: str, jobs: int,
                            scratch: Path | None, ownership: Ownership, scratch_limit: int | None,
                            stage: bool) -> tuple[int, dict[str, int] | None]:
    what = f"pg_restore of backup {manifest.id} database {obj.database!r} into {database!r} on {target.describe()}"
    base = [tools.path("pg_restore"), "--no-password", "--exit-on-error", *ownership.pg_restore_args(), "-d", database]
    env = target.child_env(database)
    counted: dict[str, int] | None = None
    if dump_format == "custom":
        returncode, stderr, written, counted = _restore_custom(catalog, manifest, obj, base, env, identity,
                                                               jobs if stage else 1, scratch, scratch_limit,
                                                               _counter(target, database))
    elif dump_format == "plain":  # an imported `pg_dump | gzip` SQL script: psql replays it, stopping at the first error
        what = f"psql replay of backup {manifest.id} database {obj.database!r} into {database!r} on {target.describe()}"
        args = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-d", database, "-f", "-"]
        returncode, stderr, written = run_with_stdin(args, env, catalog, manifest, obj, identity, "restore")
    else:
        loaded = _restore_directory_as_custom(catalog, manifest, obj, base, env, identity, jobs, scratch,
                                              scratch_limit, _counter(target, database)) if stage and jobs > 1 else None
        if loaded is not None:
            returncode, stderr, written, counted = loaded
        else:
            returncode, stderr, written = _restore_directory(catalog, manifest, obj, base, env, identity, jobs,
                                                             scratch, scratch_limit)
    if returncode != 0:
        refused = ownership.explain_refusal(stderr, target, database)
        if refused is not None:
            raise refused
        raise RunnerError(f"{what} failed: pg_restore {program_ended(returncode, target.scrub(stderr))}"
                          f"{ownership.missing_role_hint(stderr)}; the database this restore created was dropped, "
                          f"nothing else was changed",
                          reason="RestoreFailed")
    return written, counted


def _restore_custom(catalog: Catalog, manifest: Manifest, obj: ManifestObject, base: list[str], env: Mapping[str, str],
                    identity: str | None, jobs: int, scratch: Path | None, scratch_limit: int | None,
                    count: Callable[[str, str], int]) -> tuple[int, str, int, dict[str, int] | None]:
    """A custom-format dump: with jobs > 1 staged in scratch and restored while it is staged (_load_staged);
    when scratch has no room for it, streamed into one pg_restore."""
    if jobs > 1:
        room = scratch_room(scratch, scratch_limit)
        if room.fits(obj.raw_size):
            loaded = _load_staged(catalog, manifest, obj, base, env, identity, jobs, room, count)
            if loaded is not None:
                return loaded
        else:
            log_warning("restore.streaming", database=obj.database, jobs=jobs,
                        reason=f"the dump ({obj.raw_size // (1024 * 1024)} MiB) does not fit in scratch "
                               f"({room.describe()}): restored from a stream, one table at a time")
    return *run_with_stdin(base, env, catalog, manifest, obj, identity, "restore"), None


def _load_staged(catalog: Catalog, manifest: Manifest, obj: ManifestObject, base: list[str], env: Mapping[str, str],
                 identity: str | None, jobs: int, room: ScratchRoom, count: Callable[[str, str], int],
                 convert: Callable[[BinaryIO], Readable] | None = None,
                 ) -> tuple[int, str, int, dict[str, int] | None] | None:
    """A custom-format dump (or what `convert` makes of the object) staged in scratch and restored by `jobs`
    pg_restore runs while it is staged (pgbackup.runner.restore.parallel_load; the row counts of the tables it
    loaded are returned), or by `pg_restore -j jobs` from the staged file (downloaded and verified first, its data
    offsets filled in) when the dump is not one that loads so. None: scratch filled up before anything was
    restored."""
    load = ParallelLoad(room.directory, obj.raw_size, jobs, base, env, count)
    try:
        with staged_object(catalog, manifest, obj, identity, room.directory, observe=load.feed,
                           opened=load.attach, convert=convert) as path:
            staged = path.stat().st_size
            if not load.classic:
                log("restore.parallel", database=obj.database, jobs=jobs, staged_bytes=staged,
                    loaded_while_staging=True, pieces=load.pieces)
                return 0, "", obj.raw_size, load.finish(staged)
            fill_in_offsets(path, load.runs)  # written to a pipe, the dump has none: each job would search
            log("restore.parallel", database=obj.database, jobs=jobs, staged_bytes=staged,
                loaded_while_staging=False, reason=load.reason)
            done = subprocess.run([*base, "-j", str(jobs), str(path)], env=dict(env), capture_output=True,
                                  text=True)
            return done.returncode, done.stderr, obj.raw_size, None
    except PgRestoreFailed as exc:
        return exc.returncode, exc.stderr, obj.raw_size, None
    except LayoutUnexpected as exc:
        raise RunnerError(f"database {obj.database!r} of backup {manifest.id}: its data is not laid out as "
                          f"its table of contents says ({exc}); restore it with jobs: 1, which "
                          f"{'streams it into one pg_restore' if convert is None else 'extracts it first'}",
                          reason="RestoreFailed") from exc
    except ScratchFull as exc:
        if load.started:
            raise
        log_warning("restore.streaming", database=obj.database, reason=str(exc))
        return None
    finally:
        load.close()


def _restore_directory_as_custom(catalog: Catalog, manifest: Manifest, obj: ManifestObject, base: list[str],
                                 env: Mapping[str, str], identity: str | None, jobs: int, scratch: Path | None,
                                 scratch_limit: int | None, count: Callable[[str, str], int],
                                 ) -> tuple[int, str, int, dict[str, int] | None] | None:
    """A directory-format dump read as a custom-format one (pgbackup.runner.restore.directory_dump) and restored
    as one is, while it is staged; None when it is not one read so (or scratch has no room): extract it."""
    room = scratch_room(scratch, scratch_limit)
    if not room.fits(obj.raw_size):
        return None
    try:
        return _load_staged(catalog, manifest, obj, base, env, identity, jobs, room, count, convert=DirectoryAsCustom)
    except NotOrdered as exc:
        log("restore.extracted", database=obj.database, reason=str(exc))
        return None


def _restore_directory(catalog: Catalog, manifest: Manifest, obj: ManifestObject, base: list[str],
                       env: Mapping[str, str], identity: str | None, jobs: int, scratch: Path | None,
                       scratch_limit: int | None) -> tuple[int, str, int]:
    """A directory-format dump extracted into scratch, then restored by `pg_restore -j jobs`."""
    room = scratch_room(scratch, scratch_limit)
    if not room.fits(obj.raw_size):
        raise ScratchFull(f"database {obj.database!r} of backup {manifest.id} is a directory-format dump of "
                          f"{obj.raw_size // (1024 * 1024)} MiB that is extracted into scratch before pg_restore "
                          f"reads it, but there are only {room.describe()}; nothing was restored. Give the "
                          f"restore more scratch (jobTemplate.scratchSizeLimit and the node's disk)")
    workdir = Path(tempfile.mkdtemp(prefix="pgbackup-restore-", dir=scratch))
    try:
        with catalog.open_object(manifest, obj, identity=identity) as stream:
            extract_tar(stream, workdir)
        done = subprocess.run([*base, "-j", str(jobs), str(workdir)], env=dict(env), capture_output=True, text=True)
        return done.returncode, done.stderr, obj.raw_size
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _has_no_tables(target: ConnParams, database: str) -> bool:
    with target.connect(database) as conn:
        row = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                           ).fetchone()
    return row is not None and row[0] == 0


