"""Backup verification: a verification Job once per recorded backup (or a CronJob on verify.schedule), and
finished verification Jobs read back into the policy's status, Events and notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
from pgbackup.handlers.common import plain
from pgbackup.handlers.once import run_once
from pgbackup.handlers.posting import post

# On a recorded backup Job: the verification Job made for it, or why there is none. Set once, so that
# restarts (which replay every Job) and later spec changes never verify an old backup a second time.
ANNOTATION_VERIFICATION_JOB = "pgbackup.dev/verification-job"
LABEL_VERIFICATION_JOB = ANNOTATION_VERIFICATION_JOB  # also a label: pending ones are listed server-side


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
def verify_recorded_backup(body: kopf.Body, type: str, logger: kopf.Logger, **_: Any) -> None:
    """A backup recorded as Completed gets exactly one verification Job when the policy verifies after each
    backup (what this misses, handlers/recording.py catches up with)."""
    if type != "DELETED":
        verify_backup_job(plain(dict(body)), logger)


def verify_backup_job(job: dict[str, Any], logger: kopf.Logger) -> bool:
    """Create the verification Job of a backup Job recorded as Completed (or note why there is none) and
    annotate the backup Job with it; True when this call did so. Safe to repeat: the Job name is per backup."""
    meta = job.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if (not meta.get("namespace") or annotations.get(ANNOTATION_RECORDED) != "Completed"
            or ANNOTATION_VERIFICATION_JOB in annotations):
        return False
    return run_once(f"{meta.get('uid') or meta['namespace'] + '/' + meta['name']}/verification",
                    lambda: _verify_backup_job(job, logger))


def _mark_verification(namespace: str, name: str, value: str) -> None:
    kube.annotate_job(namespace, name, {ANNOTATION_VERIFICATION_JOB: value}, labels={LABEL_VERIFICATION_JOB: value})


def _verify_backup_job(job: dict[str, Any], logger: kopf.Logger) -> bool:
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    policy_name = (job["metadata"].get("annotations") or {}).get(ANNOTATION_POLICY_NAME)
    if not policy_name:
        return False
    policy = kube.get_policy(namespace, policy_name)
    spec = _spec(policy) if policy is not None else None
    if policy is None or spec is None:
        return False
    if not wants_verify_after_backup(spec):
        _mark_verification(namespace, name, "scheduled" if spec.verify.enabled else "disabled")
        return True
    result = read_result(job, kube.job_pods(namespace, name))
    backup_id = result.summary.backup_id if result is not None and result.summary is not None else None
    if not backup_id:
        _mark_verification(namespace, name, "no-backup-id")
        return True
    verify_job = build_verify_job(policy_name, namespace, policy["metadata"]["uid"], spec,
                                  config.current().job_settings(), backup_id)
    job_name = verify_job["metadata"]["name"]
    if kube.create_job_once(verify_job):
        message = f"verification Job {job_name} created for backup {backup_id}"
        post(policy, "VerificationStarted", message)
        logger.info(message)
    _mark_verification(namespace, name, job_name)
    return True


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_POLICY: kopf.PRESENT, LABEL_COMPONENT: COMPONENT_VERIFY},
               annotations={ANNOTATION_RECORDED: kopf.ABSENT})
def record_verification_job(body: kopf.Body, type: str, logger: kopf.Logger, **_: Any) -> None:
    """A finished verification Job: its outcome into the policy's status, an Event, a notification on failure;
    then the Job is marked recorded so that a restart does not record it again."""
    if type != "DELETED":
        record_verify_job(plain(dict(body)), logger)


def record_verify_job(job: dict[str, Any], logger: kopf.Logger) -> bool:
    """Record a finished verification Job once; True when this call recorded it."""
    meta = job.get("metadata") or {}
    if not meta.get("namespace") or ANNOTATION_RECORDED in (meta.get("annotations") or {}):
        return False
    return run_once(f"{meta.get('uid') or meta['namespace'] + '/' + meta['name']}/recorded",
                    lambda: _record_verify_job(job, logger))


def _record_verify_job(job: dict[str, Any], logger: kopf.Logger) -> bool:
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    policy_name = (job["metadata"].get("annotations") or {}).get(ANNOTATION_POLICY_NAME)
    if not policy_name:
        return False
    outcome = read_verification(job, kube.job_pods(namespace, name))
    if outcome is None:
        return False
    policy = _record_in_status(namespace, policy_name, outcome)
    if policy is not None:
        reason, message = describe(outcome)
        post(policy, reason, message, warning=outcome.phase != "Passed")
        logger.info(f"{reason}: {message}")
        if outcome.phase != "Passed":  # NotPossible too: verification is off in effect until the image fits
            notify.notify(policy, "VerificationFailed", reason=outcome.reason, message=message,
                          backup_id=outcome.backup_id)
    kube.annotate_job(namespace, name, {ANNOTATION_RECORDED: outcome.phase})
    return True


def _record_in_status(namespace: str, policy_name: str, outcome: VerificationOutcome) -> dict[str, Any] | None:
    def changes(policy: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return record_verification(status, outcome, policy.get("metadata", {}).get("generation"), now)

    return kube.update_policy_status(namespace, policy_name, changes)
