"""The errors that end a run, and the documented exit code and summary reason of each (pgbackup.api.jobenv):
0 ok, 1 failed, 2 network, 3 usage, 4 unexpected.

The storage errors live here too (pgbackup.runner.storage.base re-exports them as part of the Storage
interface) so that the exit code of any failure is decided in one place without looking up into storage."""

from __future__ import annotations

import signal

from pgbackup.api import jobenv
from pgbackup.runner.common.termination import Terminated


class RunnerError(Exception):
    """A failure the runner reports as-is: the message says what failed, where, and what to do next."""

    reason = "BackupFailed"
    exit_code = jobenv.EXIT_FAILED

    def __init__(self, message: str, *, reason: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(RunnerError):
    """Wrong arguments or an invalid policy: retrying will not help."""

    reason = "InvalidPolicy"
    exit_code = jobenv.EXIT_USAGE


class StorageError(Exception):
    """A storage operation failed; the message names the bucket/path and key and what to check."""


class ObjectNotFound(StorageError):
    """The key does not exist."""


class ExclusiveCreateUnsupported(StorageError):
    """The storage cannot create an object only if it is absent (or ignores the condition): callers use a
    protocol that does without (pgbackup.runner.catalog.claim)."""


class StorageUnreachable(StorageError):
    """The storage could not be reached (endpoint down, connection refused or reset, timeouts), after retries.

    A network problem rather than a problem with the data or the credentials: the runner exits with the
    network exit code (pgbackup.api.jobenv.EXIT_NETWORK) so the operator and the user look at connectivity.
    """


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code: 1 failed, 2 network, 3 usage, 4 unexpected."""
    if isinstance(exc, (RunnerError, Terminated)):
        return exc.exit_code
    if isinstance(exc, StorageError):
        explicit = getattr(exc, "exit_code", None)
        if isinstance(explicit, int):
            return explicit
        return jobenv.EXIT_NETWORK if isinstance(exc, StorageUnreachable) else jobenv.EXIT_FAILED
    return jobenv.EXIT_GENERAL


def failure_reason(exc: BaseException) -> str:
    """The summary's reason for a failure: the error's own, else StorageFailed or InternalError."""
    return getattr(exc, "reason", None) or ("StorageFailed" if isinstance(exc, StorageError) else "InternalError")


_KILLED_HINT = ("a SIGKILL nobody sent by hand is most often the out-of-memory killer: look for OOMKilled in "
                "`kubectl describe pod` (or the kernel log on a host) and raise the container's memory limit "
                "(spec.jobTemplate.resources.limits.memory), or lower logical.jobs")


def program_ended(returncode: int, stderr: str = "", *, tail: int = 1200) -> str:
    """How a failed program ended and what it said last, for an error message: 'exited with status 1: <stderr>',
    'exited with status 1 without a message', or 'was killed by signal 9 (SIGKILL) ...; <what to check>'."""
    said = stderr.strip()[-tail:]
    if returncode >= 0:
        return f"exited with status {returncode}: {said}" if said else f"exited with status {returncode} without a message"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "unknown signal"
    text = f"was killed by signal {-returncode} ({name})" + (f": {said}" if said else "")
    return f"{text}; {_KILLED_HINT}" if -returncode == signal.SIGKILL else text
