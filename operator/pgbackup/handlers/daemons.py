"""What the per-policy daemons (objectives, WAL status) share: a pause that ends early on stop or shutdown.

kopf may start a policy's daemon once more while it shuts down, after it stopped the others; that one is never
told to stop and would hold the exit up for its cancellation timeout. The shutdown flag lets it end at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, cast

import kopf

_exiting: asyncio.Event | None = None


@kopf.on.startup()
async def arm_daemons(**_: Any) -> None:
    global _exiting
    _exiting = asyncio.Event()


@kopf.on.cleanup()
async def disarm_daemons(**_: Any) -> None:
    if _exiting is not None:
        _exiting.set()


async def pause(stopped: kopf.DaemonStopped, seconds: float) -> None:
    """Sleep `seconds`, or less when the daemon is stopped or the operator shuts down."""
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(cast(Awaitable[Any], stopped.wait(seconds)))]
    if _exiting is not None:
        waits.append(asyncio.ensure_future(_exiting.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the daemon is cancelled: leave no waiting task behind
        for waiting in waits:
            waiting.cancel()


def exiting_now() -> bool:
    return _exiting is not None and _exiting.is_set()
