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

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

import psycopg
from psycopg import sql
from pydantic import Field

from pgbackup.api import jobenv
from pgbackup.api.base import StatusModel
from pgbackup.api.policy import SqlCheck, VerificationResult, VerifySpec
from pgbackup.api.restore import CheckResult
from pgbackup.api.summary import JobSummary
from pgbackup.runner.backup import exit_code_for, failure_summary, open_policy_storage, write_summary
from pgbackup.runner.catalog import BackupNotFound, Catalog
from pgbackup.runner.checks import check_extensions, compare_row_counts, failed, run_sql_checks
from pgbackup.runner.config import PolicyConfig, RunnerError, UsageError, scratch_dir as default_scratch_dir
from pgbackup.runner.instance import (
    ThrowawayPostgres,
    ThrowawayServerError,
    major_of,
    make_workspace,
    server_account,
    server_tools,
)
from pgbackup.runner.log import log, log_error, log_warning
from pgbackup.runner.manifest import VERIFICATION_NAME, Manifest
from pgbackup.runner.pg import ConnParams, PgTools
from pgbackup.runner.pipeline import DecryptionError, IdentityError, IntegrityError, load_identity
from pgbackup.runner.restore import feed_stdin, restore_backup, restore_globals, restore_physical
from pgbackup.runner.safetar import extract_data
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.termination import Terminated

# RunnerError reasons that mean this environment cannot verify, not that the backup is broken.
_ENVIRONMENT_REASONS = frozenset({"ServerBinariesMissing", "ServerAccountMissing", "ToolsMissing",
                                  "VerificationLoginFailed", "Terminated"})
VerificationReason = Literal["RestoreVerified", "RowCountMismatch", "CheckFailed", "RestoreFailed"]
RESTORE_JOBS = 2
# Not a name the backed-up cluster is likely to have: its globals must not redefine (demote) our superuser.
VERIFY_SUPERUSER = "pgbackup_verifier_superuser"
_UNUSABLE = "Do not rely on this backup: take a new one and keep the verification Job's log for investigation"
_MAX_LISTED = 5


class VerificationRecord(StatusModel):
    """`<backup id>/verification.json`: the evidence of one verification (camelCase keys, like the API)."""

    version: Literal[1] = 1
    backup_id: str
    """The backup verified."""
    phase: Literal["Passed", "Failed"]
    passed: bool
    """Same as phase == 'Passed'; the catalog reads this key to mark the backup verified."""
    reason: VerificationReason
    message: str
    restore_seconds: float | None = None
    """Wall time of the restore (logical: globals + every database; physical: extraction + recovery)."""
    checked_at: datetime
    method: Literal["logical", "physical"] | None = None
    server_version: str | None = None
    """Version of the throwaway server the backup was restored into."""
    checks: list[CheckResult] = Field(default_factory=list)

    def to_result(self) -> VerificationResult:
        """The per-backup status entry of the BackupPolicy."""
        return VerificationResult(phase=self.phase, reason=self.reason, message=self.message,
                                  restore_seconds=self.restore_seconds, checked_at=self.checked_at)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()


@dataclass(frozen=True)
class VerificationOutcome:
    record: VerificationRecord
    location: str | None
    """Where verification.json was written (None when writing was not asked for)."""

    @property
    def passed(self) -> bool:
        return self.record.passed

    @property
    def reason(self) -> VerificationReason:
        return self.record.reason


def verification_key(backup_id: str) -> str:
    return f"{backup_id}/{VERIFICATION_NAME}"


def read_verification(storage: Storage, backup_id: str) -> VerificationRecord:
    """The stored verification of a backup (raises ObjectNotFound when it was never verified)."""
    return VerificationRecord.model_validate_json(storage.get_bytes(verification_key(backup_id)))


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
                _create_roles(params, _roles_needed(catalog, manifest, tools, identity, scratch))
            clock = time.monotonic()
            if with_globals:
                restore_globals(catalog, manifest, params, tools, identity)
            for name in names:
                report = restore_backup(catalog, manifest.id, params, name, identity, source_database=name,
                                        jobs=RESTORE_JOBS, scratch=scratch, environ=environ,
                                        allow_empty_target=True)
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
            datadir = restore_physical(catalog, manifest.id, workdir / "data", identity)
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


