"""BackupPolicy handlers: validate the spec, check its Secrets, own a CronJob, run on-demand backups."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from pgbackup.api import BackupPolicySpec
from pgbackup.api.base import GROUP
from pgbackup.builders.conditions import READY, Check, set_condition, summarise_ready
from pgbackup.builders.cronjob import ANNOTATION_BACKUP_NOW, build_backup_now_job, build_cronjob
from pgbackup.builders.secrets import missing_secret_checks, referenced_secret_keys
from pgbackup.builders.storage_overlap import StorageUse, overlap_check, storage_uses
from pgbackup.builders.validation import describe_validation_error
from pgbackup.handlers import config, kube, verification, wal
from pgbackup.handlers.common import plain


@kopf.index(GROUP, kube.POLICIES)
def storage_locations(name: str, namespace: str | None, meta: kopf.Meta, spec: kopf.Spec,
                      **_: Any) -> dict[str, StorageUse]:
    """Index: storage location -> the policies writing there (for StorageOverlap)."""
    try:
        parsed = BackupPolicySpec.model_validate(plain(spec))
    except ValidationError:
        return {}
    return {use.location: use for use in storage_uses(namespace or "", name, str(meta.get("creationTimestamp") or ""),
                                                      parsed)}


# The index argument is beyond kopf's handler protocol (see handlers/daemons.py, start_background).
@kopf.on.resume(GROUP, kube.POLICIES)
@kopf.on.create(GROUP, kube.POLICIES)
@kopf.on.update(GROUP, kube.POLICIES)  # type: ignore[arg-type]
def reconcile_policy(
    body: kopf.Body, name: str, namespace: str | None, uid: str, meta: kopf.Meta, status: kopf.Status,
    logger: kopf.Logger, storage_locations: kopf.Index[str, StorageUse], **_: Any,
) -> None:
    """Spec valid? Secrets there? Then the CronJob matches the spec, and a requested backup-now ran once."""
    assert namespace is not None  # BackupPolicy is namespaced (CRD scope)
    generation = meta.get("generation")
    try:
        spec = BackupPolicySpec.model_validate(plain(body.get("spec") or {}))
    except ValidationError as error:
        message = f"BackupPolicy {namespace}/{name} is invalid, no backups are scheduled: " \
                  f"{describe_validation_error(error)}. Fix the spec and apply it again."
        _write_status(namespace, name, generation, Check(False, "InvalidSpec", message))
        raise kopf.PermanentError(message) from None

    missing = kube.missing_secret_keys(namespace, referenced_secret_keys(spec))
    if missing:
        checks = missing_secret_checks(namespace, missing)
        _write_status(namespace, name, generation, *checks)
        raise kopf.TemporaryError("; ".join(c.message for c in checks), delay=config.current().secret_retry_seconds)

    mine = storage_uses(namespace, name, str(meta.get("creationTimestamp") or ""), spec)
    overlap = overlap_check(mine, [use for own in mine for use in storage_locations.get(own.location, [])])
    if not overlap.ok:  # retried: fixing either policy (or deleting the other) clears it by itself
        _write_status(namespace, name, generation, overlap)
        raise kopf.TemporaryError(overlap.message, delay=config.current().secret_retry_seconds)

    cronjob = build_cronjob(name, namespace, uid, spec, config.current().job_settings())
    if kube.apply_cronjob(cronjob):
        logger.info(f"CronJob {namespace}/{cronjob['metadata']['name']} reconciled (schedule {spec.schedule!r}, "
                    f"suspend={spec.suspend}).")
    verification.reconcile_verify_cronjob(name, namespace, uid, spec, logger)
    wal.reconcile_wal(name, namespace, uid, spec, logger)

    backup_now = (meta.get("annotations") or {}).get(ANNOTATION_BACKUP_NOW)
    if backup_now and backup_now != status.get("backupNowHandled"):
        job = build_backup_now_job(cronjob, backup_now)
        if kube.create_job_once(job):
            kopf.info(body, reason="BackupRequested", message=f"on-demand backup Job {job['metadata']['name']} "
                                                              f"created for {ANNOTATION_BACKUP_NOW}={backup_now}")

    _write_status(namespace, name, generation, cron_job_name=cronjob["metadata"]["name"],
                  backup_now_handled=backup_now)


def _write_status(namespace: str, name: str, generation: int | None, *failed: Check,
                  cron_job_name: str | None = None, backup_now_handled: str | None = None) -> None:
    """Set Ready (and friends) through the status subresource, writing only fields whose value changes.
    Read fresh rather than from the event: the Job handler writes status.conditions too."""
    ready, reason, message = summarise_ready(list(failed), "Reconciled", "the CronJob matches the policy")

    def changes(_policy: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        wanted: dict[str, Any] = {
            "conditions": set_condition(list(status.get("conditions") or []), READY, ready, reason, message,
                                        generation, now),
            "observedGeneration": generation,
            "cronJobName": cron_job_name,
            "backupNowHandled": backup_now_handled,
        }
        return {key: value for key, value in wanted.items() if value is not None and status.get(key) != value}

    kube.update_policy_status(namespace, name, changes)
