"""One backup, start to finish (barman's sequence): connect -> copy (pg_dump / pg_basebackup through the
pipeline) -> finalize (manifest written LAST, the commit marker) -> retention. The run first claims its id
(pgbackup.runner.claim); a failed run leaves no manifest, so it is never listed as a backup, and removes what
it wrote. What a killed run left is removed before and after the next backup once its claim's lease has run
out (so a backup still running elsewhere is never touched).

The JobSummary the operator reads is written as the container's termination message, also on failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pgbackup.api import jobenv
from pgbackup.api.summary import MAX_STORED_BACKUPS, TERMINATION_MESSAGE_PATH, JobSummary
from pgbackup.runner.config import PolicyConfig, RunnerError, scratch_dir
from pgbackup.runner.catalog import Catalog
from pgbackup.runner.claim import BackupClaim, claim_backup_id
from pgbackup.runner.log import log, log_error, log_warning, redact
from pgbackup.runner.logical import DumpedObject, StreamTarget, run_logical
from pgbackup.runner.manifest import BackupPurpose, DatabaseInfo, Manifest, ManifestObject, PhysicalInfo
from pgbackup.runner.pg import ConnParams, PgTools, ServerInfo, find_tools, server_info
from pgbackup.runner.physical import run_physical
from pgbackup.runner.retention import apply_retention
from pgbackup.runner.storage.base import Storage, StorageError, StorageUnreachable
from pgbackup.runner.storage.factory import open_storage
from pgbackup.runner.termination import Terminated
from pgbackup.runner.volumes import backup_volumes




@dataclass(frozen=True)
class BackupOutcome:
    manifest: Manifest
    location: str
    sha256: str


def _runner_version() -> str:
    try:
        return version("pgbackup-operator")
    except PackageNotFoundError:
        return "dev"


def open_policy_storage(policy: PolicyConfig, environ: Mapping[str, str] | None = None) -> Storage:
    environ = os.environ if environ is None else environ
    root = environ.get(jobenv.ENV_VOLUME_ROOT)
    return open_storage(policy.spec.storage, volume_root=Path(root) if root else None)


def take_backup(policy: PolicyConfig, storage: Storage, *, environ: Mapping[str, str] | None = None,
                purpose: BackupPurpose = "scheduled") -> BackupOutcome:
    """Run one backup of `policy` into `storage`; its claim is the first thing written, the manifest the last."""
    environ = os.environ if environ is None else environ
    spec = policy.spec
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    params = ConnParams.from_spec(spec.database, environ)
    with params.connect("postgres") as conn:
        server = server_info(conn)
    tools = find_tools(server.major, environ)
    catalog = Catalog(storage, policy)
    claim = claim_backup_id(storage, started_at, environ=environ, owner=catalog.owner)
    with claim.held():  # a failure removes what this run wrote, the claim last
        return _copy_and_commit(policy, catalog, claim, params, server, tools, started_at, clock, environ, purpose)


def _copy_and_commit(policy: PolicyConfig, catalog: Catalog, claim: BackupClaim, params: ConnParams,
                     server: ServerInfo, tools: PgTools, started_at: datetime, clock: float,
                     environ: Mapping[str, str], purpose: BackupPurpose) -> BackupOutcome:
    """The copy under a claimed id, then the manifest (only while the claim's lease is held)."""
    spec, storage = policy.spec, catalog.storage
    backup_id = claim.backup_id
    recipients = list(spec.encryption.recipients) if spec.encryption else []
    target = StreamTarget(storage=storage, key_for=lambda name: f"{backup_id}/{name}",
                          compression=spec.compression, recipients=recipients)
    log("backup.start", backup_id=backup_id, policy=policy.name, namespace=policy.namespace, method=spec.method,
        purpose=purpose,
        server=params.describe(), server_version=server.version, tools=str(tools.bindir), storage=storage.url)

    dumped: list[DumpedObject]
    databases: list[DatabaseInfo] = []
    physical: PhysicalInfo | None = None
    tool_versions = {"pgbackup": _runner_version()}
    if spec.method == "logical":
        result = run_logical(params, tools, spec, target, scratch=scratch_dir(environ))
        dumped = result.objects
        databases = [DatabaseInfo(name=d.facts.name, size_bytes=d.facts.size_bytes, extensions=d.facts.extensions,
                                  row_counts=d.facts.row_counts, dump_format=d.dump_format,
                                  properties=d.properties) for d in result.databases]
        tool_versions.update({"pg_dump": tools.version, "pg_dumpall": tools.version})
    else:
        base, facts = run_physical(params, tools, server, target)
        dumped = [base]
        physical = PhysicalInfo(start_lsn=facts.start_lsn, stop_lsn=facts.stop_lsn, timeline=facts.timeline,
                                start_wal_segment=facts.start_wal_segment, stop_wal_segment=facts.stop_wal_segment,
                                backup_label=facts.backup_label)
        tool_versions["pg_basebackup"] = tools.version

    volumes = backup_volumes(spec.volumes, storage, target.key_for, spec.compression, recipients, environ)
    completed_at = datetime.now(UTC)
    manifest = Manifest(
        id=backup_id,
        policy=policy.name,
        namespace=policy.namespace,
        method=spec.method,
        started_at=started_at,
        completed_at=completed_at,
        duration_seconds=round(time.monotonic() - clock, 3),
        objects=[ManifestObject.from_stored(d.stored, backup_id, kind=d.kind, database=d.database)  # type: ignore[arg-type]
                 for d in dumped]
                + [ManifestObject.from_stored(v.stored, backup_id, kind="volume", volume=v.claim) for v in volumes],
        databases=databases,
        server_version=server.version,
        tools=tool_versions,
        compression=spec.compression.algorithm,
        encryption_recipients=recipients,
        physical=physical,
        purpose=purpose,
    )
    claim.ensure_held()
    location, sha256 = catalog.write_manifest(manifest)
    log("backup.done", backup_id=backup_id, manifest=location, size_bytes=manifest.size_bytes,
        raw_size_bytes=manifest.raw_size_bytes, duration_seconds=manifest.duration_seconds)
    return BackupOutcome(manifest=manifest, location=location, sha256=sha256)


def summary_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """$PGBACKUP_SUMMARY_FILE, else /dev/termination-log when writable (inside a pod), else nowhere."""
    environ = os.environ if environ is None else environ
    configured = environ.get(jobenv.ENV_SUMMARY_FILE)
    if configured:
        return Path(configured)
    default = Path(TERMINATION_MESSAGE_PATH)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def write_summary(summary: JobSummary, environ: Mapping[str, str] | None = None) -> None:
    path = summary_path(environ)
    if path is None:
        return
    try:
        path.write_text(summary.to_termination_message())
    except OSError as exc:
        log_warning("summary.write_failed", path=str(path), error=exc.strerror)


def failure_summary(kind: str, exc: BaseException, started_at: datetime, method: str | None = None) -> JobSummary:
    """The Failed summary: the error text (already secret-free by construction, redacted again) and a reason."""
    reason = getattr(exc, "reason", None) or ("StorageFailed" if isinstance(exc, StorageError) else "InternalError")
    text = redact(str(exc) or type(exc).__name__)
    completed = datetime.now(UTC)
    return JobSummary(kind=kind, phase="Failed", method=method, started_at=started_at,  # type: ignore[arg-type]
                      completed_at=completed, duration_seconds=round((completed - started_at).total_seconds(), 3),
                      error=text[:1400], reason=reason)


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code: 1 failed, 2 network, 3 usage, 4 unexpected."""
    if isinstance(exc, (RunnerError, Terminated)):
        return exc.exit_code
    if isinstance(exc, StorageError):
        explicit = getattr(exc, "exit_code", None)
        if isinstance(explicit, int):
            return explicit
        return jobenv.EXIT_NETWORK if isinstance(exc, StorageUnreachable) else jobenv.EXIT_FAILED
    return jobenv.EXIT_GENERAL


def backup_command(policy: PolicyConfig, *, storage: Storage | None = None,
                   environ: Mapping[str, str] | None = None) -> tuple[int, JobSummary]:
    """`pgbackup backup`: the backup, its summary (always), then retention (after success only)."""
    environ = os.environ if environ is None else environ
    started_at = datetime.now(UTC)
    try:
        purpose = backup_purpose(environ)
        storage = storage or open_policy_storage(policy, environ)
        clean_leftovers(policy, storage, before_backup=True)  # room for this backup on a volume a dead run filled
        outcome = take_backup(policy, storage, environ=environ, purpose=purpose)
    except (Exception, Terminated) as exc:  # noqa: BLE001 - every failure ends as a Failed summary and an exit code
        summary = failure_summary("backup", exc, started_at, policy.spec.method)
        log_error("backup.failed", reason=summary.reason, error=summary.error)
        write_summary(summary, environ)
        return exit_code_for(exc), summary
    manifest = outcome.manifest
    summary = JobSummary(kind="backup", phase="Completed", backup_id=manifest.id, method=manifest.method,
                         started_at=manifest.started_at, completed_at=manifest.completed_at,
                         size_bytes=manifest.size_bytes, duration_seconds=manifest.duration_seconds,
                         manifest=outcome.location, manifest_sha256=outcome.sha256)
    write_summary(summary, environ)
    try:
        if policy.spec.copies:  # after the manifest, before retention; never fails the backup
            from pgbackup.runner.copies import sync_copies

            copies = sync_copies(policy, storage, environ=environ, grace=unfinished_grace(policy))
            summary = summary.model_copy(update={"copies": copies})
            write_summary(summary, environ)
        stored = run_retention_after_backup(policy, storage)
        if stored is not None:  # status.backups follows storage: what retention kept, newest first
            summary = summary.model_copy(update={"stored_backups": stored[:MAX_STORED_BACKUPS]})
            write_summary(summary, environ)
        clean_leftovers(policy, storage)
    except Terminated as exc:  # the backup is complete and recorded: only the housekeeping was cut short
        log_warning("backup.housekeeping_terminated", backup_id=manifest.id, signal=exc.signal_name,
                    hint="retention and cleanup run again after the next backup")
    return jobenv.EXIT_OK, summary


def backup_purpose(environ: Mapping[str, str]) -> BackupPurpose:
    """$PGBACKUP_BACKUP_PURPOSE: 'on-demand' in backup-now Jobs; unset (CronJob runs, runs by hand) is
    'scheduled'. Both are the policy's own full backups."""
    value = environ.get(jobenv.ENV_BACKUP_PURPOSE) or "scheduled"
    if value not in ("scheduled", "on-demand"):
        raise RunnerError(f"{jobenv.ENV_BACKUP_PURPOSE}={value!r} is not a purpose of `pgbackup backup`: use "
                          f"'scheduled' or 'on-demand' (or leave it unset)", reason="InvalidPolicy",
                          exit_code=jobenv.EXIT_USAGE)
    return value  # type: ignore[return-value]


def run_retention_after_backup(policy: PolicyConfig, storage: Storage) -> list[str] | None:
    """Apply retention; returns the ids of the policy's backups kept (newest first), None when it failed. Failures
    are logged, not fatal: the backup itself is good and recorded."""
    try:
        decisions = apply_retention(Catalog(storage, policy), policy.spec.retention, datetime.now(UTC), dry_run=False)
    except Exception as exc:  # noqa: BLE001
        log_error("retention.failed", error=exc,
                  hint="the backup succeeded; old backups were not pruned, run `pgbackup retention` to retry")
        return None
    kept = [d.id for d in decisions if d.keep]
    log("retention.done", kept=kept, deleted=[d.id for d in decisions if not d.keep])
    return kept


UNFINISHED_GRACE_MARGIN = timedelta(hours=1)


def unfinished_grace(policy: PolicyConfig) -> timedelta:
    """How old an unfinished backup must be before it is removed: longer than a backup Job may run
    (activeDeadlineSeconds) plus a margin, so the objects of a backup still running elsewhere are never touched."""
    return timedelta(seconds=policy.spec.job_template.active_deadline_seconds) + UNFINISHED_GRACE_MARGIN


def clean_leftovers(policy: PolicyConfig, storage: Storage, now: datetime | None = None, *,
                    before_backup: bool = False) -> list[str]:
    """Remove the objects of failed or killed backups (no manifest) whose run is provably over (its claim ended or
    its lease ran out; without a claim, older than the grace period); not fatal. Runs before and after a backup."""
    grace = unfinished_grace(policy)
    try:
        removed = Catalog(storage, policy).clean_unfinished(grace, now or datetime.now(UTC))
    except Exception as exc:  # noqa: BLE001 - the backup itself is not at stake
        if before_backup and isinstance(exc, StorageUnreachable):
            raise  # the backup cannot succeed either: fail now, with the network exit code
        log_error("unfinished.clean_failed", error=exc,
                  hint=("the backup goes ahead; leftovers of dead runs are removed by a later backup" if before_backup
                        else "the backup succeeded; leftovers of dead runs are removed by a later backup"))
        return []
    log("unfinished.cleaned", removed=removed, grace_seconds=int(grace.total_seconds()))
    return removed
