"""`pgbackup restore-request`: what a RestoreRequest's Job runs (jobenv.COMMAND_RESTORE).

Contract with the operator (the Job's environment):

- ``PGBACKUP_RESTORE`` (jobenv.ENV_RESTORE), JSON::

      {"name": <request>, "namespace": <ns>,
       "spec": <RestoreRequestSpec wire dict>,
       "policy": {"name": <policy>, "spec": <BackupPolicySpec wire dict>}}

  The policy is embedded so the runner knows the storage (and its encryption) without API access.
  ``--request FILE`` (same document, JSON or YAML) replaces it for runs by hand.
- ``PGUSER`` / ``PGPASSWORD`` (``PGSSLROOTCERT``): credentials of the TARGET server: from
  ``spec.target.credentialsSecret``, else from the policy's ``database.credentialsSecret``. The safety backup
  taken before an overwrite uses them too (it backs up the target database).
- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (S3 storage) and ``PGBACKUP_VOLUME_ROOT`` (volume storage),
  exactly as for backup Jobs; the safety backup is written there.
- ``PGBACKUP_AGE_IDENTITY_FILE``: the age identity for encrypted backups (mounted from
  ``encryption.identitySecret``).
- ``PGBACKUP_SUMMARY_FILE`` / ``/dev/termination-log``: where the JobSummary(kind='restore') goes, with
  ``plan`` (always, as far as planning got) and ``result`` (when anything was restored).

Sequence: plan (resolve the backup, inspect the target, verify checksums of every object, volumes included;
refusals happen here, before any change) -> [dryRun stops] -> [overwrite: safety backup] -> drop leftovers of
killed restores into the same names -> create the database under a temporary name (marked as an incomplete
restore; the backup's encoding and locale), extensions first, globals, pg_restore -> checks (row counts vs
manifest, extensions, SQL) -> the backup's settings and privileges -> in one transaction: [overwrite: rename the
old database aside] rename the temporary one to the target name, with its recorded comment and owner -> [keep or
drop the old one]. Any failure before the rename drops what was created, so the target name only ever holds a
complete restore and an existing database is never touched unless everything succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import ValidationError

from pgbackup.api import jobenv
from pgbackup.api.policy import LogicalOptions, SqlCheck
from pgbackup.api.restore import CheckResult, RestorePlan, RestoreRequestSpec, RestoreResult
from pgbackup.api.summary import JobSummary
from pgbackup.runner.backup import (
    Terminated,
    exit_code_for,
    failure_summary,
    open_policy_storage,
    take_backup,
    write_summary,
)
from pgbackup.runner.catalog import BackupNotFound, Catalog
from pgbackup.runner.checks import check_extensions, compare_row_counts, failed, run_sql_checks
from pgbackup.runner.config import PolicyConfig, RunnerError, UsageError, policy_from_document, scratch_dir
from pgbackup.runner.log import log, log_error, log_warning
from pgbackup.runner.pg import ConnParams
from pgbackup.runner.pipeline import IdentityError, load_identity
from pgbackup.runner.manifest import DatabaseProperties, Manifest
from pgbackup.runner.restore import (
    RestoreSpace,
    apply_properties,
    drop_database_quietly,
    mark_complete,
    rename_database,
    restore_backup,
)
from pgbackup.runner.restore_plan import ActiveSessions, DatabaseStep, PlannedRestore, plan_restore
from pgbackup.runner.storage.base import Storage, StorageError
from pgbackup.runner.volumes import plan_volumes, restore_request_volumes

SWAP_ATTEMPTS = 3


@dataclass(frozen=True)
class RequestConfig:
    """A RestoreRequest as the runner sees it."""

    name: str
    namespace: str
    spec: RestoreRequestSpec
    policy: PolicyConfig


class ChecksFailed(RunnerError):
    reason = "CheckFailed"


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


def request_from_document(document: Any, origin: str) -> RequestConfig:
    if not isinstance(document, dict) or "spec" not in document or not isinstance(document.get("policy"), dict):
        raise UsageError(f"{origin} must hold {{name, namespace, spec: <RestoreRequest spec>, policy: {{name, spec: "
                         f"<BackupPolicy spec>}}}}", reason="InvalidRestoreRequest")
    try:
        spec = RestoreRequestSpec.model_validate(document["spec"])
    except ValidationError as exc:
        raise UsageError(f"the RestoreRequest spec in {origin} is invalid: {_problems(exc)}",
                         reason="InvalidRestoreRequest") from exc
    namespace = str(document.get("namespace") or "default")
    policy_doc = {"namespace": namespace, **document["policy"]}
    policy = policy_from_document(policy_doc, f"{origin} (policy)")
    return RequestConfig(name=str(document.get("name") or "local"), namespace=namespace, spec=spec, policy=policy)


def load_request(path: str | Path | None, environ: Mapping[str, str]) -> RequestConfig:
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the restore request file {path}: {exc.strerror}") from exc
        origin = str(path)
    else:
        text = environ.get(jobenv.ENV_RESTORE, "")
        origin = jobenv.ENV_RESTORE
        if not text:
            raise UsageError(f"no restore request: set {jobenv.ENV_RESTORE} to its JSON or pass --request FILE",
                             reason="InvalidRestoreRequest")
    try:
        document = json.loads(text)
    except ValueError:
        import yaml

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{origin} is neither JSON nor YAML: {exc}", reason="InvalidRestoreRequest") from exc
    return request_from_document(document, origin)


def target_params(request: RequestConfig, environ: Mapping[str, str]) -> ConnParams:
    """Target server from spec.target (defaults: the policy's database), login from PGUSER/PGPASSWORD."""
    database = request.policy.spec.database
    target = request.spec.target
    secret = target.credentials_secret or database.credentials_secret
    hint = f"keys {secret.username_key!r}/{secret.password_key!r} of Secret {secret.name!r}"
    user = environ.get(jobenv.ENV_DB_USER)
    if not user:
        raise UsageError(f"{jobenv.ENV_DB_USER} is not set: the restore Job takes it from {hint}; set it when "
                         f"running the runner by hand")
    return ConnParams(host=target.host or database.host, port=target.port or database.port, user=user,
                      password=environ.get(jobenv.ENV_DB_PASSWORD) or None, sslmode=database.ssl_mode,
                      sslrootcert=environ.get(jobenv.ENV_DB_SSLROOTCERT) or None, credentials_hint=hint)


def _identity(identity_file: str | None, environ: Mapping[str, str]) -> str | None:
    path = identity_file or environ.get(jobenv.ENV_AGE_IDENTITY_FILE)
    return load_identity(path) if path else None


# ---------------------------------------------------------------- the restore itself


def _ddl(target: ConnParams, statement: sql.Composed) -> None:
    with target.connect("postgres") as conn:
        conn.execute(statement)


def _drop(target: ConnParams, name: str, version_num: int) -> None:
    force = sql.SQL(" WITH (FORCE)") if version_num >= 130000 else sql.SQL("")
    _ddl(target, sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))


