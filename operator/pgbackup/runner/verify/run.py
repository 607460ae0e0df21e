"""Restore verification: prove a backup by restoring it into a throwaway PostgreSQL and checking it.

Sequence: manifest -> every object's size and SHA-256 (a damaged backup fails before anything is restored)
-> a throwaway server of the backup's major version (logical: a fresh initdb, globals then every database;
physical: the restored data directory itself, recovered to consistency from the WAL it carries) -> row counts
against the manifest -> extensions -> the policy's SQL checks -> `<id>/verification.json` beside the manifest
(the catalog marks the backup verified from it) -> a JobSummary(kind='verify') for the operator.

A backup problem (damaged object, failed restore, wrong row counts, failing check) is a verification result:
recorded as Failed with its reason. A problem of this environment (no server binaries, no age identity,
storage unreachable, initdb failing) is an error of the run: nothing is recorded, the Job fails with the reason.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pgbackup.api import jobenv
from pgbackup.api.policy import SqlCheck, VerifySpec
from pgbackup.api.restore import CheckResult
from pgbackup.api.summary import JobSummary
from pgbackup.runner.common.errors import exit_code_for
from pgbackup.runner.common.retries import start_run
from pgbackup.runner.common.summary import failure_summary, write_summary
from pgbackup.runner.storage.factory import open_policy_storage
from pgbackup.runner.catalog.catalog import BackupNotFound, Catalog
from pgbackup.runner.postgres.checks import check_extensions, compare_row_counts, failed, run_sql_checks
from pgbackup.runner.common.config import PolicyConfig, scratch_dir as default_scratch_dir
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.postgres.account import make_workspace, server_account
from pgbackup.runner.postgres.instance import ThrowawayPostgres, ThrowawayServerError
from pgbackup.runner.postgres.tools import major_of, server_tools
from pgbackup.runner.verify.record import (
    VerificationOutcome,
    VerificationReason,
    VerificationRecord,
    verification_key,
)
from pgbackup.runner.verify.roles import create_roles, roles_needed
from pgbackup.runner.common.log import log, log_error, log_warning
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.storage.identity import identity_from
from pgbackup.runner.storage.pipeline import DecryptionError, IdentityError, IntegrityError
from pgbackup.runner.restore.logical import restore_backup, restore_globals
from pgbackup.runner.restore.physical import restore_physical
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.common.termination import Terminated
from pgbackup.runner.common.timestamps import utc_now

# RunnerError reasons that mean this environment cannot verify, not that the backup is broken.
_ENVIRONMENT_REASONS = frozenset({"ServerBinariesMissing", "ServerAccountMissing", "ToolsMissing",
                                  "VerificationLoginFailed", "Terminated"})
RESTORE_JOBS = 2
# Not a name the backed-up cluster is likely to have: its globals must not redefine (demote) our superuser.
VERIFY_SUPERUSER = "pgbackup_verifier_superuser"
_UNUSABLE = "Do not rely on this backup: take a new one and keep the verification Job's log for investigation"
_MAX_LISTED = 5


# ---------------------------------------------------------------- the verification


@dataclass
class _Restored:
    restore_seconds: float
    server_version: str
    checks: list[CheckResult]


class _BackupBroken(Exception):
    """The backup could not be restored: recorded as RestoreFailed."""


def verify_backup(catalog: Catalog, backup_id: str, verify_spec: VerifySpec, *, identity: str | None,
                  scratch_dir: Path | None = None, environ: Mapping[str, str] | None = None,
                  write: bool = True, check_timeout_seconds: int = 60) -> VerificationOutcome:
    """Verify one backup and (with `write`) store `<id>/verification.json`. Raises for problems of the
    environment (BackupNotFound, ServerBinariesMissing, IdentityError, storage unreachable, initdb failing)."""
    environ = os.environ if environ is None else environ
    manifest = catalog.get(backup_id)
    if manifest.encryption_recipients and not identity:
        raise IdentityError(f"backup {backup_id} is encrypted and no age identity was given: set "
                            f"encryption.identitySecret so the verification Job mounts the private key")
    log("verify.start", backup_id=backup_id, method=manifest.method, server_version=manifest.server_version)
    check = catalog.check(backup_id)
    if not check.ok:
        checks = [CheckResult(name=f"checksum:{p.key}", passed=False, message=f"{p.status}: {p.message}")
                  for p in check.problems]
        record = _record(manifest, "RestoreFailed", f"nothing was restored: {check.summary()}. {_UNUSABLE}",
                         checks=checks)
        return _finish(catalog, record, write)
    try:
        if manifest.method == "logical":
            restored = _verify_logical(catalog, manifest, verify_spec, identity, scratch_dir, environ,
                                       check_timeout_seconds)
        else:
            restored = _verify_physical(catalog, manifest, verify_spec, identity, scratch_dir, environ,
                                        check_timeout_seconds)
    except _BackupBroken as exc:
        record = _record(manifest, "RestoreFailed", f"the restore of backup {backup_id} failed: {exc}. {_UNUSABLE}")
        return _finish(catalog, record, write)
    record = _judge(manifest, restored)
    return _finish(catalog, record, write)


def _restore_error(exc: BaseException) -> bool:
    """Errors that mean the backup itself does not restore (not that this environment is broken)."""
    if isinstance(exc, (IntegrityError, DecryptionError, tarfile.TarError)):
        return True
    if isinstance(exc, IdentityError):
        return False
    if isinstance(exc, RunnerError):
        return exc.reason not in _ENVIRONMENT_REASONS
    return isinstance(exc, psycopg.Error)


def _verify_logical(catalog: Catalog, manifest: Manifest, spec: VerifySpec, identity: str | None,
                    scratch: Path | None, environ: Mapping[str, str], timeout: int) -> _Restored:
    # A dump restores into its own major or any newer one; the image may carry only the newest.
    tools = server_tools(major_of(manifest.server_version), allow_newer=True, environ=environ)
    names = [str(o.database) for o in manifest.object_by_kind("database")]
    with ThrowawayPostgres.create(tools=tools, scratch=scratch, superuser=VERIFY_SUPERUSER) as server:
        params = server.conn_params()
        with server.connect() as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        actual: dict[str, dict[str, int]] = {}
        try:
            with_globals = bool(manifest.object_by_kind("globals"))
            if not with_globals:  # owners and grantees must exist, or pg_restore stops at the first OWNER TO
                create_roles(params, roles_needed(catalog, manifest, tools, identity, scratch))
            clock = time.monotonic()
            if with_globals:
                restore_globals(catalog, manifest, params, tools, identity)
            for name in names:
                report = restore_backup(catalog, manifest.id, params, name, identity, source_database=name,
                                        jobs=RESTORE_JOBS, scratch=scratch, environ=environ,
                                        allow_empty_target=True, stage=False)  # scratch holds the server
                actual[name] = {t.table: t.actual for t in report.tables if t.actual is not None}
        except Exception as exc:  # noqa: BLE001 - sorted into backup vs environment problems
            if _restore_error(exc):
                raise _BackupBroken(str(exc)) from exc
            raise
        seconds = round(time.monotonic() - clock, 3)
        checks: list[CheckResult] = []
        recorded = {d.name: d for d in manifest.databases}
        for name in names:
            info = recorded.get(name)
            if spec.compare_row_counts and not manifest.imported:  # imported dumps recorded no row counts
                checks += compare_row_counts(info.row_counts if info else {}, actual.get(name, {}), database=name)
            if info and info.extensions:
                checks += check_extensions(params, name, info.extensions)
        checks += _sql_checks(params, spec.checks, names, timeout)
    return _Restored(restore_seconds=max(seconds, 0.001), server_version=version, checks=checks)


def _verify_physical(catalog: Catalog, manifest: Manifest, spec: VerifySpec, identity: str | None,
                     scratch: Path | None, environ: Mapping[str, str], timeout: int) -> _Restored:
    tools = server_tools(major_of(manifest.server_version), environ=environ)  # a data dir needs its own major
    workdir = make_workspace(scratch, prefix="pgbackup-verify-", account=server_account())
    server: ThrowawayPostgres | None = None
    try:
        clock = time.monotonic()
        try:
            datadir = restore_physical(catalog, manifest.id, workdir / "data", identity, environ)
            server = ThrowawayPostgres.from_data_dir(datadir, tools=tools, environ=environ,
                                                     login_roles=[environ.get(jobenv.ENV_DB_USER) or "postgres"])
            server.start()
        except Exception as exc:  # noqa: BLE001 - sorted into backup vs environment problems
            if isinstance(exc, ThrowawayServerError) or _restore_error(exc):
                raise _BackupBroken(str(exc)) from exc
            raise
        seconds = round(time.monotonic() - clock, 3)
        params = server.conn_params()
        with server.connect() as conn:
            version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            names = [row[0] for row in conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1").fetchall()]
        stop_lsn = manifest.physical.stop_lsn if manifest.physical else None
        checks = [CheckResult(name="recovery", passed=True,
                              message="PostgreSQL started on the restored data directory and recovered to "
                                      f"consistency{f' (backup end {stop_lsn})' if stop_lsn else ''}")]
        checks += _sql_checks(params, spec.checks, names, timeout)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return _Restored(restore_seconds=max(seconds, 0.001), server_version=version, checks=checks)


def _sql_checks(params: ConnParams, checks: Sequence[SqlCheck], databases: Sequence[str], timeout: int
                ) -> list[CheckResult]:
    """The policy's checks; one naming a database the backup does not hold fails without running."""
    runnable = [c for c in checks if c.database in databases]
    results = {c.name: r for c, r in zip(runnable, run_sql_checks(params, runnable, timeout_seconds=timeout))}
    out: list[CheckResult] = []
    for check in checks:
        if check.database in databases:
            out.append(results[check.name])
        else:
            out.append(CheckResult(name=check.name, passed=False,
                                   message=f"database {check.database!r} is not in the backup (it holds "
                                           f"{', '.join(databases) or 'none'}); fix the check's database"))
    return out


