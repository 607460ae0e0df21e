"""Level-triggered recording of finished Jobs.

kopf's `@kopf.on.event` handlers (jobs.py, verification.py, restore.py) record a Job the moment it finishes, but
kopf never retries them: one failed API call, or the operator being down, and a result would be lost. So an
operator-wide loop reconciles what exists every PGBACKUP_RECORDING_INTERVAL_SECONDS: the operator's finished Jobs
that carry no recorded mark yet are recorded through the same code. The mark (`pgbackup.dev/recorded`, an
annotation and a label, so that the loop lists only unrecorded Jobs server-side) is written last, and
handlers/once.py keeps the event handlers and the loop from recording one Job twice.

A Job is picked up by the loop only when it was already finished and unrecorded one pass earlier: the event
handler had a whole interval to record it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

import kopf

from pgbackup.builders.hooks import COMPONENT as HOOK_COMPONENT
from pgbackup.builders.names import LABEL_COMPONENT, OWNED_SELECTOR
from pgbackup.builders.restore_job import COMPONENT as RESTORE_COMPONENT
from pgbackup.builders.results import ANNOTATION_RECORDED, job_outcome
from pgbackup.builders.verify_job import COMPONENT_VERIFY
from pgbackup.handlers import config, jobs, kube, restore, verification
from pgbackup.handlers.once import forget, run_once

logger = logging.getLogger("pgbackup.recording")

UNRECORDED = f"{OWNED_SELECTOR},!{ANNOTATION_RECORDED}"
"""Finished or running Jobs without the recorded mark."""
UNVERIFIED = (f"{OWNED_SELECTOR},{LABEL_COMPONENT}=backup,{ANNOTATION_RECORDED}=Completed,"
              f"!{verification.LABEL_VERIFICATION_JOB}")
"""Backup Jobs recorded as Completed whose verification was not decided yet."""

Key = tuple[str, str]  # (Job uid, what is pending: "recorded" / "verification")


def _restore_recorder(handler: Callable[..., None]) -> Callable[[dict[str, Any], kopf.Logger], bool]:
    def record(job: dict[str, Any], log: kopf.Logger) -> bool:
        meta = job["metadata"]
        return run_once(f"{meta.get('uid') or meta['namespace'] + '/' + meta['name']}/recorded", lambda: (
            handler(body=cast(kopf.Body, job), type=None, name=meta["name"], namespace=meta["namespace"],
                    logger=log) is None))
    return record


RECORDERS: dict[str, Callable[[dict[str, Any], kopf.Logger], bool]] = {
    "backup": jobs.record_backup_job,
    COMPONENT_VERIFY: verification.record_verify_job,
    RESTORE_COMPONENT: _restore_recorder(restore.record_restore_job),
    HOOK_COMPONENT: _restore_recorder(restore.record_restore_hook),
}
"""Recorder of each Job component (app.kubernetes.io/component)."""


class Reconciler:
    """One pass over the operator's unrecorded Jobs; remembers what was pending at the previous pass."""

    def __init__(self, namespaces: tuple[str, ...] = ()) -> None:
        self.namespaces = namespaces
        self.pending: set[Key] = set()

    def run_once(self) -> int:
        """Record what was pending already at the previous pass; the number of Jobs recorded now."""
        seen: set[Key] = set()
        recorded = 0
        for job in kube.list_jobs_selected(UNRECORDED, self.namespaces):
            recorded += self._consider(job, "recorded", seen)
        for job in kube.list_jobs_selected(UNVERIFIED, self.namespaces):
            recorded += self._consider(job, "verification", seen)
        self.pending = seen
        return recorded

    def _consider(self, job: dict[str, Any], what: str, seen: set[Key]) -> int:
        meta = job.get("metadata") or {}
        annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
        mark = ANNOTATION_RECORDED if what == "recorded" else verification.ANNOTATION_VERIFICATION_JOB
        if mark in annotations:  # marked by an operator version that set no label: add it, skip the Job
            if mark not in labels:
                kube.annotate_job(meta["namespace"], meta["name"], {}, labels={mark: annotations[mark]})
            return 0
        if what == "recorded" and job_outcome(job) is None:
            return 0  # still running (a Job deleted while running is the event handlers' case)
        if what == "verification" and annotations.get(ANNOTATION_RECORDED) != "Completed":
            return 0
        key = (str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"), what)
        seen.add(key)
        if key not in self.pending:
            return 0  # give the event handler its chance first
        recorder = verification.verify_backup_job if what == "verification" else \
            RECORDERS.get(labels.get(LABEL_COMPONENT, ""))
        if recorder is None:
            return 0
        try:
            done = recorder(job, logger)
        except Exception as error:  # noqa: BLE001 (one Job's failure must not stop the others; retried next pass)
            logger.warning(f"Job {meta.get('namespace')}/{meta.get('name')} could not be recorded yet, retrying in "
                           f"{config.current().recording_interval_seconds:.0f}s: {error}")
            return 0
        if done:
            logger.info(f"Job {meta.get('namespace')}/{meta.get('name')} recorded by the periodic reconcile "
                        f"({what}); its event was missed or its recording failed")
        return int(done)


_task: asyncio.Task[None] | None = None


async def _reconcile_forever(interval: float, namespaces: tuple[str, ...]) -> None:
    reconciler = Reconciler(namespaces)
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(reconciler.run_once)
        except Exception as error:  # noqa: BLE001 (the API may be unreachable for a while: try again next pass)
            logger.warning(f"periodic recording of finished Jobs failed, retrying in {interval:.0f}s: {error}")


@kopf.on.startup()
async def start_recording(**_: Any) -> None:
    """Start the periodic reconcile of finished Jobs (one task for the whole operator)."""
    global _task
    forget()  # the Jobs' own marks are what counts after a restart
    current = config.current()
    _task = asyncio.get_running_loop().create_task(
        _reconcile_forever(current.recording_interval_seconds, current.namespaces), name="pgbackup-recording")


@kopf.on.cleanup()
async def stop_recording(**_: Any) -> None:
    global _task
    if _task is not None:
        _task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _task
        _task = None