def _drop_quietly(target: ConnParams, name: str, version_num: int) -> bool:
    try:
        _drop(target, name, version_num)
        log("restore.dropped", database=name)
        return True
    except Exception as exc:  # noqa: BLE001 - the original failure is what gets reported
        log_warning("restore.cleanup_failed", database=name, error=exc,
                    hint=f"drop database {name!r} by hand; no other database was changed")
        return False


def recorded_properties(manifest: Manifest, source: str) -> DatabaseProperties | None:
    return next((d.properties for d in manifest.databases if d.name == source), None)


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
        drop_database_quietly(target, name)  # created here, so dropped here: the caller never saw it
        raise


def safety_backup_has_globals(spec: RestoreRequestSpec, logical: LogicalOptions) -> bool:
    return logical.globals or spec.include_globals


def take_safety_backup(request: RequestConfig, target: ConnParams, databases: Sequence[str], storage: Storage,
                       environ: Mapping[str, str]) -> str:
    """A normal logical backup of the databases about to be replaced, in the policy's storage (same
    compression and encryption), taken with the target's credentials. Returns its backup id.

    Whole like the policy's own backups: the roles and tablespaces (pg_dumpall --globals-only, honouring
    logical.noRolePasswords) unless the policy's logical.globals is false and the request replays no globals
    (a request with includeGlobals changes roles, so their state before is always kept)."""
    spec = request.policy.spec
    database = spec.database.model_copy(update={
        "host": target.host, "port": target.port, "databases": list(databases),
        "credentials_secret": request.spec.target.credentials_secret or spec.database.credentials_secret})
    safety = spec.model_copy(update={"database": database, "method": "logical", "logical": spec.logical.model_copy(
        update={"globals": safety_backup_has_globals(request.spec, spec.logical)})})
    log("restore.safety_backup.start", databases=list(databases), target=f"{target.host}:{target.port}")
    outcome = take_backup(PolicyConfig(name=request.policy.name, namespace=request.policy.namespace, spec=safety),
                          storage, environ=environ, purpose="pre-restore")
    log("restore.safety_backup.done", backup_id=outcome.manifest.id, manifest=outcome.location)
    return outcome.manifest.id


