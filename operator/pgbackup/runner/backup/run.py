"""One backup, start to finish (barman's sequence): connect -> copy (pg_dump / pg_basebackup through the
pipeline) -> finalize (manifest written LAST, the commit marker) -> retention. The run first claims its id
(pgbackup.runner.catalog.claim); a failed run leaves no manifest, so it is never listed as a backup, and removes what
it wrote. What a killed run left is removed before and after the next backup once its claim's lease has run
out (so a backup still running elsewhere is never touched).

The JobSummary the operator reads is written as the container's termination message, also on failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pgbackup import installed_version
from pgbackup.api import jobenv
from pgbackup.api.summary import MAX_STORED_BACKUPS, JobSummary
from pgbackup.runner.backup.chain import ChainPlan, parent_manifest_file, plan_chain, refused_incremental
from pgbackup.runner.backup.copies import sync_copies
from pgbackup.runner.backup.housekeeping import clean_leftovers, run_retention_after_backup, unfinished_grace
from pgbackup.runner.backup.logical import DumpedObject, StreamTarget, run_logical
from pgbackup.runner.backup.physical import PhysicalFacts, run_physical
from pgbackup.runner.backup.volumes import backup_volumes
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.claim import BackupClaim, claim_backup_id
from pgbackup.runner.catalog.manifest import BackupPurpose, DatabaseInfo, Manifest, ManifestObject, PhysicalInfo
from pgbackup.runner.common.config import PolicyConfig, scratch_dir
from pgbackup.runner.common.errors import RunnerError, exit_code_for
from pgbackup.runner.common.log import log, log_error, log_warning
from pgbackup.runner.common.retries import start_run
from pgbackup.runner.common.summary import failure_summary, write_summary
from pgbackup.runner.common.termination import Terminated
from pgbackup.runner.common.timestamps import utc_now
from pgbackup.runner.postgres.facts import ServerInfo, server_info
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools, find_tools
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.factory import open_policy_storage


@dataclass(frozen=True)
class BackupOutcome:
    manifest: Manifest
    location: str
    sha256: str


def take_backup(policy: PolicyConfig, storage: Storage, *, environ: Mapping[str, str] | None = None,
                purpose: BackupPurpose = "scheduled", force_full: bool = False) -> BackupOutcome:
    """Run one backup of `policy` into `storage`; its claim is the first thing written, the manifest the last."""
    environ = os.environ if environ is None else environ
    spec = policy.spec
    started_at = utc_now()
    clock = time.monotonic()
    params = ConnParams.from_spec(spec.database, environ)
    with params.connect("postgres") as conn:
        server = server_info(conn)
    tools = find_tools(server.major, environ)
    catalog = Catalog(storage, policy)
    chain = ChainPlan()
    if spec.method == "physical":
        chain = plan_chain(catalog, spec, server, force_full=force_full, purpose=purpose, environ=environ)
    claim = claim_backup_id(storage, started_at, environ=environ, owner=catalog.owner)
    with claim.held():  # a failure removes what this run wrote, the claim last
        return _copy_and_commit(policy, catalog, claim, params, server, tools, started_at, clock, environ, purpose,
                                chain)


def _copy_and_commit(policy: PolicyConfig, catalog: Catalog, claim: BackupClaim, params: ConnParams,
                     server: ServerInfo, tools: PgTools, started_at: datetime, clock: float,
                     environ: Mapping[str, str], purpose: BackupPurpose, chain: ChainPlan) -> BackupOutcome:
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
    tool_versions = {"pgbackup": installed_version()}
    if spec.method == "logical":
        result = run_logical(params, tools, spec, target, scratch=scratch_dir(environ))
        dumped = result.objects
        databases = [DatabaseInfo(name=d.facts.name, size_bytes=d.facts.size_bytes, extensions=d.facts.extensions,
                                  row_counts=d.facts.row_counts, dump_format=d.dump_format,
                                  properties=d.properties) for d in result.databases]
        tool_versions.update({"pg_dump": tools.version, "pg_dumpall": tools.version})
    else:
        dumped, facts, chain = _physical(catalog, params, tools, server, target, chain, environ)
        physical = PhysicalInfo(start_lsn=facts.start_lsn, stop_lsn=facts.stop_lsn, timeline=facts.timeline,
                                start_wal_segment=facts.start_wal_segment, stop_wal_segment=facts.stop_wal_segment,
                                backup_label=facts.backup_label,
                                system_identifier=facts.system_identifier or server.system_identifier,
                                incremental_of=chain.parent.id if chain.parent else None,
                                chain_root=chain.root or backup_id, chain_length=chain.length,
                                full_reason=chain.full_reason)
        tool_versions["pg_basebackup"] = tools.version

    volumes = backup_volumes(spec.volumes, storage, target.key_for, spec.compression, recipients, environ)
    objects = [ManifestObject.from_stored(d.stored, backup_id, kind=d.kind, database=d.database)  # type: ignore[arg-type]
               for d in dumped] + [ManifestObject.from_stored(v.stored, backup_id, kind="volume", volume=v.claim)
                                   for v in volumes]
    completed_at = utc_now()
    manifest = Manifest(
        id=backup_id,
        policy=policy.name,
        namespace=policy.namespace,
        method=spec.method,
        started_at=started_at,
        completed_at=completed_at,
        duration_seconds=round(time.monotonic() - clock, 3),
        objects=objects,
        size_bytes=sum(o.size for o in objects),
        raw_size_bytes=sum(o.raw_size for o in objects),
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
        raw_size_bytes=manifest.raw_size_bytes, duration_seconds=manifest.duration_seconds,
        type=manifest.backup_type, **({"incremental_of": physical.incremental_of, "chain_root": physical.chain_root,
                                       "chain_length": physical.chain_length} if physical else {}))
    return BackupOutcome(manifest=manifest, location=location, sha256=sha256)


def _physical(catalog: Catalog, params: ConnParams, tools: PgTools, server: ServerInfo, target: StreamTarget,
              chain: ChainPlan, environ: Mapping[str, str]) -> tuple[list[DumpedObject], PhysicalFacts, ChainPlan]:
    """pg_basebackup, incremental when `chain` has a parent; a refused incremental is taken again as a full backup."""
    scratch = scratch_dir(environ)
    with parent_manifest_file(catalog, chain, scratch, environ) as (chain, parent_file):
        try:
            objects, facts = run_physical(params, tools, server, target, incremental_of=parent_file, spool_dir=scratch)
            return objects, facts, chain
        except RunnerError as exc:
            reason = refused_incremental(exc) if parent_file is not None else None
            if reason is None:
                raise
    log_warning("backup.chain.full", reason=reason, hint="the backup is taken again as a full backup")
    chain = chain.as_full(reason)
    objects, facts = run_physical(params, tools, server, target, spool_dir=scratch)
    return objects, facts, chain


def backup_command(policy: PolicyConfig, *, storage: Storage | None = None,
                   environ: Mapping[str, str] | None = None, force_full: bool = False) -> tuple[int, JobSummary]:
    """`pgbackup backup`: the backup, its summary (always), then retention (after success only)."""
    environ = os.environ if environ is None else environ
    start_run()
    started_at = utc_now()
    try:
        purpose = backup_purpose(environ)
        storage = storage or open_policy_storage(policy, environ)
        clean_leftovers(policy, storage, before_backup=True)  # room for this backup on a volume a dead run filled
        outcome = take_backup(policy, storage, environ=environ, purpose=purpose, force_full=force_full)
    except (Exception, Terminated) as exc:  # noqa: BLE001 - every failure ends as a Failed summary and an exit code
        summary = failure_summary("backup", exc, started_at, policy.spec.method)
        log_error("backup.failed", reason=summary.reason, error=summary.error)
        return exit_code_for(exc), write_summary(summary, environ)
    manifest = outcome.manifest
    summary = JobSummary(kind="backup", phase="Completed", backup_id=manifest.id, method=manifest.method,
                         started_at=manifest.started_at, completed_at=manifest.completed_at,
                         size_bytes=manifest.size_bytes, duration_seconds=manifest.duration_seconds,
                         manifest=outcome.location, manifest_sha256=outcome.sha256)
    summary = write_summary(summary, environ)
    try:
        if policy.spec.copies:  # after the manifest, before retention; never fails the backup
            copies = sync_copies(policy, storage, environ=environ, grace=unfinished_grace(policy))
            summary = write_summary(summary.model_copy(update={"copies": copies}), environ)
        stored = run_retention_after_backup(policy, storage)
        if stored is not None:  # status.backups follows storage: what retention kept, newest first
            summary = write_summary(summary.model_copy(update={"stored_backups": stored[:MAX_STORED_BACKUPS]}),
                                    environ)
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


