"""`pgbackup restore-request` end to end (what a RestoreRequest's Job runs): load the request, plan (resolve the
backup, inspect the target, verify checksums; refusals happen here, before any change), then unless it is a dry
run carry the plan out (pgbackup.runner.restore.execute) and restore the volumes, or recover a point in time
(pgbackup.runner.restore.pitr). The JobSummary(kind='restore') is always written."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime

from pgbackup.api import jobenv
from pgbackup.api.restore import RestorePlan, RestoreResult
from pgbackup.api.summary import JobSummary
from pgbackup.runner.catalog.catalog import BackupNotFound, Catalog
from pgbackup.runner.common.config import policy_json, scratch_dir
from pgbackup.runner.common.errors import UsageError, exit_code_for
from pgbackup.runner.common.log import log, log_error
from pgbackup.runner.common.retries import start_run
from pgbackup.runner.common.summary import failure_summary, write_summary
from pgbackup.runner.common.termination import Terminated
from pgbackup.runner.common.timestamps import utc_now
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.execute import execute_restore
from pgbackup.runner.restore.pitr import PitrPlan, PitrTarget, plan_pitr, policy_server_env, restore_to_point
from pgbackup.runner.restore.plan import PlannedRestore, plan_restore
from pgbackup.runner.restore.request import RequestConfig, load_request, target_params
from pgbackup.runner.restore.safety import safety_backup_has_globals
from pgbackup.runner.restore.volumes import plan_volumes, restore_request_volumes
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.factory import open_policy_storage, open_source_storage
from pgbackup.runner.storage.identity import identity_from
from pgbackup.runner.storage.pipeline import IdentityError
from pgbackup.runner.wal.archive import archive_for_policy


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
    start_run()
    started_at = utc_now()
    plan = RestorePlan()
    result: RestoreResult | None = None
    planned: PlannedRestore | None = None
    bytes_read = 0
    try:
        request = request or load_request(request_file, environ)
        dry_run = dry_run or request.spec.dry_run
        if storage is None and request.spec.from_copy:  # spec.fromCopy: read from that copy
            storage = open_source_storage(request.policy, request.spec.from_copy, environ)
        storage = storage or open_policy_storage(request.policy, environ)
        catalog = Catalog(storage, request.policy)
        target = target_params(request, environ)
        identity = identity_from(identity_file, environ)
        log("restore.planning", request=request.name, namespace=request.namespace, policy=request.policy.name,
            backup=request.spec.backup, target=f"{target.host}:{target.port}", dry_run=dry_run)
        if request.spec.point_in_time is not None:
            return run_pitr_request(request, catalog, target, identity, plan, started_at, dry_run, environ)
        planned = plan_restore(request.spec, catalog, target, identity, plan=plan, now=started_at,
                               safety_globals=safety_backup_has_globals(request.spec, request.policy.spec.logical))
        plan_volumes(request.spec, planned.manifest, catalog, plan)
        log("restore.plan", dry_run=dry_run, **plan.to_wire())
        if not dry_run:
            result = RestoreResult(started_at=utc_now())
            bytes_read = execute_restore(request, planned, catalog, identity, result, environ)
            bytes_read += restore_request_volumes(request.spec, planned.manifest, catalog, identity, environ)
            result.completed_at = utc_now()
    except (Exception, Terminated) as exc:  # every failure ends as a Failed summary and an exit code
        summary, code = _summary_failure(exc, started_at)
        if result is not None:
            result.completed_at = utc_now()
        summary = summary.model_copy(update={"backup_id": plan.backup, "plan": plan if plan.backup else None,
                                             "result": result})
        log_error("restore.failed", reason=summary.reason, error=summary.error)
        summary = write_summary(summary, environ)
        if isinstance(exc, Terminated):
            raise  # cli.main turns it into the exit code; what was created is already dropped
        return code, summary
    completed_at = utc_now()
    summary = JobSummary(kind="restore", phase="Completed", backup_id=planned.manifest.id, method="logical",
                         started_at=started_at, completed_at=completed_at,
                         size_bytes=bytes_read or None, manifest=catalog.storage.location(
                             catalog.manifest_key(planned.manifest.id)),
                         duration_seconds=round((completed_at - started_at).total_seconds(), 3),
                         restore_seconds=result.restore_seconds if result else None, plan=plan, result=result)
    log("restore.done" if result else "restore.dry_run_done", backup_id=planned.manifest.id, target=plan.target,
        restore_seconds=summary.restore_seconds, pre_restore_backup=result.pre_restore_backup if result else None,
        previous_database=result.previous_database if result else None)
    return jobenv.EXIT_OK, write_summary(summary, environ)


def run_pitr_request(request: RequestConfig, catalog: Catalog, target: ConnParams, identity: str | None,
                     plan: RestorePlan, started_at: datetime, dry_run: bool, environ: Mapping[str, str]
                     ) -> tuple[int, JobSummary]:
    """spec.pointInTime: recover the newest base backup before the target plus archived WAL in a throwaway
    server, then copy one database logically into a NEW database on the target. The plan (base backup, WAL range)
    is filled before anything changes; a target outside the recoverability window fails right there."""
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
        result = RestoreResult(started_at=utc_now())
        report = restore_to_point(catalog, archive, pitr_target, identity=identity, target_conn=target,
                                  target_database=database, source_database=source, scratch=scratch_dir(environ),
                                  server_env=policy_server_env(policy_json(request.policy), environ), on_plan=record,
                                  login_roles=[target.user], environ=environ, no_privileges=spec.no_privileges)
        result.completed_at = utc_now()
        result.restore_seconds = report.duration_seconds
        result.row_counts = {f"{db}.{table}": count for db, rows in report.row_counts.items()
                             for table, count in rows.items()}
    completed_at = utc_now()
    summary = JobSummary(kind="restore", phase="Completed", backup_id=plan.backup, method="physical",
                         started_at=started_at, completed_at=completed_at,
                         manifest=catalog.storage.location(catalog.manifest_key(str(plan.backup))),
                         duration_seconds=round((completed_at - started_at).total_seconds(), 3),
                         restore_seconds=result.restore_seconds if result else None, plan=plan, result=result)
    log("restore.done" if result else "restore.dry_run_done", backup_id=plan.backup, target=plan.target,
        point_in_time=pitr_target.describe(), restore_seconds=summary.restore_seconds)
    return jobenv.EXIT_OK, write_summary(summary, environ)
