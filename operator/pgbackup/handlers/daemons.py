"""One operator-wide loop for the work that time rather than events drives (ObjectivesMet, whose RPO grows while
nothing happens; the WAL streamers' state), instead of a kopf daemon or timer per BackupPolicy.

- The policies come from an index kopf keeps up to date from its watch stream (`policy_bodies`): no GET per policy
  and tick. Each walk visits the bodies as kopf last saw them; a visit writes status only when something changed,
  with the resourceVersion it computed from (a concurrent writer makes the server answer 409; the next walk, from
  the fresher body, tries again).
- Visits run on a small pool of their own (WORKERS threads), which also bounds the concurrent HTTP polls of WAL
  streamers, so that neither kopf's handler workers nor the default executor wait for them.
- kopf adds its finalizer to an object only for daemons, timers and non-optional deletion handlers. The operator has
  none for BackupPolicies, so they carry no finalizer (and kopf removes the one older versions added): deleting a
  policy or its namespace never waits for the operator, even when it is not running.
- A policy that is new, or whose spec changed, is visited at once rather than at the next walk.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from pgbackup.api.base import GROUP
from pgbackup.handlers import kube, remembered

WORKERS = 8
"""Visits (status writes, WAL streamer polls) in flight at once."""

PolicyKey = tuple[str, str]  # (namespace, name)
PolicyBody = dict[str, Any]
logger = logging.getLogger("pgbackup.background")


@dataclass(frozen=True)
class Walk:
    """Periodic work over every policy: `visit(policy, last_write)` runs on the pool for each policy `wants`
    accepts and returns True when it wrote status; `last_write` is when it last did so for that policy
    (time.monotonic(), None when never since the operator started)."""

    what: str
    interval: Callable[[], float]
    wants: Callable[[Mapping[str, Any]], bool]
    visit: Callable[[Mapping[str, Any], float | None], bool]
    last_writes: dict[PolicyKey, float] = field(default_factory=dict, compare=False)


_walks: list[Walk] = []


def every(walk: Walk) -> Walk:
    """Register a walk (at import time; the loop runs them all)."""
    _walks.append(walk)
    return walk


@dataclass
class _Loop:
    index: kopf.Index[PolicyKey, PolicyBody]
    pool: ThreadPoolExecutor
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    fresh: dict[PolicyKey, PolicyBody] = field(default_factory=dict)
    """New or changed policies to visit at once, with their bodies: kopf puts a body in the index only after the
    index handler returned, so the loop, woken by the handler, may not find it there yet."""
    generations: dict[PolicyKey, Any] = field(default_factory=dict)
    written_from: dict[PolicyKey, PolicyBody] = field(default_factory=dict)
    """The body a visit wrote status from, until the watch delivers a newer one (which replaces it in the index)."""
    kopf_context: contextvars.Context | None = None
    """kopf.info/warn post through a queue kopf sets up in the context of each object's processing; the loop runs
    outside of those, so visits run in a copy of the context an index call ran in."""
    task: asyncio.Task[None] | None = None


_loop: _Loop | None = None


@kopf.index(GROUP, kube.POLICIES)
async def policy_bodies(name: str, namespace: str | None, body: kopf.Body, meta: kopf.Meta,
                        **_: Any) -> dict[PolicyKey, PolicyBody]:
    """Index: (namespace, name) -> the policy as the watch stream last delivered it (async: no thread hop)."""
    key, kept = (namespace or "", name), remembered.policies.keep(body)
    running = _loop
    if running is not None and running.kopf_context is None:
        running.kopf_context = contextvars.copy_context()
    if running is not None and running.generations.get(key) != meta.get("generation"):
        running.generations[key] = meta.get("generation")
        running.fresh[key] = kept
        running.wake.set()
    return {key: kept}


# kopf passes an index to a handler as the keyword argument of its name, but its handler protocols (ActivityFn,
# ChangingFn) cannot express such extra arguments yet (kopf's callbacks.py: "TODO ... ParamSpec to support index
# type checking"), hence the narrow ignore on the handlers that take an index.
@kopf.on.startup()  # type: ignore[arg-type]
async def start_background(policy_bodies: kopf.Index[PolicyKey, PolicyBody], **_: Any) -> None:
    global _loop
    await _stop()
    _loop = _Loop(index=policy_bodies, pool=ThreadPoolExecutor(WORKERS, thread_name_prefix="pgbackup-background"))
    _loop.task = asyncio.create_task(_run(_loop), name="pgbackup background walks")


@kopf.on.cleanup()
async def stop_background(**_: Any) -> None:
    await _stop()


async def _stop() -> None:
    """Cancel the background loop, if one runs, and let go of its threads."""
    global _loop
    running, _loop = _loop, None
    if running is None:
        return
    if running.task is not None:
        running.task.cancel()
        await asyncio.gather(running.task, return_exceptions=True)
    running.pool.shutdown(wait=False, cancel_futures=True)


async def _run(running: _Loop) -> None:
    clock = asyncio.get_running_loop()
    due = {id(walk): clock.time() for walk in _walks}
    while True:
        now = clock.time()
        ready = [walk for walk in _walks if due[id(walk)] <= now]
        if ready:
            bodies = _snapshot(running)
            running.fresh.clear()  # every policy is visited now
            _forget_gone(running, bodies)
            await _round(running, ready, bodies)
            for walk in ready:
                due[id(walk)] = clock.time() + walk.interval()
            continue
        if running.fresh:
            fresh, running.fresh = running.fresh, {}
            await _round(running, _walks, fresh)
            continue
        running.wake.clear()
        try:
            await asyncio.wait_for(running.wake.wait(), timeout=max(0.0, min(due.values()) - now))
        except TimeoutError:
            pass


def _snapshot(running: _Loop) -> dict[PolicyKey, PolicyBody]:
    return {key: body for key in list(running.index) for body in running.index.get(key, [])}


def _forget_gone(running: _Loop, bodies: dict[PolicyKey, PolicyBody]) -> None:
    for memory in [running.written_from, running.generations, *(walk.last_writes for walk in _walks)]:
        for key in [key for key in memory if key not in bodies]:
            memory.pop(key, None)


async def _round(running: _Loop, walks: list[Walk], bodies: dict[PolicyKey, PolicyBody]) -> None:
    """Visit every policy some walk wants once with these walks, a policy's walks one after the other (they write
    the same status.conditions). The policies are dealt into one batch per pool thread rather than one pool job
    each: at 1,000 policies a job per policy and round was most of the operator's CPU at idle."""
    clock = asyncio.get_running_loop()
    context = running.kopf_context or contextvars.copy_context()
    wanted = [(key, body) for key, body in bodies.items()
              if running.written_from.get(key) is not body and any(walk.wants(body) for walk in walks)]
    batches = [wanted[start::WORKERS] for start in range(min(WORKERS, len(wanted)))]
    await asyncio.gather(*(clock.run_in_executor(running.pool, context.copy().run, _visit_batch, running, walks, batch)
                           for batch in batches))


def _visit_batch(running: _Loop, walks: list[Walk], batch: list[tuple[PolicyKey, PolicyBody]]) -> None:
    for key, body in batch:
        _visit(running, walks, key, body)


def _visit(running: _Loop, walks: list[Walk], key: PolicyKey, body: PolicyBody) -> None:
    for walk in walks:
        if not walk.wants(body):
            continue
        try:
            wrote = walk.visit(body, walk.last_writes.get(key))
        except ApiException as error:
            if kube.is_status(error, 404):
                return
            logger.warning(f"{walk.what} of BackupPolicy {key[0]}/{key[1]} not updated: API answered "
                           f"{error.status} {error.reason}; retrying in {walk.interval():g}s")
            continue
        except Exception as error:  # noqa: BLE001 - the next walk tries again
            logger.warning(f"{walk.what} of BackupPolicy {key[0]}/{key[1]} not updated: {error}; "
                           f"retrying in {walk.interval():g}s")
            continue
        if wrote:
            # kopf's copy is older than what was just written: skip the policy until the watch delivers the write.
            running.written_from[key] = body
            walk.last_writes[key] = time.monotonic()