def _rename_check_names(results: list[CheckResult], temp: str, final: str) -> list[CheckResult]:
    if temp == final:
        return results
    return [r.model_copy(update={"name": r.name.replace(f":{temp}.", f":{final}.", 1)}) for r in results]


def _run_checks(spec: RestoreRequestSpec, planned: PlannedRestore, actual_rows: dict[str, dict[str, int]]
                ) -> tuple[list[CheckResult], dict[str, int]]:
    target = planned.target
    checks: list[CheckResult] = []
    row_counts: dict[str, int] = {}
    for step in planned.databases:
        actual = actual_rows[step.source]
        row_counts.update({f"{step.target}.{table}": count for table, count in actual.items()})
        if not planned.manifest.imported:  # an imported dump recorded no row counts to compare with
            checks += compare_row_counts(step.expected_rows, actual, database=step.target)
        checks += _rename_check_names(check_extensions(target, step.restore_into, spec.extensions),
                                      step.restore_into, step.target)
    # A check naming the backup's database (or the target name) runs in what was restored, before any swap.
    into = {name: step.restore_into for step in planned.databases for name in (step.source, step.target)}
    mapped = [SqlCheck(name=c.name, database=into.get(c.database, c.database), sql=c.sql) for c in spec.checks]
    checks += run_sql_checks(target, mapped)
    return checks, row_counts


def _terminate_sessions(conn: psycopg.Connection, database: str) -> int:
    rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (database,)).fetchall()
    return len(rows)