# ---------------------------------------------------------------- roles a dump needs (backups without globals)

_IDENT = r'"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*'
_OWNER_OR_ROLE = re.compile(rf"\b(?:OWNER TO|FOR ROLE|SESSION AUTHORIZATION)\s+({_IDENT})")
_GRANTEES = re.compile(r"^(?:GRANT|REVOKE)\b.*?\s(?:TO|FROM)\s+(.+?)(?:\s+WITH GRANT OPTION|\s+GRANTED BY\s.*)?;$")
_NOT_ROLES = {"public", "current_user", "session_user", "current_role"}


def _role_names(line: str) -> list[str]:
    found = [m.group(1) for m in _OWNER_OR_ROLE.finditer(line)]
    grant = _GRANTEES.match(line)
    if grant:
        found += re.findall(_IDENT, grant.group(1))
    names = []
    for name in found:
        if name.startswith('"'):
            names.append(name[1:-1].replace('""', '"'))
        elif name.lower() not in _NOT_ROLES:
            names.append(name.lower())
    return names


def _roles_needed(catalog: Catalog, manifest: Manifest, tools: PgTools, identity: str | None,
                  scratch: Path | None) -> set[str]:
    """Roles the dumps refer to (owners, grantees), read from `pg_restore --schema-only -f -` of each dump."""
    roles: set[str] = set()
    for obj in manifest.object_by_kind("database"):
        info = next((d for d in manifest.databases if d.name == obj.database), None)
        workdir = Path(tempfile.mkdtemp(prefix="pgbackup-roles-", dir=scratch))
        try:
            script = workdir / "schema.sql"
            args = [tools.path("pg_restore"), "--schema-only", "-f", str(script)]
            with catalog.open_object(manifest, obj, identity=identity) as stream:
                if info is not None and info.dump_format == "plain":  # an imported SQL dump is the script itself
                    with open(script, "wb") as out:
                        shutil.copyfileobj(stream, out, 1 << 20)
                    done = subprocess.CompletedProcess(args, 0, "", "")
                elif info is not None and info.dump_format == "directory":
                    extract_data(stream, workdir / "dump")
                    while stream.read(1 << 20):  # to the end, so the checksum is verified
                        pass
                    done = subprocess.run([*args, str(workdir / "dump")], capture_output=True, text=True)
                else:
                    done = _pipe_into(args, stream, workdir / "stderr")
            if done.returncode != 0:
                raise RunnerError(f"pg_restore could not read the dump of database {obj.database!r} in backup "
                                  f"{manifest.id}: {done.stderr.strip()[-800:]}", reason="RestoreFailed")
            with open(script, errors="replace") as lines:
                for line in lines:
                    roles.update(_role_names(line.rstrip("\n")))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return roles


def _pipe_into(args: list[str], stream: BinaryIO, errors: Path) -> subprocess.CompletedProcess[str]:
    """Run a program with `stream` as its stdin (read to the end either way, so its checksum is verified)."""
    with open(errors, "wb") as stderr, subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                                         stderr=stderr) as proc:
        assert proc.stdin is not None
        feed_stdin(stream, proc.stdin)
    return subprocess.CompletedProcess(args, proc.returncode, "", errors.read_text(errors="replace"))


def _create_roles(params: ConnParams, roles: set[str]) -> None:
    """NOLOGIN roles for the names the dumps need that the throwaway server lacks."""
    with params.connect() as conn:
        existing = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        missing = sorted(roles - existing)
        for role in missing:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    if missing:
        log("verify.roles_created", roles=missing, why="the backup has no globals; the dumps refer to them")


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
                              checked_at=datetime.now(UTC), method=manifest.method, server_version=server_version,
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


