"""Stopping cleanly on SIGTERM, the way Kubernetes stops a pod (deadline, eviction, node drain).

Python's default action ends the process on the spot, so multipart uploads would stay open, pg_dump children
would linger and throwaway servers would keep running. Every `pgbackup` command runs inside
`terminate_gracefully()`, which turns SIGTERM into the `Terminated` exception so every abort path runs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgbackup.api import jobenv
from pgbackup.runner.common.log import log_warning


class Terminated(BaseException):
    """The runner was asked to stop (SIGTERM: the Job's activeDeadlineSeconds, node drain, eviction).

    A BaseException like KeyboardInterrupt, so no `except Exception` swallows it while every `finally` and
    abort path on the way out runs: uploads are aborted, child programs are stopped, no manifest is written.
    """

    reason = "Terminated"
    exit_code = jobenv.EXIT_FAILED

    def __init__(self, signal_name: str) -> None:
        super().__init__(
            f"the runner was stopped by {signal_name} (the Job ran into jobTemplate.activeDeadlineSeconds, or its "
            f"pod was evicted or its node drained); the unfinished work was discarded (no manifest or verification "
            f"record written, uploads aborted, throwaway servers stopped). If the deadline stopped it, raise "
            f"jobTemplate.activeDeadlineSeconds"
        )
        self.signal_name = signal_name


def _child_pids() -> list[int]:
    """Processes whose parent is this one (Linux /proc; empty elsewhere)."""
    me = os.getpid()
    children = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid ...; comm may hold spaces and parentheses, so split after the last ')'
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(me):
            children.append(int(entry.name))
    return children


def _stop_children() -> None:
    """Kill child programs (pg_dump, pg_basebackup, tar) that an interrupted run left behind, and reap them."""
    for pid in _child_pids():
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            log_warning("child.killed", pid=pid)
        except (ProcessLookupError, ChildProcessError):
            pass


@contextmanager
def terminate_gracefully() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread, so aborts and cleanups run and a Failed summary is written
    (Python's default action ends the process on the spot). Later SIGTERMs are ignored so the cleanup can finish
    within the pod's grace period; the previous handler is restored afterwards (main() is also called in-process)."""
    if sys.platform == "win32" or signal.getsignal(signal.SIGTERM) is None:
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    terminated = False

    def handler(signum: int, frame: object) -> None:
        nonlocal terminated
        if terminated:
            return
        terminated = True
        raise Terminated(signal.Signals(signum).name)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        if terminated:
            _stop_children()
        signal.signal(signal.SIGTERM, previous)