def _swap(spec: RestoreRequestSpec, planned: PlannedRestore, steps: Sequence[DatabaseStep]) -> None:
    """Rename every replaced database to its dated name and every temporary one to its real name (with the
    recorded comment and owner), all in one transaction: either every rename happens or none does."""
    target = planned.target
    where = f"{target.host}:{target.port}"
    with target.connect("postgres") as conn:
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            if spec.target.terminate_connections and any(step.replaces for step in steps):
                for step in steps:
                    if not step.replaces:
                        continue
                    ended = _terminate_sessions(conn, step.target)
                    log("restore.sessions_terminated", database=step.target, sessions=ended)
                time.sleep(0.2 * attempt)  # terminated backends leave asynchronously
            try:
                with conn.transaction():
                    for step in steps:
                        owner = None
                        if step.replaces:
                            row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                               (step.target,)).fetchone()
                            owner = str(row[0]) if row else None
                            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(step.target), sql.Identifier(str(step.previous))))
                        rename_database(conn, step.restore_into, step.target)
                        mark_complete(conn, step.target, recorded_properties(planned.manifest, step.source),
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
    if spec.include is not None:  # only some tables: runner/selective.py (replaces just those in an existing database)
        from pgbackup.runner.selective import execute_selective

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
                                    allow_empty_target=True)
            bytes_read += report.bytes_read
            actual_rows[step.source] = {t.table: int(t.actual) for t in report.tables if t.actual is not None}
        result.restore_seconds = round(time.monotonic() - clock, 3)
        result.checks, result.row_counts = _run_checks(spec, planned, actual_rows)
        bad = failed(result.checks)
        if bad:
            rowcount_only = all(c.name.startswith("rowcount:") for c in bad)
            listing = "; ".join(f"{c.name}: {c.message}" for c in bad[:10])
            raise ChecksFailed(f"{len(bad)} of {len(result.checks)} post-restore check(s) failed: {listing}",
                               reason="RowCountMismatch" if rowcount_only else "CheckFailed")
        for step in planned.databases:
            apply_properties(target, step.restore_into, recorded_properties(planned.manifest, step.source))
        _swap(spec, planned, planned.databases)
    except BaseException as exc:
        dropped = [name for name in created if _drop_quietly(target, name, planned.server_version_num)]
        untouched = [s.target for s in replaced]
        not_created = [s.target for s in planned.databases if not s.replaces]
        note = (f"; dropped {', '.join(map(repr, dropped))}" if dropped else "") + (
            f"; {', '.join(map(repr, not_created))} not created" if not_created else "") + (
            f"; {', '.join(map(repr, untouched))} unchanged" if untouched else "")
        if isinstance(exc, RunnerError):
            raise type(exc)(f"{exc}{note}", reason=exc.reason, exit_code=exc.exit_code) from None
        if isinstance(exc, Exception):  # storage or decryption trouble while reading: keep its exit code
            reason = getattr(exc, "reason", None) or ("StorageFailed" if isinstance(exc, StorageError)
                                                      else "InternalError")
            raise RunnerError(f"{exc}{note}", reason=reason, exit_code=exit_code_for(exc)) from exc
        raise
    finally:
        space.close()
    for step in replaced:
        if spec.target.drop_previous:
            try:
                _drop(target, str(step.previous), planned.server_version_num)
                log("restore.previous_dropped", database=step.previous)
            except Exception as exc:  # noqa: BLE001 - the restore is done; say what is left
                log_warning("restore.previous_drop_failed", database=step.previous, error=exc,
                            hint=f"the restore succeeded; drop {step.previous!r} by hand")
                result.previous_database = step.previous
        else:
            result.previous_database = step.previous  # one per request in practice; the last one wins
    return bytes_read


# ---------------------------------------------------------------- `pgbackup restore-request`


def _summary_failure(exc: BaseException, started_at: datetime) -> tuple[JobSummary, int]:
    summary = failure_summary("restore", exc, started_at, "logical")
    code = exit_code_for(exc)
    if isinstance(exc, BackupNotFound):
        summary, code = summary.model_copy(update={"reason": "BackupNotFound"}), jobenv.EXIT_USAGE
    elif isinstance(exc, IdentityError):
        summary, code = summary.model_copy(update={"reason": "IdentityMissing"}), jobenv.EXIT_USAGE
    return summary, code


