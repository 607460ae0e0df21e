"""Retried S3 requests made visible: botocore retries throttling, 5xx answers and connection errors by itself
('standard' mode), silently. Three hooks on a client's own events log each retry (operation, object, attempt,
the error of the attempt before) and count it for the run's summary (pgbackup.runner.common.retries).

- before-parameter-build: remember the object (s3://bucket/key) in the request's context;
- needs-retry: remember what each attempt failed with (botocore's retry handler decides, we only look);
- request-created: botocore numbers every attempt in context['retries']['attempt'], so attempt 2 and later is a
  retry of the request whose error was remembered."""

from __future__ import annotations

from typing import Any

from pgbackup.runner.common.log import log_warning
from pgbackup.runner.common.retries import record_retry

_OBJECT = "pgbackup_object"
_LAST_ERROR = "pgbackup_last_error"


def watch_retries(client: Any, max_attempts: int) -> None:
    """Log and count the retries of `client` (a boto3 S3 client)."""
    events = client.meta.events

    def retried(request: Any, operation_name: str, **_: Any) -> None:
        context = getattr(request, "context", None) or {}
        attempt = int((context.get("retries") or {}).get("attempt") or 1)
        if attempt < 2:
            return
        error = context.get(_LAST_ERROR) or "an unreadable answer"
        count = record_retry(error)
        log_warning("s3.retry", operation=operation_name, object=context.get(_OBJECT), attempt=attempt,
                    max_attempts=max_attempts, error=error, retries_in_run=count)

    events.register("before-parameter-build.s3", _remember_object, unique_id="pgbackup-retry-object")
    events.register("needs-retry.s3", _remember_error, unique_id="pgbackup-retry-error")
    events.register("request-created.s3", retried, unique_id="pgbackup-retry-log")


def _remember_object(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    bucket, key = params.get("Bucket"), params.get("Key")
    if bucket:
        context[_OBJECT] = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def _remember_error(request_dict: dict[str, Any], response: Any = None, caught_exception: BaseException | None = None,
                    **_: Any) -> None:
    """Returns None: the retry decision stays with botocore's own handler."""
    error = _attempt_error(response, caught_exception)
    if error is not None:
        request_dict["context"][_LAST_ERROR] = error


def _attempt_error(response: Any, caught_exception: BaseException | None) -> str | None:
    """What an attempt failed with: 'InternalError: <message> (HTTP 500)', or the connection error."""
    if caught_exception is not None:
        return f"{type(caught_exception).__name__}: {caught_exception}"
    if not response:
        return None
    http, parsed = response
    status = int(getattr(http, "status_code", 0) or 0)
    error = (parsed or {}).get("Error") or {}
    if status < 300 and not error:
        return None
    code = error.get("Code") or f"HTTP {status}"
    message = error.get("Message") or ""
    return f"{code}: {message} (HTTP {status})" if message else f"{code} (HTTP {status})"
