"""Level-triggered recording of finished Jobs.

kopf's `@kopf.on.event` handlers (jobs.py, verification.py, restore.py) record a Job the moment it finishes, but
kopf never retries them: one failed API call, or the operator being down, and a result would be lost. So an
operator-wide loop reconciles what exists every PGBACKUP_RECORDING_INTERVAL_SECONDS: the operator's finished Jobs
that carry no recorded mark yet are recorded through the same code. The mark (`pgbackup.dev/recorded`, an
annotation and a label, so that the loop lists only unrecorded Jobs server-side) is written last, and
handlers/once.py keeps the event handlers and the loop from recording one Job twice.

A Job is picked up by the loop only when it was already finished and unrecorded one pass earlier: the event
handler had a whole interval to record it.

A Job deleted (history limit, TTL) while the operator was down leaves nothing to read; then the backup CronJob's
last run shows that status is behind, and the loop starts a catalog-sync Job (builders/catalog_sync.py) whose
summary of what storage holds is recorded like a backup result. That check runs at the first pass after the
operator starts and then every CATALOG_CHECK_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from collections.abc import Callable
from typing import Any, cast

import kopf

from pydantic import ValidationError

from pgbackup.api import BackupPolicySpec
from pgbackup.api.summary import JobSummary
from pgbackup.builders.catalog_sync import COMPONENT_CATALOG, build_catalog_sync_job, missed_run, record_catalog
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME
from pgbackup.builders.hooks import COMPONENT as HOOK_COMPONENT
from pgbackup.builders.names import LABEL_COMPONENT, OWNED_SELECTOR, cronjob_name
from pgbackup.builders.restore_job import COMPONENT as RESTORE_COMPONENT
from pgbackup.builders.results import ANNOTATION_RECORDED, failure_without_summary, job_outcome, termination_message
from pgbackup.builders.verify_job import COMPONENT_VERIFY
from pgbackup.handlers import config, jobs, kube, restore, verification
from pgbackup.handlers.once import forget, run_once
from pgbackup.handlers.posting import post

logger = logging.getLogger("pgbackup.recording")

UNRECORDED = f"{OWNED_SELECTOR},!{ANNOTATION_RECORDED}"
"""Finished or running Jobs without the recorded mark."""
UNVERIFIED = (f"{OWNED_SELECTOR},{LABEL_COMPONENT}=backup,{ANNOTATION_RECORDED}=Completed,"
              f"!{verification.LABEL_VERIFICATION_JOB}")
"""Backup Jobs recorded as Completed whose verification was not decided yet."""

Key = tuple[str, str]  # (Job uid, what is pending: "recorded" / "verification")
CATALOG_CHECK_SECONDS = 3600.0
"""How often the backup CronJobs' last runs are compared with status (and at every operator start)."""
BACKUP_CRONJOBS = f"{OWNED_SELECTOR},{LABEL_COMPONENT}=backup"


def record_catalog_job(job: dict[str, Any], log: kopf.Logger) -> bool:
    """Record a finished catalog-sync Job once: status follows what storage holds (builders/catalog_sync.py)."""
    meta = job.get("metadata") or {}
    if job_outcome(job) is None or ANNOTATION_RECORDED in (meta.get("annotations") or {}):
        return False
    return run_once(f"{meta.get('uid') or meta['namespace'] + '/' + meta['name']}/recorded",
                    lambda: _record_catalog_job(job, log))


