"""Storage requests retried in this run: counted where the retry happens (pgbackup.runner.storage.s3 reads
botocore's own retry accounting), reported in the run's JobSummary (storageRetries) and its last log line, so a
flaky store shows even when every retry went through. One run per process (a Job); start_run() begins a new
count for callers that run several in one process (tests, the demo)."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryTally:
    """Requests retried since the run started, and the error of the last attempt that was retried."""

    retries: int = 0
    last_error: str | None = None


_lock = threading.Lock()
_tally = RetryTally()
_reported = 0


def start_run() -> None:
    """Count from zero (a new backup, restore or verification in this process)."""
    global _tally, _reported
    with _lock:
        _tally, _reported = RetryTally(), 0


def record_retry(error: str) -> int:
    """One more request is retried after `error`; returns the run's count (thread-safe: uploads run in threads)."""
    global _tally
    with _lock:
        _tally = RetryTally(_tally.retries + 1, error)
        return _tally.retries


def run_retries() -> RetryTally:
    with _lock:
        return _tally


def unreported_retries() -> RetryTally | None:
    """The run's tally when it grew since the last call (each summary written logs it once), else None."""
    global _reported
    with _lock:
        if _tally.retries <= _reported:
            return None
        _reported = _tally.retries
        return _tally
