"""`pgbackup list | catalog-summary | show | check | retention | import`: reading and tending the catalog."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC

from pgbackup.api import jobenv
from pgbackup.api.summary import MAX_STORED_BACKUPS, JobSummary
from pgbackup.runner.backup.housekeeping import apply_retention, unfinished_grace
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.chains import parents
from pgbackup.runner.catalog.check import CheckReport
from pgbackup.runner.catalog.importer import import_dump
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.common.config import PolicyConfig
from pgbackup.runner.common.errors import StorageError, UsageError
from pgbackup.runner.common.retries import start_run
from pgbackup.runner.common.summary import failure_summary, write_summary
from pgbackup.runner.common.timestamps import utc_now
from pgbackup.runner.storage.factory import open_source_storage


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def verified_label(manifest: Manifest) -> str:
    """The VERIFIED column: passed, failed (verification.json says how), or not yet (none ran)."""
    return manifest.verification or "not yet"


def chain_label(manifest: Manifest) -> str:
    """The CHAIN column: the chain's full backup and the position in it ('20261201T020000Z #3'), '-' when the backup
    is in no chain (logical backups, physical ones taken before chains were recorded)."""
    info = manifest.physical
    if info is None or info.chain_root is None:
        return "-"
    return f"{info.chain_root} #{info.chain_length}"


def open_catalog(policy: PolicyConfig, from_copy: str | None = None) -> Catalog:
    """The policy's catalog in its primary storage, or in the copy named `from_copy`."""
    return Catalog(open_source_storage(policy, from_copy), policy)


def resolve_backup_id(catalog: Catalog, backup_id: str, purpose: str = "to read") -> str:
    """A backup id as given, or for 'latest' the id of the policy's newest full backup (as `restore latest`)."""
    if backup_id != "latest":
        return backup_id
    newest = catalog.latest()
    if newest is None:
        raise UsageError(f"the catalog at {catalog.storage.url} holds no backup {purpose}; `pgbackup list` shows "
                         f"what it holds")
    return newest.id


def cmd_list(policy: PolicyConfig, args: argparse.Namespace) -> int:
    catalog = open_catalog(policy, args.copy)
    backups = catalog.backups()
    if not backups:
        others = sorted({f"{m.namespace}/{m.policy}" for m in catalog.location_backups()})
        if others:
            print(f"pgbackup list: {catalog.storage.url} holds no backup of BackupPolicy {policy.namespace}/"
                  f"{policy.name}, only of {', '.join(others[:5])}: pass that BackupPolicy (its resource, or "
                  f"{{name, namespace, spec}}) with --policy", file=sys.stderr)
    if args.json:
        print(json.dumps([json.loads(m.model_dump_json()) for m in backups], indent=2))
        return jobenv.EXIT_OK
    print(f"{'ID':<22} {'METHOD':<9} {'PURPOSE':<11} {'TYPE':<5} {'CHAIN (FULL #N)':<25} {'COMPLETED (UTC)':<20} "
          f"{'SIZE':>10} {'DURATION':>9} VERIFIED")
    for m in backups:
        completed = m.completed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{m.id:<22} {m.method:<9} {m.purpose:<11} {m.backup_type:<5} {chain_label(m):<25} {completed:<20} "
              f"{human_size(m.size_bytes):>10} {m.duration_seconds:>8.1f}s {verified_label(m)}")
    return jobenv.EXIT_OK


def cmd_catalog_summary(policy: PolicyConfig, args: argparse.Namespace) -> int:
    """What storage holds, as a JobSummary(kind='catalog'): the newest backup's facts and the ids, newest first.
    The operator runs this when a backup Job may have gone before it was recorded, and records it like a backup."""
    start_run()
    started = utc_now()
    try:
        backups = open_catalog(policy).backups()
    except Exception as exc:
        write_summary(failure_summary("catalog", exc, started))
        raise
    newest = backups[0] if backups else None
    summary = JobSummary(kind="catalog", phase="Completed", started_at=started, stored_backups=[
        m.id for m in backups][:MAX_STORED_BACKUPS])
    if newest is not None:
        summary = summary.model_copy(update={
            "backup_id": newest.id, "method": newest.method, "backup_type": newest.backup_type,
            "incremental_of": newest.incremental_of, "completed_at": newest.completed_at,
            "size_bytes": newest.size_bytes, "duration_seconds": newest.duration_seconds})
    print(write_summary(summary).to_termination_message())
    return jobenv.EXIT_OK