def run_restore_request(request: RequestConfig | None = None, *, request_file: str | None = None,
                        identity_file: str | None = None, dry_run: bool = False, storage: Storage | None = None,
                        environ: Mapping[str, str] | None = None) -> tuple[int, JobSummary]:
    """Plan, then (unless dry run) restore; always writes the JobSummary. Returns (exit code, summary)."""
    environ = os.environ if environ is None else environ
    started_at = datetime.now(UTC)
    plan = RestorePlan()
    result: RestoreResult | None = None
    planned: PlannedRestore | None = None
    bytes_read = 0
    try:
        request = request or load_request(request_file, environ)
        dry_run = dry_run or request.spec.dry_run
        if storage is None and request.spec.from_copy:
            from pgbackup.runner.copies import open_source_storage  # spec.fromCopy: read from that copy

            storage = open_source_storage(request.policy, request.spec.from_copy, environ)
        storage = storage or open_policy_storage(request.policy, environ)
        catalog = Catalog(storage, request.policy)
        target = target_params(request, environ)
        identity = _identity(identity_file, environ)
        log("restore.planning", request=request.name, namespace=request.namespace, policy=request.policy.name,
            backup=request.spec.backup, target=f"{target.host}:{target.port}", dry_run=dry_run)
        if request.spec.point_in_time is not None:
            return run_pitr_request(request, catalog, target, identity, plan, started_at, dry_run, environ)
        planned = plan_restore(request.spec, catalog, target, identity, plan=plan, now=started_at,
                               safety_globals=safety_backup_has_globals(request.spec, request.policy.spec.logical))
        plan_volumes(request.spec, planned.manifest, catalog, plan)
        log("restore.plan", dry_run=dry_run, **plan.to_wire())
        if not dry_run:
            result = RestoreResult(started_at=datetime.now(UTC))
            bytes_read = execute_restore(request, planned, catalog, identity, result, environ)
            bytes_read += restore_request_volumes(request.spec, planned.manifest, catalog, identity, environ)
            result.completed_at = datetime.now(UTC)
    except (Exception, Terminated) as exc:  # every failure ends as a Failed summary and an exit code
        summary, code = _summary_failure(exc, started_at)
        if result is not None:
            result.completed_at = datetime.now(UTC)
        summary = summary.model_copy(update={"backup_id": plan.backup, "plan": plan if plan.backup else None,
                                             "result": result})
        log_error("restore.failed", reason=summary.reason, error=summary.error)
        write_summary(summary, environ)
        if isinstance(exc, Terminated):
            raise  # cli.main turns it into the exit code; what was created is already dropped
        return code, summary
    completed_at = datetime.now(UTC)
    summary = JobSummary(kind="restore", phase="Completed", backup_id=planned.manifest.id, method="logical",
                         started_at=started_at, completed_at=completed_at,
                         size_bytes=bytes_read or None, manifest=catalog.storage.location(
                             catalog.manifest_key(planned.manifest.id)),
                         duration_seconds=round((completed_at - started_at).total_seconds(), 3),
                         restore_seconds=result.restore_seconds if result else None, plan=plan, result=result)
    log("restore.done" if result else "restore.dry_run_done", backup_id=planned.manifest.id, target=plan.target,
        restore_seconds=summary.restore_seconds, pre_restore_backup=result.pre_restore_backup if result else None,
        previous_database=result.previous_database if result else None)
    write_summary(summary, environ)
    return jobenv.EXIT_OK, summary


def run_pitr_request(request: RequestConfig, catalog: Catalog, target: ConnParams, identity: str | None,
                     plan: RestorePlan, started_at: datetime, dry_run: bool, environ: Mapping[str, str]
                     ) -> tuple[int, JobSummary]:
    """spec.pointInTime: recover the newest base backup before the target plus archived WAL in a throwaway
    server, then copy one database logically into a NEW database on the target. The plan (base backup, WAL range)
    is filled before anything changes; a target outside the recoverability window fails right there."""
    from pgbackup.runner.pitr import PitrPlan, PitrTarget, plan_pitr, policy_server_env, restore_to_point
    from pgbackup.runner.wal.archive import archive_for_policy

    spec = request.spec
    point = spec.point_in_time
    assert point is not None
    if spec.target.volume is not None or spec.target.overwrite:
        raise UsageError("pointInTime restores into a RestoreRequest copy one database into a NEW database: remove "
                         "target.volume / target.overwrite (to get a data directory, run `pgbackup restore latest "
                         "--target-time T --target-dir DIR`)", reason="UnsupportedRestore")
    if len(spec.databases) > 1 or not (spec.databases or spec.target.database):
        raise UsageError("a pointInTime restore copies one database: set spec.databases to [its name] (and "
                         "optionally target.database)", reason="UnsupportedRestore")
    source = spec.databases[0] if spec.databases else None
    database = spec.target.database or f"{source}_pitr"
    pitr_target = PitrTarget(time=point.target_time, lsn=point.target_lsn)
    archive = archive_for_policy(request.policy, storage=catalog.storage, identity=identity)

    def record(pitr: PitrPlan) -> None:
        plan.backup = pitr.backup_id
        plan.wal_from, plan.wal_to = pitr.wal_from, pitr.wal_to
        plan.target = f"{target.host}:{target.port}/{database}"
        plan.steps = [*pitr.steps, f"copy database {source} into the new database {database!r} on "
                                   f"{target.host}:{target.port} (pg_dump | pg_restore)"]
        log("restore.plan", dry_run=dry_run, **plan.to_wire())

    if dry_run:
        record(plan_pitr(catalog, archive, pitr_target))
        result = None
    else:
        result = RestoreResult(started_at=datetime.now(UTC))
        policy_json = json.dumps({"name": request.policy.name, "namespace": request.policy.namespace,
                                  "spec": request.policy.spec.to_wire()})
        report = restore_to_point(catalog, archive, pitr_target, identity=identity, target_conn=target,
                                  target_database=database, source_database=source, scratch=scratch_dir(environ),
                                  server_env=policy_server_env(policy_json, environ), on_plan=record,
                                  login_roles=[target.user], environ=environ)
        result.completed_at = datetime.now(UTC)
        result.restore_seconds = report.duration_seconds
        result.row_counts = {f"{db}.{table}": count for db, rows in report.row_counts.items()
                             for table, count in rows.items()}
    completed_at = datetime.now(UTC)
    summary = JobSummary(kind="restore", phase="Completed", backup_id=plan.backup, method="physical",
                         started_at=started_at, completed_at=completed_at,
                         manifest=catalog.storage.location(catalog.manifest_key(str(plan.backup))),
                         duration_seconds=round((completed_at - started_at).total_seconds(), 3),
                         restore_seconds=result.restore_seconds if result else None, plan=plan, result=result)
    log("restore.done" if result else "restore.dry_run_done", backup_id=plan.backup, target=plan.target,
        point_in_time=pitr_target.describe(), restore_seconds=summary.restore_seconds)
    write_summary(summary, environ)
    return jobenv.EXIT_OK, summary


