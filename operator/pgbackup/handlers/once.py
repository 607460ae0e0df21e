"""Each finished Job is recorded by one caller at a time and, in this process, once: the kopf event handlers
(the fast path) and the periodic reconcile of handlers/recording.py (the path that never gives up) both go
through `run_once`. Across restarts the Job's `pgbackup.dev/recorded` mark, written last, says the same."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

REMEMBERED = 4096  # marks remembered in memory; older ones are on the Jobs themselves

_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}
_users: dict[str, int] = {}
_done: OrderedDict[str, None] = OrderedDict()


def run_once(key: str, record: Callable[[], bool]) -> bool:
    """Run `record` unless `key` (e.g. '<Job uid>/recorded') was already recorded here; concurrent callers for
    the same key wait for each other. `record` returns True once it has recorded (False: nothing to record
    yet, e.g. the Job still runs); an exception leaves the key unrecorded so that a later call retries."""
    with _guard:
        if key in _done:
            return False
        lock = _locks.setdefault(key, threading.Lock())
        _users[key] = _users.get(key, 0) + 1
    try:
        with lock:
            with _guard:
                if key in _done:
                    return False
            recorded = record()
            if recorded:
                with _guard:
                    _done[key] = None
                    while len(_done) > REMEMBERED:
                        _done.popitem(last=False)
            return recorded
    finally:
        with _guard:
            _users[key] -= 1
            if not _users[key]:
                del _users[key], _locks[key]


def forget() -> None:
    """Drop the in-memory marks (operator start: the Jobs' own marks are what counts)."""
    with _guard:
        _done.clear()
