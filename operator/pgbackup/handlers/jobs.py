"""Finished backup Jobs: read the runner's summary back into the policy's status and Events, once per Job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import kopf

from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME
from pgbackup.builders.names import LABEL_COMPONENT, LABEL_POLICY
from pgbackup.builders.results import ANNOTATION_RECORDED, BackupResult, event_for, job_outcome, read_result, record_result
from pgbackup.builders.size_anomaly import SIZE_ANOMALY, SizeReport, with_size_anomaly
from pgbackup.handlers import config, kube, notify


# Only backup Jobs: restore and verification Jobs of a policy carry other components.
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_POLICY: kopf.PRESENT, LABEL_COMPONENT: "backup"},
               annotations={ANNOTATION_RECORDED: kopf.ABSENT})
def record_finished_job(body: kopf.Body, type: str, name: str, namespace: str | None, logger: kopf.Logger,
                        **_: Any) -> None:
    """Record each finished Job of a policy in its status and as an Event, then mark the Job as recorded."""
    job = dict(body)
    if type == "DELETED" or namespace is None or job_outcome(job) is None:
        return
    policy_name = (body.metadata.annotations or {}).get(ANNOTATION_POLICY_NAME)
    if not policy_name:
        return
    result = read_result(job, kube.job_pods(namespace, name))
    if result is None:
        return

    anomalies: list[SizeReport] = []
    policy = _record_in_status(namespace, policy_name, result, anomalies)
    if policy is not None and anomalies:
        kopf.warn(cast(kopf.Body, policy), reason=SIZE_ANOMALY, message=anomalies[0].message)
        logger.warning(f"{SIZE_ANOMALY} ({anomalies[0].reason}): {anomalies[0].message}")
    if policy is not None:
        reason, message = event_for(result)
        post = kopf.info if result.phase == "Completed" else kopf.warn
        post(cast(kopf.Body, policy), reason=reason, message=message)  # kopf only reads its metadata
        logger.info(f"{reason}: {message}")
        # an Unknown outcome goes to BackupFailed subscribers: no backup can be shown to exist
        notify.notify(policy, "BackupSucceeded" if result.phase == "Completed" else "BackupFailed",
                      reason=result.reason, message=message,
                      backup_id=result.summary.backup_id if result.summary else None)
    kube.annotate_job(namespace, name, {ANNOTATION_RECORDED: result.phase})


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