def _listing(results: Sequence[CheckResult]) -> str:
    shown = [f"{r.name} ({r.message})" for r in results[:_MAX_LISTED]]
    more = f" and {len(results) - _MAX_LISTED} more" if len(results) > _MAX_LISTED else ""
    return "; ".join(shown) + more


def _judge(manifest: Manifest, restored: _Restored) -> VerificationRecord:
    bad = failed(restored.checks)
    rowcounts = [r for r in bad if r.name.startswith("rowcount:")]
    where = f"PostgreSQL {restored.server_version}"
    if rowcounts:
        reason: VerificationReason = "RowCountMismatch"
        message = (f"row counts after the restore differ from the manifest for {len(rowcounts)} table(s): "
                   f"{_listing(rowcounts)}. The dump does not hold what was counted at backup time: take a new "
                   f"backup; if it happens again, look for writes bypassing the snapshot (e.g. unlogged tables)")
        others = [r for r in bad if r not in rowcounts]
        if others:
            message += f"; also failed: {_listing(others)}"
    elif bad:
        reason = "CheckFailed"
        message = f"{len(bad)} check(s) failed after restoring into {where}: {_listing(bad)}"
    else:
        reason = "RestoreVerified"
        message = (f"restored into {where} in {restored.restore_seconds:.1f}s; "
                   f"{len(restored.checks)} check(s) passed")
    return _record(manifest, reason, message, restore_seconds=restored.restore_seconds,
                   server_version=restored.server_version, checks=restored.checks)


