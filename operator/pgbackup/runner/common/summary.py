"""The JobSummary a run leaves for the operator: written as the container's termination message (also on
failure)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from pgbackup.api import jobenv
from pgbackup.api.summary import TERMINATION_MESSAGE_PATH, JobSummary
from pgbackup.runner.common.errors import failure_reason
from pgbackup.runner.common.log import log_warning, redact
from pgbackup.runner.common.retries import run_retries, unreported_retries
from pgbackup.runner.common.timestamps import utc_now


def summary_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """$PGBACKUP_SUMMARY_FILE, else /dev/termination-log when writable (inside a pod), else nowhere."""
    environ = os.environ if environ is None else environ
    configured = environ.get(jobenv.ENV_SUMMARY_FILE)
    if configured:
        return Path(configured)
    default = Path(TERMINATION_MESSAGE_PATH)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def write_summary(summary: JobSummary, environ: Mapping[str, str] | None = None) -> JobSummary:
    """Write the summary with the run's count of retried storage requests (storageRetries, absent when none);
    returns what was written. A count that grew is logged once as `storage.retried` with the last error."""
    tally = run_retries()
    summary = summary.model_copy(update={"storage_retries": tally.retries or None})
    grown = unreported_retries()
    if grown is not None:
        log_warning("storage.retried", kind=summary.kind, retries=grown.retries, last_error=grown.last_error,
                    hint="storage requests failed and were retried (see the s3.retry lines); the run did not fail "
                         "because of them, but many mean a flaky or overloaded store")
    path = summary_path(environ)
    if path is None:
        return summary
    try:
        path.write_text(summary.to_termination_message())
    except OSError as exc:
        log_warning("summary.write_failed", path=str(path), error=exc.strerror)
    return summary


def failure_summary(kind: str, exc: BaseException, started_at: datetime, method: str | None = None) -> JobSummary:
    """The Failed summary: the error text (already secret-free by construction, redacted again) and a reason."""
    text = redact(str(exc) or type(exc).__name__)
    completed = utc_now()
    return JobSummary(kind=kind, phase="Failed", method=method, started_at=started_at,  # type: ignore[arg-type]
                      completed_at=completed, duration_seconds=round((completed - started_at).total_seconds(), 3),
                      error=text[:1400], reason=failure_reason(exc))