def _identity(identity_file: str | None, environ: Mapping[str, str]) -> str | None:
    if identity_file:
        return load_identity(identity_file)
    if environ.get(jobenv.ENV_AGE_IDENTITY_FILE):
        return load_identity(environ[jobenv.ENV_AGE_IDENTITY_FILE])
    return None


def run_verification_command(policy: PolicyConfig, backup_id: str | None = None, *, storage: Storage | None = None,
                             identity_file: str | None = None, environ: Mapping[str, str] | None = None
                             ) -> tuple[int, JobSummary, VerificationOutcome | None]:
    """`pgbackup verify [ID]`: verify `ID` ($PGBACKUP_VERIFY_BACKUP_ID, else the latest backup), record
    verification.json, write the JobSummary (always). Exit 0 when verified, 1 when the backup failed
    verification, else the documented error codes."""
    environ = os.environ if environ is None else environ
    started_at = datetime.now(UTC)
    requested = backup_id or environ.get(jobenv.ENV_VERIFY_BACKUP_ID) or None
    method: str | None = None
    try:
        storage = storage or open_policy_storage(policy, environ)
        catalog = Catalog(storage, policy)
        resolved = _resolve_backup_id(catalog, requested)
        manifest = catalog.get(resolved)
        method = manifest.method
        outcome = verify_backup(catalog, resolved, policy.spec.verify, identity=_identity(identity_file, environ),
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
        write_summary(summary, environ)
        return code, summary, None
    record = outcome.record
    completed_at = datetime.now(UTC)
    summary = JobSummary(kind="verify", phase="Completed" if record.passed else "Failed", backup_id=record.backup_id,
                         method=manifest.method, started_at=started_at, completed_at=completed_at,
                         size_bytes=manifest.size_bytes,
                         duration_seconds=round((completed_at - started_at).total_seconds(), 3),
                         manifest=storage.location(catalog.manifest_key(record.backup_id)), reason=record.reason,
                         restore_seconds=record.restore_seconds,
                         error=None if record.passed else record.message[:1400])
    write_summary(summary, environ)
    return (jobenv.EXIT_OK if record.passed else jobenv.EXIT_FAILED), summary, outcome


def cmd_verify(policy: PolicyConfig, args: argparse.Namespace) -> int:
    """The `verify` sub-command's handler (cli.COMMANDS['verify'])."""
    code, summary, outcome = run_verification_command(policy, args.backup_id, identity_file=args.identity_file)
    if outcome is None:
        print(f"pgbackup verify: {summary.error}", file=sys.stderr)
        return code
    record = outcome.record
    if args.json:
        print(json.dumps(json.loads(record.to_json()), indent=2))
        return code
    for check in record.checks:
        print(f"{check.name:<60} {'ok' if check.passed else 'FAILED':<7} {check.message}")
    seconds = f"{record.restore_seconds:.1f}s" if record.restore_seconds is not None else "-"
    print(f"{record.phase} ({record.reason}): backup {record.backup_id}, restore {seconds}: {record.message}")
    if outcome.location:
        print(f"recorded in {outcome.location}")
    return code


def add_verify_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Register `pgbackup verify [ID]` on cli's sub-command parsers."""
    from pgbackup.runner.cli import EXIT_CODES_HELP

    help_text = ("restore a backup into a throwaway PostgreSQL, compare row counts, run the policy's checks, "
                 "record verification.json (exit 1 when it fails)")
    sub: argparse.ArgumentParser = subparsers.add_parser(
        "verify", help=help_text, description=help_text, epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("--policy", metavar="FILE", help=f"policy YAML/JSON (default: ${jobenv.ENV_POLICY})")
    sub.add_argument("backup_id", metavar="ID", nargs="?", default=None,
                     help=f"backup id or 'latest' (default: ${jobenv.ENV_VERIFY_BACKUP_ID}, else the latest)")
    sub.add_argument("--identity-file", metavar="FILE",
                     help=f"age identity for encrypted backups (default: ${jobenv.ENV_AGE_IDENTITY_FILE})")
    sub.add_argument("--json", action="store_true", help="print verification.json")
    sub.set_defaults(handler=cmd_verify)
    return sub