def cmd_show(policy: PolicyConfig, args: argparse.Namespace) -> int:
    catalog = open_catalog(policy)
    print(catalog.get(resolve_backup_id(catalog, args.backup_id)).model_dump_json(indent=2))
    return jobenv.EXIT_OK


def cmd_check(policy: PolicyConfig, args: argparse.Namespace) -> int:
    """Every object of the backup and, for an incremental, of every backup it builds on (a restore needs them
    all): exit 1 when any is damaged or a member of the chain is missing."""
    catalog = open_catalog(policy, args.copy)
    report = catalog.check(resolve_backup_id(catalog, args.backup_id, "to check"))
    chain, missing = _check_chain(catalog, report.backup_id)
    ok = report.ok and missing is None and all(member.ok for member in chain)
    if args.json:
        print(json.dumps({"backup_id": report.backup_id, "ok": ok, "objects": [vars(o) for o in report.objects],
                          "chain": [{"backup_id": m.backup_id, "ok": m.ok, "objects": [vars(o) for o in m.objects]}
                                    for m in chain],
                          "chain_missing": missing}, indent=2))
    else:
        print(report.summary())
        for member in chain:
            print(f"which builds on {member.summary()}")
        if missing is not None:
            print(f"which builds on {missing}; this incremental backup cannot be restored: restore a full one "
                  f"(`pgbackup list` shows them as type 'full')")
    return jobenv.EXIT_OK if ok else jobenv.EXIT_FAILED


def _check_chain(catalog: Catalog, backup_id: str) -> tuple[list[CheckReport], str | None]:
    """The check of each backup an incremental builds on, parent first, and what is wrong with the member that
    cannot be read, which ends the walk (None when every one can)."""
    try:
        manifest = catalog.find(backup_id)
    except StorageError:  # its manifest changed or cannot be read: the backup's own report says so
        return [], None
    if manifest is None:
        return [], None
    unreadable: str | None = None

    def read(parent_id: str) -> Manifest | None:
        nonlocal unreadable
        try:
            parent = catalog.find(parent_id)
        except StorageError as exc:
            unreadable = f"backup {parent_id}: its manifest cannot be read ({exc})"
            return None
        if parent is None:
            unreadable = f"backup {parent_id}: missing (deleted)"
        return parent

    reports = [catalog.check(parent_id) for parent_id, parent in parents(manifest, read) if parent is not None]
    return reports, unreadable


def cmd_retention(policy: PolicyConfig, args: argparse.Namespace) -> int:
    catalog = open_catalog(policy)
    now = utc_now()
    decisions = apply_retention(catalog, policy.spec.retention, now, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for decision in decisions:
        print(f"{decision.id:<22} {'keep' if decision.keep else verb:<12} {'; '.join(decision.reasons)}")
    for backup_id in catalog.clean_unfinished(unfinished_grace(policy), now, dry_run=args.dry_run):
        print(f"{backup_id:<22} {verb:<12} unfinished: left by a failed or killed run")
    return jobenv.EXIT_OK


def cmd_import(policy: PolicyConfig, args: argparse.Namespace) -> int:
    manifest = import_dump(policy, open_catalog(policy), args.file, sha_file=args.sha256_file, database=args.database,
                           taken_at=args.taken_at, skip_checksum=args.no_checksum, environ=os.environ)
    info = manifest.databases[0]
    print(f"imported {args.file} as backup {manifest.id}: database {info.name!r}, format {info.dump_format}, "
          f"taken at {manifest.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, {human_size(manifest.size_bytes)} "
          f"stored")
    return jobenv.EXIT_OK
