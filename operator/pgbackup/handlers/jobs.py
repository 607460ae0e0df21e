"""Finished backup Jobs: read the runner's summary back into the policy's status and Events, once per Job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME
from pgbackup.builders.names import LABEL_COMPONENT, LABEL_POLICY
from pgbackup.builders.results import ANNOTATION_RECORDED, BackupResult, event_for, job_outcome, read_result, record_result
from pgbackup.builders.size_anomaly import SIZE_ANOMALY, SizeReport, with_size_anomaly
from pgbackup.handlers import config, kube, notify
from pgbackup.handlers.common import plain
from pgbackup.handlers.once import run_once
from pgbackup.handlers.posting import post


# Only backup Jobs: restore and verification Jobs of a policy carry other components. on.event handlers are never
# retried: a Job this misses (an API error, the operator down) is recorded by handlers/recording.py.
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_POLICY: kopf.PRESENT, LABEL_COMPONENT: "backup"},
               annotations={ANNOTATION_RECORDED: kopf.ABSENT})
def record_finished_job(body: kopf.Body, type: str, logger: kopf.Logger, **_: Any) -> None:
    """Record each finished Job of a policy in its status and as an Event, then mark the Job as recorded."""
    if type != "DELETED":
        record_backup_job(plain(dict(body)), logger)


def record_backup_job(job: dict[str, Any], logger: kopf.Logger) -> bool:
    """Record a finished backup Job once (status, Event, notification, then the Job's recorded mark); True when
    it was recorded by this call. Safe to call again and concurrently: a recorded Job is not recorded twice."""
    meta = job.get("metadata") or {}
    if job_outcome(job) is None or not meta.get("namespace") or ANNOTATION_RECORDED in (meta.get("annotations") or {}):
        return False
    return run_once(f"{meta.get('uid') or meta['namespace'] + '/' + meta['name']}/recorded",
                    lambda: _record_backup_job(job, logger))


def _record_backup_job(job: dict[str, Any], logger: kopf.Logger) -> bool:
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    policy_name = (job["metadata"].get("annotations") or {}).get(ANNOTATION_POLICY_NAME)
    if not policy_name:
        return False
    result = read_result(job, kube.job_pods(namespace, name))
    if result is None:
        return False

    anomalies: list[SizeReport] = []
    policy = _record_in_status(namespace, policy_name, result, anomalies)
    if policy is not None and anomalies:
        post(policy, SIZE_ANOMALY, anomalies[0].message, warning=True)
        logger.warning(f"{SIZE_ANOMALY} ({anomalies[0].reason}): {anomalies[0].message}")
    if policy is not None:
        reason, message = event_for(result)
        post(policy, reason, message, warning=result.phase != "Completed")
        logger.info(f"{reason}: {message}")
        # an Unknown outcome goes to BackupFailed subscribers: no backup can be shown to exist
        notify.notify(policy, "BackupSucceeded" if result.phase == "Completed" else "BackupFailed",
                      reason=result.reason, message=message,
                      backup_id=result.summary.backup_id if result.summary else None)
    kube.annotate_job(namespace, name, {ANNOTATION_RECORDED: result.phase})
    return True


def _record_in_status(namespace: str, policy_name: str, result: BackupResult,
                      anomalies: list[SizeReport]) -> dict[str, Any] | None:
    """Record the result and, in the same write, SizeAnomaly; `anomalies` receives the report when it turned True."""
    def changes(policy: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        generation = policy.get("metadata", {}).get("generation")
        patch, anomaly = with_size_anomaly(status, record_result(status, result, generation, now), generation, now,
                                           config.current().size_anomaly_threshold)
        anomalies[:] = [anomaly] if anomaly is not None else []
        return patch

    return kube.update_policy_status(namespace, policy_name, changes)