def _record(manifest: Manifest, reason: VerificationReason, message: str, *, restore_seconds: float | None = None,
            server_version: str | None = None, checks: list[CheckResult] | None = None) -> VerificationRecord:
    passed = reason == "RestoreVerified"
    return VerificationRecord(backup_id=manifest.id, phase="Passed" if passed else "Failed", passed=passed,
                              reason=reason, message=message, restore_seconds=restore_seconds,
                              checked_at=utc_now(), method=manifest.method, server_version=server_version,
                              checks=checks or [])


def _finish(catalog: Catalog, record: VerificationRecord, write: bool) -> VerificationOutcome:
    level = log if record.passed else log_warning
    level("verify.done", backup_id=record.backup_id, phase=record.phase, reason=record.reason,
          message=record.message, restore_seconds=record.restore_seconds,
          failed_checks=[r.name for r in failed(record.checks)])
    location = None
    if write:
        key = verification_key(record.backup_id)
        catalog.storage.put_bytes(key, record.to_json())
        location = catalog.storage.location(key)
        log("verify.recorded", backup_id=record.backup_id, location=location)
    return VerificationOutcome(record=record, location=location)


# ---------------------------------------------------------------- `pgbackup verify`


def _resolve_backup_id(catalog: Catalog, requested: str | None) -> str:
    if requested and requested != "latest":
        return requested
    newest = catalog.latest()
    if newest is None:
        raise UsageError(f"the catalog at {catalog.storage.url} holds no backup to verify", reason="BackupNotFound")
    return newest.id


