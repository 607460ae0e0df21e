"""`pgbackup wal-push PATH`: archive one WAL file, as archive_command runs it (once per WAL segment, on the
database server, a new process each time).

It starts without what the other commands need (psycopg, the catalog, backup and restore): the console script
(pgbackup.runner.cli.entry) sends `wal-push` here before anything else is imported. What it imports is the
policy, the storage and the WAL archive (pgbackup.runner.wal.archive), nothing more: a busy server fills a
16 MiB segment in seconds, and each start-up second is archive lag and a backlog in pg_wal.
Behaviour is that of the full command line (same parser, exit codes, JSON logs, SIGTERM handling).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pgbackup.api import jobenv
from pgbackup.runner.cli.failures import report_failure
from pgbackup.runner.cli.parser import build_parser
from pgbackup.runner.common.config import PolicyConfig, load_policy
from pgbackup.runner.common.log import log_error
from pgbackup.runner.common.termination import Terminated, terminate_gracefully
from pgbackup.runner.wal.archive import archive_for_policy


def cmd_wal_push(policy: PolicyConfig, args: argparse.Namespace) -> int:
    archive_for_policy(policy).push(args.path)
    return jobenv.EXIT_OK


def main(argv: Sequence[str]) -> int:
    """`pgbackup wal-push ARGS...` (`argv` without the command name)."""
    try:
        args = build_parser().parse_args(["wal-push", *argv])
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else jobenv.EXIT_USAGE
    try:
        with terminate_gracefully():
            try:
                return cmd_wal_push(load_policy(args.policy), args)
            except Exception as exc:  # noqa: BLE001 - mapped to the documented exit codes
                return report_failure("wal-push", exc)
    except Terminated as exc:  # PostgreSQL stopping the archiver (fast shutdown): it retries the file later
        log_error("wal-push.failed", reason=exc.reason, error=str(exc))
        print(f"pgbackup wal-push: {exc}", file=sys.stderr)
        return exc.exit_code
