"""Giving the memory a reconcile burst freed back to the operating system.

A burst (every policy reconciled at start-up, or a mass re-apply) allocates tens of MiB of short-lived watch events,
bodies, patches and responses on several threads. Python frees them, but glibc's malloc returns a heap's free pages
only from its top and keeps the rest for reuse, so without help the operator's RSS stays near the burst's peak for
good. `malloc_trim(0)` releases the free pages of every arena. It runs every TRIM_SECONDS rather than at a guessed
"end of the burst": it takes milliseconds, and so any burst, whenever it happens, is given back within a minute.
Without glibc (no `malloc_trim`) there is nothing to do.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable
from typing import Any

import kopf

TRIM_SECONDS = 60.0
logger = logging.getLogger("pgbackup.memory")


def _malloc_trim() -> Callable[[int], int] | None:
    trim: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)
    return trim


_trim = _malloc_trim()
_task: asyncio.Task[None] | None = None


def trim() -> bool:
    """Release malloc's free pages to the OS now; False when this C library cannot."""
    if _trim is None:
        return False
    _trim(0)
    return True


async def _trim_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        trim()


@kopf.on.startup()
async def start_trimming(**_: Any) -> None:
    global _task
    await _stop()
    if _trim is None:
        logger.info("No malloc_trim in this C library: memory freed after a burst stays with the operator.")
        return
    _task = asyncio.create_task(_trim_every(TRIM_SECONDS), name="pgbackup malloc_trim")


@kopf.on.cleanup()
async def stop_trimming(**_: Any) -> None:
    await _stop()


async def _stop() -> None:
    global _task
    running, _task = _task, None
    if running is not None:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