def run_verification_command(policy: PolicyConfig, backup_id: str | None = None, *, storage: Storage | None = None,
                             identity_file: str | None = None, environ: Mapping[str, str] | None = None
                             ) -> tuple[int, JobSummary, VerificationOutcome | None]:
    """`pgbackup verify [ID]`: verify `ID` ($PGBACKUP_VERIFY_BACKUP_ID, else the latest backup), record
    verification.json, write the JobSummary (always). Exit 0 when verified, 1 when the backup failed
    verification, else the documented error codes."""
    environ = os.environ if environ is None else environ
    start_run()
    started_at = utc_now()
    requested = backup_id or environ.get(jobenv.ENV_VERIFY_BACKUP_ID) or None
    method: str | None = None
    try:
        storage = storage or open_policy_storage(policy, environ)
        catalog = Catalog(storage, policy)
        resolved = _resolve_backup_id(catalog, requested)
        manifest = catalog.get(resolved)
        method = manifest.method
        outcome = verify_backup(catalog, resolved, policy.spec.verify, identity=identity_from(identity_file, environ),
                                scratch_dir=default_scratch_dir(environ), environ=environ)
    except (Exception, Terminated) as exc:  # noqa: BLE001 - every failure ends as a Failed summary and an exit code
        summary = failure_summary("verify", exc, started_at, method)
        code = exit_code_for(exc)
        # Both are fixed by the user (another id, the identity Secret), not by retrying.
        if isinstance(exc, BackupNotFound):
            summary, code = summary.model_copy(update={"reason": "BackupNotFound"}), jobenv.EXIT_USAGE
        elif isinstance(exc, IdentityError):
            summary, code = summary.model_copy(update={"reason": "IdentityMissing"}), jobenv.EXIT_USAGE
        summary = summary.model_copy(update={"backup_id": requested if requested != "latest" else None})
        log_error("verify.failed", reason=summary.reason, error=summary.error)
        summary = write_summary(summary, environ)
        return code, summary, None
    record = outcome.record
    completed_at = utc_now()
    summary = JobSummary(kind="verify", phase="Completed" if record.passed else "Failed", backup_id=record.backup_id,
                         method=manifest.method, started_at=started_at, completed_at=completed_at,
                         size_bytes=manifest.size_bytes,
                         duration_seconds=round((completed_at - started_at).total_seconds(), 3),
                         manifest=storage.location(catalog.manifest_key(record.backup_id)), reason=record.reason,
                         restore_seconds=record.restore_seconds,
                         error=None if record.passed else record.message[:1400])
    summary = write_summary(summary, environ)
    return (jobenv.EXIT_OK if record.passed else jobenv.EXIT_FAILED), summary, outcome
