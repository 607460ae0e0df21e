"""The `pgbackup` console script (and `python -m pgbackup.runner`).

`pgbackup wal-push` is archive_command: PostgreSQL starts it once per WAL segment, so its start-up time is
archive lag. It goes to the slim pgbackup.runner.cli.walpush, which imports only the policy, the storage and the
WAL archive; every other command goes to the full command line (pgbackup.runner.cli.main).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pgbackup.runner.cli import walpush
from pgbackup.runner.common.memory import return_large_buffers


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return_large_buffers()
    if args[:1] == ["wal-push"]:
        return walpush.main(args[1:])
    # A function-level import for start-up time, not to dodge a cycle: the full command line imports psycopg and
    # the catalog (and then the command being run), which wal-push must not pay for on each WAL segment.
    from pgbackup.runner.cli.main import main as full_main

    return full_main(args)
