"""`pgbackup`: the backup runner's command line.

Exit codes (barman's convention, pgbackup.api.jobenv): 0 ok, 1 failed (backup/restore/check failed, damaged
backup, row count mismatch), 2 network (database or storage unreachable), 3 usage (bad arguments or policy,
unknown backup id), 4 general (unexpected internal error). SIGTERM unwinds (aborts uploads, stops child
programs, writes a Failed summary with reason Terminated) and exits with 1. A reader that stops early
(`pgbackup list | head -1`) ends any command quietly with 141 (see STDOUT_CLOSED).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Callable, Sequence

from pgbackup.api import jobenv
from pgbackup.runner.catalog.catalog import BackupNotFound
from pgbackup.runner.cli.parser import build_parser
from pgbackup.runner.cli.failures import report_failure
from pgbackup.runner.cli.walpush import cmd_wal_push
from pgbackup.runner.common.config import PolicyConfig, load_policy
from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.common.log import log_error
from pgbackup.runner.common.summary import failure_summary, write_summary
from pgbackup.runner.common.termination import Terminated, terminate_gracefully
from pgbackup.runner.common.timestamps import utc_now

Command = Callable[[PolicyConfig, argparse.Namespace], int]


def command(name: str) -> Command:
    """The function that runs command `name`. Function-level imports for start-up time (each listed in
    tests/unit/test_runner_layout.py): a backup Job does not load restore, verify and WAL streaming code (about
    0.1 s of CPU at every start on the 2-core bench machine)."""
    if name == "backup":
        from pgbackup.runner.cli.backup import cmd_backup
        return cmd_backup
    if name in ("list", "catalog-summary", "show", "check", "retention", "import"):
        from pgbackup.runner.cli import catalog
        return {"list": catalog.cmd_list, "catalog-summary": catalog.cmd_catalog_summary, "show": catalog.cmd_show,
                "check": catalog.cmd_check, "retention": catalog.cmd_retention, "import": catalog.cmd_import}[name]
    if name == "restore":
        from pgbackup.runner.cli.restore import cmd_restore
        return cmd_restore
    if name == "verify":
        from pgbackup.runner.cli.verify import cmd_verify
        return cmd_verify
    if name == "wal-push":
        return cmd_wal_push
    from pgbackup.runner.cli import wal
    return {"wal-fetch": wal.cmd_wal_fetch, "wal-stream": wal.cmd_wal_stream}[name]


def restore_request(args: argparse.Namespace) -> int:
    """`pgbackup restore-request` (imported when run, as the commands above)."""
    from pgbackup.runner.cli.restore import cmd_restore_request
    return cmd_restore_request(args)

# When the reader of stdout goes away (`pgbackup list | head -1`), the command ends quietly with 141 = 128 + SIGPIPE:
# what coreutils, git and kubectl give, since SIGPIPE's default action ends them (Python ignores SIGPIPE, so we
# return it). Not 0: the output was not all delivered, and a success would hide what the command found (`check`
# exits 1 on damage); a script with `set -o pipefail` sees exactly what it sees for `cat big-file | head -1`.
STDOUT_CLOSED = 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here rather than at exit, where a closed stdout could only be reported as an error
        return code
    except BrokenPipeError:
        if not stdout_closed():
            raise
        _discard_stdout()
        return STDOUT_CLOSED


def stdout_closed() -> bool:
    """Whether the reader of stdout has gone (a pipe or socket whose other end is closed): the one BrokenPipeError
    that is not a failure. A child program's closed stdin (pg_restore stopping) is one."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file (e.g. captured in tests)
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that what is still buffered goes nowhere at exit instead of failing again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else jobenv.EXIT_USAGE
    try:
        with terminate_gracefully():
            return _run(args)
    except Terminated as exc:  # stopped outside a backup's own handling (another command, or while loading)
        if args.command == "backup":
            write_summary(failure_summary("backup", exc, utc_now()))
        log_error(f"{args.command}.failed", reason=exc.reason, error=str(exc))
        print(f"pgbackup {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    if args.command == "restore-request":  # the policy travels inside the request (PGBACKUP_RESTORE)
        return restore_request(args)
    try:
        try:
            policy = load_policy(args.policy)
        except RunnerError as exc:
            if args.command == "backup":  # the operator still gets a Failed summary
                write_summary(failure_summary("backup", exc, utc_now()))
            raise
        return command(args.command)(policy, args)
    except BackupNotFound as exc:
        log_error(f"{args.command}.failed", error=str(exc))
        print(f"pgbackup {args.command}: {exc}", file=sys.stderr)
        return jobenv.EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - mapped to the documented exit codes
        if isinstance(exc, BrokenPipeError) and stdout_closed():
            raise  # not a failure: main() ends quietly
        return report_failure(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
