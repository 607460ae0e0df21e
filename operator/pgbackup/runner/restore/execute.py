"""Carrying out a planned RestoreRequest: whole databases (made aside, checked, then swapped in under their names
in one transaction) or, with spec.include, only some tables (pgbackup.runner.restore.selective). Any failure
before the swap drops what was created, so an existing database is never touched unless everything succeeded."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import psycopg
from psycopg import sql

from pgbackup.api.restore import RestoreInclude, RestoreRequestSpec, RestoreResult
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import DatabaseProperties, Manifest
from pgbackup.runner.common.config import scratch_dir
from pgbackup.runner.common.errors import RunnerError, UsageError, exit_code_for, failure_reason
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.postgres.facts import server_info
from pgbackup.runner.restore.checks import raise_on_failed, run_checks
from pgbackup.runner.restore.ddl import (
    RestoreSpace,
    apply_properties,
    drop_database,
    drop_quietly,
    mark_complete,
    rename_database,
    terminate_sessions,
)
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.restore.ownership import Ownership
from pgbackup.runner.restore.plan import ActiveSessions, DatabaseStep, PlannedRestore
from pgbackup.runner.restore.reading import tools_for
from pgbackup.runner.restore.request import RequestConfig
from pgbackup.runner.restore.safety import take_safety_backup
from pgbackup.runner.restore.staging import scratch_limit_for
from pgbackup.runner.restore.selective import (
    Selection,
    apply_selection,
    count_tables,
    dump_format_of,
    expected_rows,
    prepare_selection,
)

SWAP_ATTEMPTS = 3


def recorded_properties(manifest: Manifest, source: str) -> DatabaseProperties | None:
    return next((d.properties for d in manifest.databases if d.name == source), None)


def restored_properties(spec: RestoreRequestSpec, manifest: Manifest, source: str) -> DatabaseProperties | None:
    """The recorded properties the restore gives the database: without owner / GRANTs under noOwner /
    noPrivileges."""
    return Ownership.of(spec).recorded(recorded_properties(manifest, source))


def create_restore_database(space: RestoreSpace, step: DatabaseStep, manifest: Manifest,
                            extensions: Sequence[str]) -> None:
    """The database `step` restores into (its temporary name, marked as incomplete), with the backup's encoding
    and locale, and the extensions spec.extensions asks for."""
    space.create(step.restore_into, step.target, manifest.id, recorded_properties(manifest, step.source))
    if not extensions:
        return
    target, name = space.target, step.restore_into
    try:
        with target.connect(name) as conn:
            for extension in extensions:
                try:
                    conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)))
                except psycopg.Error as exc:
                    raise RunnerError(
                        f"cannot create extension {extension!r} in database {name!r} on {target.host}:{target.port}: "
                        f"{str(exc).strip().splitlines()[0]}. Install it on the server (or remove it from "
                        f"spec.extensions)", reason="ExtensionMissing") from None
    except BaseException:
        drop_quietly(target, name, space.version_num)  # created here, so dropped here: the caller never saw it
        raise


def swap(spec: RestoreRequestSpec, planned: PlannedRestore, steps: Sequence[DatabaseStep]) -> None:
    """Rename every replaced database to its dated name and every temporary one to its real name (with the
    recorded comment and owner), all in one transaction: either every rename happens or none does."""
    target = planned.target
    where = f"{target.host}:{target.port}"
    keep_owner = not spec.no_owner
    with target.connect("postgres") as conn:
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            if spec.target.terminate_connections and any(step.replaces for step in steps):
                for step in steps:
                    if not step.replaces:
                        continue
                    ended = terminate_sessions(conn, step.target)
                    log("restore.sessions_terminated", database=step.target, sessions=ended)
                time.sleep(0.2 * attempt)  # terminated backends leave asynchronously
            try:
                with conn.transaction():
                    for step in steps:
                        owner = None
                        if step.replaces and keep_owner:
                            row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                               (step.target,)).fetchone()
                            owner = str(row[0]) if row else None
                        if step.replaces:
                            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(step.target), sql.Identifier(str(step.previous))))
                        rename_database(conn, step.restore_into, step.target)
                        mark_complete(conn, step.target, restored_properties(spec, planned.manifest, step.source),
                                      fallback_owner=owner)
                log("restore.swapped", databases={s.target: s.previous for s in steps if s.replaces},
                    renamed={s.restore_into: s.target for s in steps})
                return
            except psycopg.errors.ObjectInUse as exc:
                if spec.target.terminate_connections and attempt < SWAP_ATTEMPTS:
                    continue
                detail = (exc.diag.message_detail or str(exc)).strip()
                raise ActiveSessions(
                    f"cannot swap in the restored database on {where}: {detail}. The restore itself succeeded and "
                    f"passed its checks, but sessions (re)connected to the target; nothing was swapped. Stop the "
                    f"applications, or set target.terminateConnections: true, and run the restore again") from None
            except psycopg.Error as exc:
                raise RunnerError(f"cannot swap in the restored database on {where}: "
                                  f"{str(exc).strip().splitlines()[0]}; nothing was swapped",
                                  reason="SwapFailed") from None


def execute_restore(request: RequestConfig, planned: PlannedRestore, catalog: Catalog, identity: str | None,
                    result: RestoreResult, environ: Mapping[str, str]) -> int:
    """Carry out a plan, filling `result` as it goes (so a failure still reports what happened).
    Returns the bytes read from storage."""
    spec = request.spec
    if spec.include is not None:  # only some tables (replaces just those in an existing database)
        return execute_selective(request, planned, catalog, identity, result, environ)
    target = planned.target
    replaced = [step for step in planned.databases if step.replaces]
    if replaced and spec.target.pre_restore_backup:
        result.pre_restore_backup = take_safety_backup(request, target, [s.target for s in replaced],
                                                       catalog.storage, environ)
    created: list[str] = []
    bytes_read = 0
    clock = time.monotonic()
    space = RestoreSpace(target, planned.server_version_num)
    try:
        for step in planned.databases:
            space.drop_leftovers(step.target)
        actual_rows: dict[str, dict[str, int]] = {}
        for index, step in enumerate(planned.databases):
            log("restore.database.start", source=step.source, database=step.restore_into, final=step.target)
            create_restore_database(space, step, planned.manifest, spec.extensions)
            created.append(step.restore_into)
            report = restore_backup(catalog, planned.manifest.id, target, step.restore_into, identity,
                                    source_database=step.source, with_globals=spec.include_globals and index == 0,
                                    jobs=spec.jobs, scratch=scratch_dir(environ), environ=environ,
                                    allow_empty_target=True, ownership=Ownership.of(spec),
                                    scratch_limit=scratch_limit_for(request.policy.spec, scratch_dir(environ)))
            bytes_read += report.bytes_read
            actual_rows[step.source] = {t.table: int(t.actual) for t in report.tables if t.actual is not None}
        result.restore_seconds = round(time.monotonic() - clock, 3)
        result.checks, result.row_counts = run_checks(spec, planned, actual_rows)
        raise_on_failed(result.checks)
        for step in planned.databases:
            apply_properties(target, step.restore_into, restored_properties(spec, planned.manifest, step.source))
        swap(spec, planned, planned.databases)
    except BaseException as exc:
        dropped = [name for name in created if drop_quietly(target, name, planned.server_version_num)]
        untouched = [s.target for s in replaced]
        not_created = [s.target for s in planned.databases if not s.replaces]
        note = (f"; dropped {', '.join(map(repr, dropped))}" if dropped else "") + (
            f"; {', '.join(map(repr, not_created))} not created" if not_created else "") + (
            f"; {', '.join(map(repr, untouched))} unchanged" if untouched else "")
        if isinstance(exc, RunnerError):
            raise type(exc)(f"{exc}{note}", reason=exc.reason, exit_code=exc.exit_code) from None
        if isinstance(exc, Exception):  # storage or decryption trouble while reading: keep its exit code
            raise RunnerError(f"{exc}{note}", reason=failure_reason(exc), exit_code=exit_code_for(exc)) from exc
        raise
    finally:
        space.close()
    for step in replaced:
        if spec.target.drop_previous:
            try:
                drop_database(target, str(step.previous), planned.server_version_num)
                log("restore.previous_dropped", database=step.previous)
            except Exception as exc:  # noqa: BLE001 - the restore is done; say what is left
                log_warning("restore.previous_drop_failed", database=step.previous, error=exc,
                            hint=f"the restore succeeded; drop {step.previous!r} by hand")
                result.previous_database = step.previous
        else:
            result.previous_database = step.previous  # one per request in practice; the last one wins
    return bytes_read


def execute_selective(request: RequestConfig, planned: PlannedRestore, catalog: Catalog, identity: str | None,
                      result: RestoreResult, environ: Mapping[str, str]) -> int:
    """RestoreRequest with spec.include: returns the bytes read from storage."""
    spec = request.spec
    include = spec.include
    assert isinstance(include, RestoreInclude)
    if len(planned.databases) != 1:
        raise UsageError(f"spec.include restores objects of one database, but {len(planned.databases)} would be "
                         f"restored: list exactly one in spec.databases", reason="InvalidRestoreRequest")
    selection = Selection.parse(include.schemas, include.tables)
    target = planned.target
    step = planned.databases[0]
    manifest = planned.manifest
    with target.connect("postgres") as conn:
        server = server_info(conn)
    tools = tools_for(manifest, server.major, environ)
    with prepare_selection(catalog, manifest, step.obj, dump_format_of(manifest, step.obj), selection, tools, identity,
                           scratch_dir(environ), target.child_env("postgres"),
                           Ownership.of(spec).pg_restore_args()) as prepared:
        if step.replaces and spec.target.pre_restore_backup:
            result.pre_restore_backup = take_safety_backup(request, target, [step.target], catalog.storage, environ)
        step.expected_rows = expected_rows(manifest, step.obj, prepared.selected.tables)
        clock = time.monotonic()
        space = RestoreSpace(target, planned.server_version_num)
        try:
            space.drop_leftovers(step.target)
            create_restore_database(space, step, manifest, spec.extensions)
        except BaseException:
            space.close()
            raise
        try:
            apply_selection(target, step.restore_into, tools, prepared, replace=False, ownership=Ownership.of(spec))
            actual = count_tables(target, step.restore_into, prepared.selected.tables)
            result.restore_seconds = round(time.monotonic() - clock, 3)
            result.checks, result.row_counts = run_checks(spec, planned, {step.source: actual})
            raise_on_failed(result.checks, f"; {step.target!r} unchanged" if step.replaces else "",
                            rowcount_reason=False)
            if step.replaces:
                if spec.target.terminate_connections:
                    with target.connect("postgres") as conn:
                        ended = terminate_sessions(conn, step.target)
                    log("restore.sessions_terminated", database=step.target, sessions=ended)
                apply_selection(target, step.target, tools, prepared, replace=True, expected_rows=actual)
                log("restore.selective.replaced", database=step.target, tables=sorted(actual))
            else:  # a new database: the checked temporary one gets the name, with the recorded properties
                properties = restored_properties(spec, manifest, step.source)
                apply_properties(target, step.restore_into, properties)
                with target.connect("postgres") as conn, conn.transaction():
                    rename_database(conn, step.restore_into, step.target)
                    mark_complete(conn, step.target, properties)
        except BaseException:
            drop_quietly(target, step.restore_into, planned.server_version_num)
            raise
        finally:
            space.close()
        if step.replaces:
            drop_quietly(target, step.restore_into, planned.server_version_num)
        return prepared.bytes_read
