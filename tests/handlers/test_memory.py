"""The operator gives memory a reconcile burst freed back to the OS (handlers/memory.py)."""

from __future__ import annotations

import asyncio

import pytest

from pgbackup.handlers import memory


def test_malloc_trim_is_found_on_glibc() -> None:
    """The development machine and the image (python:*-slim, Debian) use glibc: the trim must not be silently off."""
    assert memory.trim() is True


async def test_the_trim_task_runs_with_the_operator_and_stops_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    trimmed = asyncio.Event()
    monkeypatch.setattr(memory, "TRIM_SECONDS", 0.01)
    monkeypatch.setattr(memory, "trim", lambda: trimmed.set() or True)
    await memory.start_trimming()
    try:
        await asyncio.wait_for(trimmed.wait(), 5)
    finally:
        await memory.stop_trimming()
    trimmed.clear()
    await asyncio.sleep(0.1)
    assert not trimmed.is_set()
