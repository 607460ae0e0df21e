"""The `pgbackup` argument parser: every command, its options and help, and the exit codes in the top-level
epilog (each command's help points there). Parsing happens only here; the command modules get the parsed
arguments."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from pgbackup import installed_version
from pgbackup.api import jobenv
from pgbackup.runner.common.timestamps import parse_timestamp

EXIT_CODES_HELP = """exit codes:
  0  success
  1  failed: the backup/restore failed, `check` found damage, row counts differ
  2  network: PostgreSQL or the storage could not be reached
  3  usage: bad arguments, invalid policy, unknown backup id
  4  general: unexpected internal error
  141  the reader of stdout stopped early (`pgbackup list | head -1`), as with cat or git: no error is logged

SIGTERM (Kubernetes stopping the pod: activeDeadlineSeconds, drain, eviction) stops a run cleanly: uploads
are aborted, pg_dump/pg_basebackup are stopped, no manifest is written, a Failed summary with reason
Terminated is left and the exit code is 1.

The policy comes from --policy FILE (YAML or JSON: a BackupPolicy, its spec, or {name, namespace, spec}) or
from $PGBACKUP_POLICY. Database credentials come from $PGUSER/$PGPASSWORD, S3 credentials from
$AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, the age identity (restore of encrypted backups) from
$PGBACKUP_AGE_IDENTITY_FILE or --identity-file. Logs are JSON lines on stderr; results go to stdout."""

COMMAND_EPILOG = "exit codes, SIGTERM, where the policy and credentials come from: pgbackup --help"


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad arguments; our contract says 3 (usage)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(jobenv.EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pgbackup", description="PostgreSQL backups streamed compressed, encrypted and checksummed "
                     "to S3 or a volume, with a catalog of manifests.", epilog=EXIT_CODES_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pgbackup {installed_version()}",
                        help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=COMMAND_EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--policy", metavar="FILE", help=f"policy YAML/JSON (default: ${jobenv.ENV_POLICY})")
        return sub

    backup = command("backup", "take a backup as the policy says, write the summary, then apply retention")
    backup.add_argument("--full", action="store_true",
                        help="take a full physical backup even when spec.physical.fullEvery would make it incremental "
                             "(it starts a new chain)")
    listing = command("list", "list the catalog: id, method, time, size, verified (passed, failed or not yet)")
    listing.add_argument("--json", action="store_true", help="print the manifests as JSON")
    listing.add_argument("--copy", metavar="NAME", help="list the catalog of this copy (spec.copies[].name)")
    command("catalog-summary", "print (and leave as the Job's summary) the newest backup and the ids storage holds, "
            "for the operator's catalog-sync Job")
    show = command("show", "print the manifest of a backup")
    show.add_argument("backup_id", metavar="ID", help="backup id, or 'latest'")
    check = command("check", "re-read every object of a backup and compare sizes and SHA-256 (exit 1 on damage)")
    check.add_argument("backup_id", metavar="ID", help="backup id, or 'latest'")
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
    restore.add_argument("--jobs", type=int, default=2,
                         help="pg_restore runs side by side (a custom-format dump is staged in scratch and loaded "
                              "while it arrives when it fits, else streamed with one job)")
    restore.add_argument("--from-copy", metavar="NAME", help="read the backup from this copy (spec.copies[].name)")
    restore.add_argument("--identity-file", metavar="FILE",
                         help=f"age identity for encrypted backups (default: ${jobenv.ENV_AGE_IDENTITY_FILE})")
    restore.add_argument("--no-owner", action="store_true",
                         help="logical: everything restored, the database too, belongs to the login role (pg_restore "
                              "--no-owner); for a role that is not a superuser nor a member of the owners' roles")
    restore.add_argument("--no-privileges", action="store_true",
                         help="logical: replay none of the backup's GRANTs/REVOKEs, on objects or the database "
                              "(pg_restore --no-privileges): default privileges, which may be wider")
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


def add_verify_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """`pgbackup verify [ID]`."""
    help_text = ("restore a backup into a throwaway PostgreSQL, compare row counts, run the policy's checks, "
                 "record verification.json (exit 1 when it fails)")
    sub: argparse.ArgumentParser = subparsers.add_parser(
        "verify", help=help_text, description=help_text, epilog=COMMAND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("--policy", metavar="FILE", help=f"policy YAML/JSON (default: ${jobenv.ENV_POLICY})")
    sub.add_argument("backup_id", metavar="ID", nargs="?", default=None,
                     help=f"backup id or 'latest' (default: ${jobenv.ENV_VERIFY_BACKUP_ID}, else the latest)")
    sub.add_argument("--identity-file", metavar="FILE",
                     help=f"age identity for encrypted backups (default: ${jobenv.ENV_AGE_IDENTITY_FILE})")
    sub.add_argument("--json", action="store_true", help="print verification.json")
    return sub


def add_restore_request_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """`pgbackup restore-request` (needs no --policy: the request embeds it)."""
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
    return sub


def _timestamp(text: str) -> datetime:
    try:
        return parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time like 2026-11-23T10:15:00Z") from None


def _volume_arg(text: str) -> tuple[str, Path]:
    claim, sep, directory = text.partition("=")
    if not sep or not claim or not directory:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CLAIM=DIR, e.g. uploads=/srv/restored-uploads")
    return claim, Path(directory)
