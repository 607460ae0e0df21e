"""How a command that failed ends: one JSON error line, one line on stderr, the documented exit code. Shared by
the full command line (main) and the slim `wal-push` entry, so it imports nothing beyond common."""

from __future__ import annotations

import sys

from pgbackup.runner.common.errors import RunnerError, UsageError, exit_code_for
from pgbackup.runner.common.log import log_error


def described(exc: BaseException) -> str:
    """The error with the notes added on its way up (e.g. what a failed restore removed again)."""
    return "; ".join([str(exc), *getattr(exc, "__notes__", ())])


def report_failure(command: str, exc: Exception) -> int:
    """Log and print why `command` failed; its exit code (a RunnerError's own, else by the kind of error)."""
    if isinstance(exc, (RunnerError, UsageError)):
        log_error(f"{command}.failed", reason=exc.reason, error=described(exc))
        print(f"pgbackup {command}: {described(exc)}", file=sys.stderr)
        return exc.exit_code
    log_error(f"{command}.failed", error=described(exc))
    print(f"pgbackup {command}: {described(exc)}", file=sys.stderr)
    return exit_code_for(exc)