def _print_human(summary: JobSummary) -> None:
    if summary.plan is not None:
        print(f"plan: backup {summary.plan.backup} -> {summary.plan.target}")
        for number, step in enumerate(summary.plan.steps, 1):
            print(f"  {number}. {step}")
    if summary.result is not None:
        for check in summary.result.checks:
            print(f"{check.name:<60} {'ok' if check.passed else 'FAILED':<7} {check.message}")
        if summary.result.pre_restore_backup:
            print(f"safety backup: {summary.result.pre_restore_backup}")
        if summary.result.previous_database:
            print(f"replaced database kept as: {summary.result.previous_database}")
    if summary.phase == "Failed":
        print(f"pgbackup restore-request: {summary.error}", file=sys.stderr)
    else:
        print("dry run: nothing was changed" if summary.result is None else "restore completed")


def cmd_restore_request(args: argparse.Namespace) -> int:
    """The handler of `pgbackup restore-request` (needs no --policy: the request embeds it)."""
    code, summary = run_restore_request(request_file=args.request, identity_file=args.identity_file,
                                        dry_run=args.dry_run)
    if args.json:
        print(summary.model_dump_json(by_alias=True, exclude_none=True, indent=2))
    else:
        _print_human(summary)
    return code


def add_restore_request_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Register `pgbackup restore-request` on cli's sub-command parsers (handler: cmd_restore_request(args))."""
    help_text = ("carry out a RestoreRequest: plan (backup, target, checksums), then restore into a new database "
                 "or, with overwrite, swap a checked copy in; writes the restore JobSummary")
    epilog = ("exit codes: 0 ok (also a dry run), 1 failed (restore, checks, active sessions, damaged backup),\n"
              "2 network (PostgreSQL or storage unreachable), 3 usage (invalid request, unknown backup id, target\n"
              f"exists without overwrite), 4 unexpected. The request comes from ${jobenv.ENV_RESTORE} or --request.")
    sub: argparse.ArgumentParser = subparsers.add_parser(
        "restore-request", help=help_text, description=help_text, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("--request", metavar="FILE",
                     help=f"request JSON/YAML {{name, namespace, spec, policy: {{name, spec}}}} "
                          f"(default: ${jobenv.ENV_RESTORE})")
    sub.add_argument("--identity-file", metavar="FILE",
                     help=f"age identity for encrypted backups (default: ${jobenv.ENV_AGE_IDENTITY_FILE})")
    sub.add_argument("--dry-run", action="store_true", help="only plan and report, change nothing")
    sub.add_argument("--json", action="store_true", help="print the JobSummary as JSON")
    sub.set_defaults(handler=cmd_restore_request)
    return sub


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pgbackup.runner.restore_request` = `pgbackup restore-request` (until cli.py wires it)."""
    parser = argparse.ArgumentParser(prog="pgbackup")
    add_restore_request_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["restore-request", *(sys.argv[1:] if argv is None else argv)])
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
