"""`pgbackup`: the backup runner's command line.

Exit codes (barman's convention, pgbackup.api.jobenv): 0 ok, 1 failed (backup/restore/check failed, damaged
backup, row count mismatch), 2 network (database or storage unreachable), 3 usage (bad arguments or policy,
unknown backup id), 4 general (unexpected internal error). SIGTERM unwinds (aborts uploads, stops child
programs, writes a Failed summary with reason Terminated) and exits with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from pgbackup.api import jobenv
from pgbackup.api.summary import MAX_STORED_BACKUPS, JobSummary
from pgbackup.runner.backup import (
    backup_command,
    exit_code_for,
    failure_summary,
    open_policy_storage,
    unfinished_grace,
    write_summary,
)
from pgbackup.runner.catalog import BackupNotFound, Catalog
from pgbackup.runner.config import PolicyConfig, RunnerError, UsageError, load_policy, scratch_dir
from pgbackup.runner.log import log_error
from pgbackup.runner.pg import ConnParams
from pgbackup.runner.restore_request import add_restore_request_parser, cmd_restore_request
from pgbackup.runner.termination import Terminated, terminate_gracefully
from pgbackup.runner.verify import add_verify_parser, cmd_verify

EXIT_CODES_HELP = """exit codes:
  0  success
  1  failed: the backup/restore failed, `check` found damage, row counts differ
  2  network: PostgreSQL or the storage could not be reached
  3  usage: bad arguments, invalid policy, unknown backup id
  4  general: unexpected internal error

SIGTERM (Kubernetes stopping the pod: activeDeadlineSeconds, drain, eviction) stops a run cleanly: uploads
are aborted, pg_dump/pg_basebackup are stopped, no manifest is written, a Failed summary with reason
Terminated is left and the exit code is 1.