def _record_catalog_job(job: dict[str, Any], log: kopf.Logger) -> bool:
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    policy_name = (job["metadata"].get("annotations") or {}).get(ANNOTATION_POLICY_NAME)
    if not policy_name:
        return False
    pods = kube.job_pods(namespace, name)
    text = termination_message(pods)
    summary = JobSummary.from_termination_message(text) if text else None
    if summary is None or summary.kind != "catalog" or summary.phase != "Completed" or job_outcome(job) == "Failed":
        reason, detail = (summary.reason or "CatalogSyncFailed", summary.error or "") if summary is not None \
            else failure_without_summary(job, pods)
        policy = kube.get_policy(namespace, policy_name)
        if policy is not None:
            post(policy, "CatalogSyncFailed", f"catalog-sync Job {name} could not read storage ({reason}): {detail}; "
                 f"status may miss a backup until the next backup Job is recorded", warning=True)
        kube.annotate_job(namespace, name, {ANNOTATION_RECORDED: "Failed"})
        return True
    messages: list[str] = []

    def changes(policy: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch, message = record_catalog(status, summary, name, policy.get("metadata", {}).get("generation"), now)
        messages[:] = [message] if message else []
        return patch

    policy = kube.update_policy_status(namespace, policy_name, changes)
    if policy is not None and messages:
        post(policy, "BackupRecordedFromStorage", messages[0])
        log.info(f"BackupRecordedFromStorage: {messages[0]}")
    kube.annotate_job(namespace, name, {ANNOTATION_RECORDED: "Completed"})
    return True


def _restore_recorder(handler: Callable[..., object]) -> Callable[[dict[str, Any], kopf.Logger], bool]:
    def record(job: dict[str, Any], log: kopf.Logger) -> bool:
        meta = job["metadata"]

        def call() -> bool:  # the handler marks the Job itself; a Job it cannot record is not retried here
            handler(body=cast(kopf.Body, job), type="MODIFIED", name=meta["name"], namespace=meta["namespace"],
                    logger=log)
            return True

        return run_once(f"{meta.get('uid') or meta['namespace'] + '/' + meta['name']}/recorded", call)
    return record


RECORDERS: dict[str, Callable[[dict[str, Any], kopf.Logger], bool]] = {
    "backup": jobs.record_backup_job,
    COMPONENT_VERIFY: verification.record_verify_job,
    RESTORE_COMPONENT: _restore_recorder(restore.record_restore_job),
    HOOK_COMPONENT: _restore_recorder(restore.record_restore_hook),
    COMPONENT_CATALOG: record_catalog_job,
}
"""Recorder of each Job component (app.kubernetes.io/component)."""


def _run_times(cronjob: dict[str, Any]) -> dict[str, Any]:
    """The part of a CronJob that catalog_sync.missed_run reads."""
    status = cronjob.get("status") or {}
    return {"status": {key: status[key] for key in ("lastScheduleTime", "lastSuccessfulTime") if key in status}}


class Reconciler:
    """One pass over the operator's unrecorded Jobs; remembers what was pending at the previous pass."""

    def __init__(self, namespaces: tuple[str, ...] = ()) -> None:
        self.namespaces = namespaces
        self.pending: set[Key] = set()
        self.catalog_checked: float | None = None

    def run_once(self) -> int:
        """Record what was pending already at the previous pass; the number of Jobs recorded now."""
        seen: set[Key] = set()
        recorded = 0
        unrecorded_backups: set[tuple[str, str]] = set()  # (namespace, policy) with a backup Job to record
        for job in kube.list_jobs_selected(UNRECORDED, self.namespaces):
            meta = job.get("metadata") or {}
            if (meta.get("labels") or {}).get(LABEL_COMPONENT) == "backup":
                unrecorded_backups.add((meta.get("namespace") or "",
                                        (meta.get("annotations") or {}).get(ANNOTATION_POLICY_NAME) or ""))
            recorded += self._consider(job, "recorded", seen)
        for job in kube.list_jobs_selected(UNVERIFIED, self.namespaces):
            recorded += self._consider(job, "verification", seen)
        self.pending = seen
        if self.catalog_checked is None or time.monotonic() - self.catalog_checked >= CATALOG_CHECK_SECONDS:
            self.sync_missed_runs(unrecorded_backups)
            self.catalog_checked = time.monotonic()
        return recorded

    def sync_missed_runs(self, unrecorded_backups: set[tuple[str, str]]) -> int:
        """A catalog-sync Job for each policy whose CronJob's last successful run is not in status and has no
        Job left to record; the number of Jobs created."""
        # Only what missed_run reads is kept of each CronJob, and the policies are looked at one by one as they are
        # read: with every CronJob and every policy in memory in full at once, this hourly pass set the RSS of an
        # operator with 1,000 policies.
        cronjobs = {(c["metadata"].get("namespace"), c["metadata"].get("name")): _run_times(c)
                    for c in kube.list_cronjobs_selected(BACKUP_CRONJOBS, self.namespaces)}
        created = 0
        for policy in kube.list_policies(self.namespaces):
            meta = policy.get("metadata") or {}
            namespace, name = meta.get("namespace") or "", meta.get("name") or ""
            cronjob = cronjobs.get((namespace, cronjob_name(name)))
            if cronjob is None or (namespace, name) in unrecorded_backups:
                continue
            scheduled = missed_run(policy.get("status") or {}, cronjob)
            if scheduled is None:
                continue
            try:
                spec = BackupPolicySpec.model_validate(policy.get("spec") or {})
            except ValidationError:
                continue
            job = build_catalog_sync_job(name, namespace, meta["uid"], spec, config.current().job_settings(),
                                         scheduled)
            if kube.create_job_once(job):
                created += 1
                message = (f"the backup run scheduled at {scheduled} succeeded but its Job was gone before it was "
                           f"recorded; catalog-sync Job {job['metadata']['name']} reads what storage holds")
                post(policy, "CatalogSyncStarted", message)
                logger.info(f"BackupPolicy {namespace}/{name}: {message}")
        return created

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
        if key not in self.pending and labels.get(LABEL_COMPONENT) != COMPONENT_CATALOG:
            return 0  # give the event handler its chance first (catalog-sync Jobs have none)
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
