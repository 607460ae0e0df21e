"""`pgbackup restore` (a logical backup into a new database, a physical one into a data directory, volumes,
only some tables, a point in time) and `pgbackup restore-request` (what a RestoreRequest's Job runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace

from pgbackup.api import jobenv
from pgbackup.api.summary import JobSummary
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.cli.catalog import open_catalog, resolve_backup_id
from pgbackup.runner.common.config import PolicyConfig, policy_json, scratch_dir
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.logical import restore_backup
from pgbackup.runner.restore.ownership import Ownership
from pgbackup.runner.restore.physical import restore_physical
from pgbackup.runner.restore.pitr import PitrTarget, policy_server_env, restore_to_point
from pgbackup.runner.restore.run import run_restore_request
from pgbackup.runner.restore.selective import Selection, restore_selected
from pgbackup.runner.restore.staging import scratch_limit_for
from pgbackup.runner.restore.volumes import restore_volume
from pgbackup.runner.storage.identity import identity_from
from pgbackup.runner.wal.archive import archive_for_policy


def _target_server(policy: PolicyConfig, args: argparse.Namespace) -> ConnParams:
    """The server to restore into: --target-host/--target-port, else the policy's database; the policy's login."""
    source = ConnParams.from_spec(policy.spec.database)
    return replace(source, host=args.target_host or source.host, port=args.target_port or source.port)


def cmd_restore(policy: PolicyConfig, args: argparse.Namespace) -> int:
    catalog = open_catalog(policy, args.from_copy)
    identity = identity_from(args.identity_file, os.environ)
    if (args.no_owner or args.no_privileges) and args.target_database is None:
        raise UsageError("--no-owner and --no-privileges apply to restores into a database (--target-database): a "
                         "physical restore (--target-dir) copies the data directory with its owners, privileges and "
                         "roles as they were and needs no database role; --volume restores files")
    if args.target_time is not None or args.target_lsn is not None:
        return cmd_restore_pitr(policy, args, catalog, identity)
    args.backup_id = resolve_backup_id(catalog, args.backup_id, "to restore")
    if args.volume:
        manifest = catalog.get(args.backup_id)
        for claim, directory in args.volume:
            done = restore_volume(catalog, manifest, claim, directory, args.overwrite_volumes, identity)
            print(f"volume {claim} of backup {manifest.id} restored into {directory}: {done.files} files, "
                  f"{done.directories} directories, {done.links} links, {done.bytes} bytes")
        return jobenv.EXIT_OK
    if args.target_dir is not None:
        path = restore_physical(catalog, args.backup_id, args.target_dir, identity)
        print(f"backup {args.backup_id} restored into {path}; start it with: pg_ctl -D {path} start")
        return jobenv.EXIT_OK
    target = _target_server(policy, args)
    ownership = Ownership(no_owner=args.no_owner, no_privileges=args.no_privileges)
    if args.table or args.schema:
        report = restore_selected(catalog, args.backup_id, target, args.target_database,
                                  Selection.parse(args.schema, args.table), identity,
                                  source_database=args.source_database, scratch=scratch_dir(), ownership=ownership)
    else:
        report = restore_backup(catalog, args.backup_id, target, args.target_database, identity,
                                source_database=args.source_database, with_globals=args.globals, jobs=args.jobs,
                                scratch=scratch_dir(), allow_empty_target=args.allow_empty_target,
                                ownership=ownership, scratch_limit=scratch_limit_for(policy.spec, scratch_dir()))
    if args.json:
        print(json.dumps({"backup_id": report.backup_id, "source_database": report.source_database,
                          "target_database": report.target_database, "ok": report.ok,
                          "duration_seconds": report.duration_seconds,
                          "tables": [{"table": t.table, "expected": t.expected, "actual": t.actual, "ok": t.ok}
                                     for t in report.tables]}, indent=2))
    else:
        for check in report.tables:
            mark = "ok" if check.ok else "MISMATCH"
            print(f"{check.table:<50} expected {check.expected!s:>10} restored {check.actual!s:>10} {mark}")
        print(f"{'restored' if report.ok else 'restored WITH MISMATCHES'}: backup {report.backup_id} database "
              f"{report.source_database!r} -> {report.target_database!r}, {len(report.tables)} tables compared, "
              f"{report.duration_seconds:.1f}s")
    return jobenv.EXIT_OK if report.ok else jobenv.EXIT_FAILED


def cmd_restore_pitr(policy: PolicyConfig, args: argparse.Namespace, catalog: Catalog, identity: str | None) -> int:
    if args.backup_id != "latest":
        raise UsageError("a point-in-time restore picks the newest base backup before the target itself: pass 'latest' "
                         "as the backup ID")
    target = PitrTarget(time=args.target_time, lsn=args.target_lsn, inclusive=not args.exclusive)
    archive = archive_for_policy(policy, storage=catalog.storage, identity=identity)
    conn = _target_server(policy, args) if args.target_database is not None else None
    login = [os.environ[jobenv.ENV_DB_USER]] if os.environ.get(jobenv.ENV_DB_USER) else []
    report = restore_to_point(catalog, archive, target, identity=identity, target_dir=args.target_dir,
                              target_conn=conn, target_database=args.target_database,
                              source_database=args.source_database, scratch=scratch_dir(),
                              server_env=policy_server_env(policy_json(policy), os.environ), login_roles=login,
                              no_privileges=args.no_privileges)
    plan = report.plan
    result = {"backup_id": plan.backup_id, "wal_from": plan.wal_from, "wal_to": plan.wal_to,
              "target": target.describe(), "restored_into": report.target, "row_counts": report.row_counts,
              "duration_seconds": report.duration_seconds}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"recovered {target.describe()} from base backup {plan.backup_id} + WAL {plan.wal_from}..{plan.wal_to} "
              f"into {report.target} in {report.duration_seconds:.1f}s")
    return jobenv.EXIT_OK


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
