"""Backup verification: a verification Job once per recorded backup (or a CronJob on verify.schedule), and
finished verification Jobs read back into the policy's status, Events and notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from pgbackup.api import BackupPolicySpec
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME
from pgbackup.builders.names import LABEL_COMPONENT, LABEL_POLICY, verify_cronjob_name
from pgbackup.builders.results import ANNOTATION_RECORDED, read_result
from pgbackup.builders.verification import VerificationOutcome, describe, read_verification, record_verification
from pgbackup.builders.verify_job import (
    COMPONENT_VERIFY,
    build_verify_cronjob,
    build_verify_job,
    wants_verify_after_backup,
    wants_verify_cronjob,
)
from pgbackup.handlers import config, kube, notify

# On a recorded backup Job: the verification Job made for it, or why there is none. Set once, so that
# restarts (which replay every Job) and later spec changes never verify an old backup a second time.
ANNOTATION_VERIFICATION_JOB = "pgbackup.dev/verification-job"


def _spec(policy: dict[str, Any]) -> BackupPolicySpec | None:
    try:
        return BackupPolicySpec.model_validate(policy.get("spec") or {})
    except ValidationError:
        return None  # reconcile_policy reports it in Ready


def reconcile_verify_cronjob(name: str, namespace: str, uid: str, spec: BackupPolicySpec,
                             logger: kopf.Logger) -> None:
    """Called by reconcile_policy once the spec is valid and its Secrets exist. verify.enabled with a
    schedule: a '<policy>-verify' CronJob; otherwise none (deleted when left over: the garbage collector
    removes owned objects only when their owner goes)."""
    if not wants_verify_cronjob(spec):
        if kube.delete_owned_cronjob(namespace, verify_cronjob_name(name), name):
            logger.info(f"verification CronJob {namespace}/{verify_cronjob_name(name)} removed "
                        f"(verify.enabled={spec.verify.enabled}, verify.schedule={spec.verify.schedule!r})")
        return
    cronjob = build_verify_cronjob(name, namespace, uid, spec, config.current().job_settings())
    if kube.apply_cronjob(cronjob):
        logger.info(f"verification CronJob {namespace}/{cronjob['metadata']['name']} reconciled "
                    f"(schedule {spec.verify.schedule!r})")


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_POLICY: kopf.PRESENT, LABEL_COMPONENT: "backup"},
               annotations={ANNOTATION_RECORDED: "Completed", ANNOTATION_VERIFICATION_JOB: kopf.ABSENT})
def verify_recorded_backup(body: kopf.Body, type: str, name: str, namespace: str | None, logger: kopf.Logger,
                           **_: Any) -> None:
    """A backup recorded as Completed gets exactly one verification Job when the policy verifies after each
    backup; the backup Job is then annotated with it (or with why there is none)."""
    if type == "DELETED" or namespace is None:
        return
    policy_name = (body.metadata.annotations or {}).get(ANNOTATION_POLICY_NAME)
    if not policy_name:
        return
    policy = kube.get_policy(namespace, policy_name)
    spec = _spec(policy) if policy is not None else None
    if policy is None or spec is None:
        return
    if not wants_verify_after_backup(spec):
        why = "scheduled" if spec.verify.enabled else "disabled"
        kube.annotate_job(namespace, name, {ANNOTATION_VERIFICATION_JOB: why})
        return
    result = read_result(dict(body), kube.job_pods(namespace, name))
    backup_id = result.summary.backup_id if result is not None and result.summary is not None else None
    if not backup_id:
        kube.annotate_job(namespace, name, {ANNOTATION_VERIFICATION_JOB: "no-backup-id"})
        return
    job = build_verify_job(policy_name, namespace, policy["metadata"]["uid"], spec, config.current().job_settings(),
                           backup_id)
    job_name = job["metadata"]["name"]
    if kube.create_job_once(job):
        message = f"verification Job {job_name} created for backup {backup_id}"
        kopf.info(cast(kopf.Body, policy), reason="VerificationStarted", message=message)
        logger.info(message)
    kube.annotate_job(namespace, name, {ANNOTATION_VERIFICATION_JOB: job_name})


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_POLICY: kopf.PRESENT, LABEL_COMPONENT: COMPONENT_VERIFY},
               annotations={ANNOTATION_RECORDED: kopf.ABSENT})
def record_verification_job(body: kopf.Body, type: str, name: str, namespace: str | None, logger: kopf.Logger,
                            **_: Any) -> None:
    """A finished verification Job: its outcome into the policy's status, an Event, a notification on failure;
    then the Job is marked recorded so that a restart does not record it again."""
    if type == "DELETED" or namespace is None:
        return
    policy_name = (body.metadata.annotations or {}).get(ANNOTATION_POLICY_NAME)
    if not policy_name:
        return
    outcome = read_verification(dict(body), kube.job_pods(namespace, name))
    if outcome is None:
        return
    policy = _record_in_status(namespace, policy_name, outcome)
    if policy is not None:
        reason, message = describe(outcome)
        post = kopf.info if outcome.phase == "Passed" else kopf.warn
        post(cast(kopf.Body, policy), reason=reason, message=message)
        logger.info(f"{reason}: {message}")
        if outcome.phase == "Failed":
            notify.notify(policy, "VerificationFailed", reason=outcome.reason, message=message,
                          backup_id=outcome.backup_id)
    kube.annotate_job(namespace, name, {ANNOTATION_RECORDED: outcome.phase})


def _record_in_status(namespace: str, policy_name: str, outcome: VerificationOutcome) -> dict[str, Any] | None:
    def changes(policy: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return record_verification(status, outcome, policy.get("metadata", {}).get("generation"), now)

    return kube.update_policy_status(namespace, policy_name, changes)