The policy comes from --policy FILE (YAML or JSON: a BackupPolicy, its spec, or {name, namespace, spec}) or
from $PGBACKUP_POLICY. Database credentials come from $PGUSER/$PGPASSWORD, S3 credentials from
$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, the age identity (restore of encrypted backups) from
$PGBACKUP_AGE_IDENTITY_FILE or --identity-file. Logs are JSON lines on stderr; results go to stdout."""


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad arguments; our contract says 3 (usage)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(jobenv.EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgbackup", description="PostgreSQL backups streamed compressed, encrypted and checksummed "
                     "to S3 or a volume, with a catalog of manifests.", epilog=EXIT_CODES_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES_HELP,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--policy", metavar="FILE", help=f"policy YAML/JSON (default: ${jobenv.ENV_POLICY})")
        return sub

    command("backup", "take a backup as the policy says, write the summary, then apply retention")
    listing = command("list", "list the catalog: id, method, time, size, verified")
    listing.add_argument("--json", action="store_true", help="print the manifests as JSON")
    listing.add_argument("--copy", metavar="NAME", help="list the catalog of this copy (spec.copies[].name)")
    command("catalog-summary", "print (and leave as the Job's summary) the newest backup and the ids storage holds, "
            "for the operator's catalog-sync Job")
    show = command("show", "print the manifest of a backup")
    show.add_argument("backup_id", metavar="ID")
    check = command("check", "re-read every object of a backup and compare sizes and SHA-256 (exit 1 on damage)")
    check.add_argument("backup_id", metavar="ID")
    check.add_argument("--copy", metavar="NAME", help="check the backup in this copy (spec.copies[].name)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    retention = command("retention", "apply the policy's retention rules: what is kept or deleted and why")
    retention.add_argument("--dry-run", action="store_true", help="only print the decisions, delete nothing")
    restore = command("restore", "restore a backup: logical into a NEW database, physical into a new data dir")
    restore.add_argument("backup_id", metavar="ID", help="backup id, or 'latest'")
    where = restore.add_mutually_exclusive_group(required=True)
    where.add_argument("--target-database", metavar="NAME", help="new database to create (logical backups)")
    where.add_argument("--target-dir", metavar="DIR", type=Path, help="new, empty data directory (physical backups)")
    where.add_argument("--volume", metavar="CLAIM=DIR", action="append", type=_volume_arg,
                       help="restore the backup's application volume CLAIM into DIR (empty unless --overwrite-volumes); "
                            "repeat for several")
    restore.add_argument("--overwrite-volumes", action="store_true",
                         help="with --volume: restore into a non-empty DIR, replacing files of the same name")
    restore.add_argument("--source-database", metavar="NAME", help="which database of the backup (when it holds several)")
    restore.add_argument("--target-host", help="server to restore into (default: the policy's database host)")
    restore.add_argument("--target-port", type=int, help="its port (default: the policy's)")
    restore.add_argument("--globals", action="store_true", help="also replay roles and tablespaces (pg_dumpall globals)")
    restore.add_argument("--jobs", type=int, default=1, help="pg_restore -j for directory-format dumps")
    restore.add_argument("--from-copy", metavar="NAME", help="read the backup from this copy (spec.copies[].name)")
    restore.add_argument("--identity-file", metavar="FILE",
                         help=f"age identity for encrypted backups (default: ${jobenv.ENV_AGE_IDENTITY_FILE})")
    restore.add_argument("--allow-empty-target", action="store_true",
                         help="restore into an existing database that holds no tables (else it must not exist)")
    restore.add_argument("--json", action="store_true", help="print the row count comparison as JSON")
    point = restore.add_mutually_exclusive_group()
    point.add_argument("--target-time", metavar="TIME", type=_timestamp,
                       help="point-in-time recovery to this moment (RFC 3339, e.g. 2026-11-23T10:15:00Z; ID must be "
                            "'latest': the newest base backup before it is picked)")
    point.add_argument("--target-lsn", metavar="LSN", help="point-in-time recovery to this WAL position, e.g. 0/3000060")
    restore.add_argument("--table", action="append", default=[], metavar="SCHEMA.TABLE",
                         help="selective restore: only this table ('schema.table' or 'table' = public) with its "
                              "data, sequences, indexes and constraints; repeatable (logical backups, new database)")
    restore.add_argument("--schema", action="append", default=[], metavar="NAME",
                         help="selective restore: the tables and sequences of this schema; repeatable")
    importing = command("import", "register an existing pg_dump file (custom-format .dump or `pg_dump | gzip` "
                        ".sql.gz) in the catalog, after verifying its sha256sum file")
    importing.add_argument("file", metavar="FILE", type=Path, help="the .dump or .sql.gz file")
    importing.add_argument("--sha256-file", metavar="FILE", type=Path,
                           help="its checksum file in `sha256sum` format (default: FILE.sha256)")
    importing.add_argument("--no-checksum", action="store_true", help="import without a checksum file (not advised)")
    importing.add_argument("--database", metavar="NAME",
                           help="the database it holds (default: from the dump's header, else the file name)")
    importing.add_argument("--taken-at", metavar="TIME", type=_timestamp,
                           help="when the dump was taken, RFC 3339 (default: the file's modification time)")
    restore.add_argument("--exclusive", action="store_true",
                         help="stop just before the target instead of just after it (recovery_target_inclusive off)")
    wal_push = command("wal-push", "archive one WAL file (for archive_command); "
                       "re-pushing an identical file succeeds, a different one under the same name fails")
    wal_push.add_argument("path", metavar="PATH", type=Path, help="the WAL file: archive_command = 'pgbackup wal-push %%p'")
    wal_fetch = command("wal-fetch", "restore one WAL file (for restore_command); "
                        "exit 1 when the archive does not hold it")
    wal_fetch.add_argument("name", metavar="NAME", help="WAL file name: restore_command = 'pgbackup wal-fetch %%f %%p'")
    wal_fetch.add_argument("dest", metavar="DEST", type=Path, help="where to write it (%%p)")
    wal_fetch.add_argument("--allow-partial", action="store_true",
                           help="serve a missing segment from its .partial copy (the newest WAL the streamer shipped)")
    wal_fetch.add_argument("--identity-file", metavar="FILE",
                           help=f"age identity for an encrypted archive (default: ${jobenv.ENV_AGE_IDENTITY_FILE})")
    command("wal-stream", "stream WAL continuously with pg_receivewal through a replication slot and ship every "
            "segment (and the current .partial) to the archive; runs until SIGTERM")
    add_verify_parser(commands)
    add_restore_request_parser(commands)
    return parser


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time like 2026-11-23T10:15:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _catalog(policy: PolicyConfig, from_copy: str | None = None) -> Catalog:
    if from_copy:
        from pgbackup.runner.copies import open_source_storage

        return Catalog(open_source_storage(policy, from_copy), policy)
    return Catalog(open_policy_storage(policy), policy)


def cmd_list(policy: PolicyConfig, args: argparse.Namespace) -> int:
    catalog = _catalog(policy, args.copy)
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
    print(f"{'ID':<22} {'METHOD':<9} {'PURPOSE':<11} {'COMPLETED (UTC)':<20} {'SIZE':>10} {'DURATION':>9} VERIFIED")
    for m in backups:
        completed = m.completed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{m.id:<22} {m.method:<9} {m.purpose:<11} {completed:<20} {_human_size(m.size_bytes):>10} "
              f"{m.duration_seconds:>8.1f}s {'yes' if m.verified else 'no'}")
    return jobenv.EXIT_OK


def cmd_catalog_summary(policy: PolicyConfig, args: argparse.Namespace) -> int:
    """What storage holds, as a JobSummary(kind='catalog'): the newest backup's facts and the ids, newest first.
    The operator runs this when a backup Job may have gone before it was recorded, and records it like a backup."""
    started = datetime.now(UTC)
    try:
        backups = _catalog(policy).backups()
    except Exception as exc:
        write_summary(failure_summary("catalog", exc, started))
        raise
    newest = backups[0] if backups else None
    summary = JobSummary(kind="catalog", phase="Completed", started_at=started, stored_backups=[
        m.id for m in backups][:MAX_STORED_BACKUPS])
    if newest is not None:
        summary = summary.model_copy(update={
            "backup_id": newest.id, "method": newest.method, "completed_at": newest.completed_at,
            "size_bytes": newest.size_bytes, "duration_seconds": newest.duration_seconds})
    write_summary(summary)
    print(summary.to_termination_message())
    return jobenv.EXIT_OK


def cmd_show(policy: PolicyConfig, args: argparse.Namespace) -> int:
    print(_catalog(policy).get(args.backup_id).model_dump_json(indent=2))
    return jobenv.EXIT_OK


def cmd_check(policy: PolicyConfig, args: argparse.Namespace) -> int:
    report = _catalog(policy, args.copy).check(args.backup_id)
    if args.json:
        print(json.dumps({"backup_id": report.backup_id, "ok": report.ok,
                          "objects": [vars(o) for o in report.objects]}, indent=2))
    else:
        print(report.summary())
    return jobenv.EXIT_OK if report.ok else jobenv.EXIT_FAILED


def cmd_retention(policy: PolicyConfig, args: argparse.Namespace) -> int:
    from pgbackup.runner.retention import apply_retention

    catalog = _catalog(policy)
    now = datetime.now(UTC)
    decisions = apply_retention(catalog, policy.spec.retention, now, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for decision in decisions:
        print(f"{decision.id:<22} {'keep' if decision.keep else verb:<12} {'; '.join(decision.reasons)}")
    for backup_id in catalog.clean_unfinished(unfinished_grace(policy), now, dry_run=args.dry_run):
        print(f"{backup_id:<22} {verb:<12} unfinished: left by a failed or killed run")
    return jobenv.EXIT_OK


def cmd_backup(policy: PolicyConfig, args: argparse.Namespace) -> int:
    code, summary = backup_command(policy)
    print(summary.to_termination_message())
    return code


def _identity(args: argparse.Namespace) -> str | None:
    from pgbackup.runner.pipeline import load_identity

    if args.identity_file:
        return load_identity(args.identity_file)
    if os.environ.get(jobenv.ENV_AGE_IDENTITY_FILE):
        return load_identity()
    return None


def _volume_arg(text: str) -> tuple[str, Path]:
    claim, sep, directory = text.partition("=")
    if not sep or not claim or not directory:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CLAIM=DIR, e.g. uploads=/srv/restored-uploads")
    return claim, Path(directory)


def cmd_restore(policy: PolicyConfig, args: argparse.Namespace) -> int:
    from pgbackup.runner.restore import restore_backup, restore_physical

    catalog = _catalog(policy, args.from_copy)
    identity = _identity(args)
    if args.target_time is not None or args.target_lsn is not None:
        return cmd_restore_pitr(policy, args, catalog, identity)
    if args.backup_id == "latest":
        newest = catalog.latest()
        if newest is None:
            raise UsageError(f"the catalog at {catalog.storage.url} holds no backup to restore")
        args.backup_id = newest.id
    if args.volume:
        from pgbackup.runner.volumes import restore_volume

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
    source = ConnParams.from_spec(policy.spec.database)
    target = ConnParams(host=args.target_host or source.host, port=args.target_port or source.port, user=source.user,
                        password=source.password, sslmode=source.sslmode, sslrootcert=source.sslrootcert,
                        credentials_hint=source.credentials_hint)
    if args.table or args.schema:
        from pgbackup.runner.selective import Selection, restore_selected

        report = restore_selected(catalog, args.backup_id, target, args.target_database,
                                  Selection.parse(args.schema, args.table), identity,
                                  source_database=args.source_database, scratch=scratch_dir())
    else:
        report = restore_backup(catalog, args.backup_id, target, args.target_database, identity,
                                source_database=args.source_database, with_globals=args.globals, jobs=args.jobs,
                                scratch=scratch_dir(), allow_empty_target=args.allow_empty_target)
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


def cmd_import(policy: PolicyConfig, args: argparse.Namespace) -> int:
    from pgbackup.runner.importer import import_dump

    manifest = import_dump(policy, _catalog(policy), args.file, sha_file=args.sha256_file, database=args.database,
                           taken_at=args.taken_at, skip_checksum=args.no_checksum, environ=os.environ)
    info = manifest.databases[0]
    print(f"imported {args.file} as backup {manifest.id}: database {info.name!r}, format {info.dump_format}, "
          f"taken at {manifest.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, {_human_size(manifest.size_bytes)} "
          f"stored")
    return jobenv.EXIT_OK


def cmd_wal_push(policy: PolicyConfig, args: argparse.Namespace) -> int:
    from pgbackup.runner.wal.archive import archive_for_policy

    archive_for_policy(policy).push(args.path)
    return jobenv.EXIT_OK


def cmd_wal_fetch(policy: PolicyConfig, args: argparse.Namespace) -> int:
    from pgbackup.runner.log import log
    from pgbackup.runner.wal.archive import archive_for_policy

    archive = archive_for_policy(policy, identity=_identity(args))
    if archive.fetch(args.name, args.dest, allow_partial=args.allow_partial):
        return jobenv.EXIT_OK
    log("wal.fetch.not_found", name=args.name, storage=archive.storage.url)  # routine at the end of the archive
    return jobenv.EXIT_FAILED


def cmd_restore_pitr(policy: PolicyConfig, args: argparse.Namespace, catalog: Catalog, identity: str | None) -> int:
    from pgbackup.runner.pitr import PitrTarget, policy_server_env, restore_to_point
    from pgbackup.runner.wal.archive import archive_for_policy

    if args.backup_id != "latest":
        raise UsageError("a point-in-time restore picks the newest base backup before the target itself: pass 'latest' "
                         "as the backup ID")
    target = PitrTarget(time=args.target_time, lsn=args.target_lsn, inclusive=not args.exclusive)
    archive = archive_for_policy(policy, storage=catalog.storage, identity=identity)
    conn = None
    if args.target_database is not None:
        source = ConnParams.from_spec(policy.spec.database)
        conn = ConnParams(host=args.target_host or source.host, port=args.target_port or source.port,
                          user=source.user, password=source.password, sslmode=source.sslmode,
                          sslrootcert=source.sslrootcert, credentials_hint=source.credentials_hint)
    policy_json = json.dumps({"name": policy.name, "namespace": policy.namespace, "spec": policy.spec.to_wire()})
    login = [os.environ[jobenv.ENV_DB_USER]] if os.environ.get(jobenv.ENV_DB_USER) else []
    report = restore_to_point(catalog, archive, target, identity=identity, target_dir=args.target_dir,
                              target_conn=conn, target_database=args.target_database,
                              source_database=args.source_database, scratch=scratch_dir(),
                              server_env=policy_server_env(policy_json, os.environ), login_roles=login)
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


def cmd_wal_stream(policy: PolicyConfig, args: argparse.Namespace) -> int:
    from pgbackup.api.base import parse_duration
    from pgbackup.runner.pg import find_tools, server_info
    from pgbackup.runner.wal.archive import archive_for_policy
    from pgbackup.runner.wal.stream import WalStreamer, default_slot_name, spool_limit

    from pgbackup.runner.wal.status import StatusServer, WalStateTracker, status_port

    spec = policy.spec
    params = ConnParams.from_spec(spec.database)
    archive = archive_for_policy(policy)
    slot = spec.wal.slot_name or default_slot_name(policy.name)
    # Served first, so the operator sees why streaming cannot start (the answer's `error`) while this runs.
    tracker = WalStateTracker(params, archive, slot=slot, catalog=Catalog(archive.storage, policy))
    server = StatusServer(tracker, port=status_port()).start()
    tracker.start()
    try:
        with params.connect("postgres") as conn:
            tools = find_tools(server_info(conn).major)
        streamer = WalStreamer(params, tools, archive, slot=slot, directory=scratch_dir() / "wal",
                               partial_interval=parse_duration(spec.wal.partial_upload_interval).total_seconds(),
                               observer=tracker, spool_limit=spool_limit())
        try:
            streamer.run()
        except Terminated:  # the Deployment's pod is being replaced: what was complete has been shipped
            return jobenv.EXIT_OK
        return jobenv.EXIT_OK
    finally:
        tracker.stop()
        server.stop()


COMMANDS = {"backup": cmd_backup, "list": cmd_list, "catalog-summary": cmd_catalog_summary, "show": cmd_show, "check": cmd_check,
            "retention": cmd_retention, "restore": cmd_restore, "verify": cmd_verify,
            "import": cmd_import, "wal-push": cmd_wal_push, "wal-fetch": cmd_wal_fetch, "wal-stream": cmd_wal_stream}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else jobenv.EXIT_USAGE
    try:
        with terminate_gracefully():
            return _run(args)
    except Terminated as exc:  # stopped outside a backup's own handling (another command, or while loading)
        if args.command == "backup":
            write_summary(failure_summary("backup", exc, datetime.now(UTC)))
        log_error(f"{args.command}.failed", reason=exc.reason, error=str(exc))
        print(f"pgbackup {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    if args.command == "restore-request":  # the policy travels inside the request (PGBACKUP_RESTORE)
        return cmd_restore_request(args)
    try:
        try:
            policy = load_policy(args.policy)
        except RunnerError as exc:
            if args.command == "backup":  # the operator still gets a Failed summary
                write_summary(failure_summary("backup", exc, datetime.now(UTC)))
            raise
        return COMMANDS[args.command](policy, args)
    except BackupNotFound as exc:
        log_error(f"{args.command}.failed", error=str(exc))
        print(f"pgbackup {args.command}: {exc}", file=sys.stderr)
        return jobenv.EXIT_USAGE
    except (RunnerError, UsageError) as exc:
        log_error(f"{args.command}.failed", reason=exc.reason, error=_described(exc))
        print(f"pgbackup {args.command}: {_described(exc)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - mapped to the documented exit codes
        log_error(f"{args.command}.failed", error=_described(exc))
        print(f"pgbackup {args.command}: {_described(exc)}", file=sys.stderr)
        return exit_code_for(exc)


def _described(exc: BaseException) -> str:
    """The error with the notes added on its way up (e.g. what a failed restore removed again)."""
    return "; ".join([str(exc), *getattr(exc, "__notes__", ())])


if __name__ == "__main__":
    sys.exit(main())
