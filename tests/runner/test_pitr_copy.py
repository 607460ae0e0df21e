"""The pipe under a PITR into a new database (pg_dump -Fc | pg_restore): neither program may block on a full
stderr pipe while the other waits for it, and a failure of either is reported with its own message."""

from __future__ import annotations

import os
import sys

import pytest

from pgbackup.runner.postgres.children import run_pipe

WARNINGS = 20_000
"""Lines of about 60 bytes: 1.2 MB of stderr, far more than a pipe buffer (64 KiB on Linux)."""


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.timeout(30)
def test_a_producer_writing_lots_of_stderr_does_not_deadlock_the_copy() -> None:
    producer = _python("import sys\n"
                       f"for i in range({WARNINGS}):\n"
                       "    sys.stderr.write(f'pg_dump: warning: something worth a line number {i:08d}\\n')\n"
                       "sys.stderr.flush()\n"
                       "sys.stdout.write('the dump')\n")
    consumer = _python("import sys\n"
                       "data = sys.stdin.buffer.read()\n"
                       "sys.stderr.write('pg_restore: warning: x\\n' * 5000)\n"
                       "print(f'restored {len(data)} bytes: {data.decode()}')\n")

    result = run_pipe(producer, consumer, producer_env=os.environ, consumer_env=os.environ)

    assert (result.producer_code, result.consumer_code) == (0, 0)
    assert result.producer_stderr.rstrip().endswith(f"line number {WARNINGS - 1:08d}")  # the end is what errors show
    assert result.consumer_stderr.rstrip().endswith("pg_restore: warning: x")


@pytest.mark.timeout(30)
def test_a_consumer_that_gives_up_ends_the_producer_and_reports_both() -> None:
    producer = _python("import sys\n"
                       "sys.stderr.write('pg_dump: starting\\n' * 10000); sys.stderr.flush()\n"
                       "while True:\n"
                       "    sys.stdout.buffer.write(b'x' * 65536)\n")
    consumer = _python("import sys\n"
                       "sys.stdin.buffer.read(10)\n"
                       "sys.exit('pg_restore: error: could not execute query: no space left on device')\n")

    result = run_pipe(producer, consumer, producer_env=os.environ, consumer_env=os.environ)

    assert result.consumer_code == 1
    assert "no space left on device" in result.consumer_stderr
    assert result.producer_code != 0  # stopped by the closed pipe, not left running
