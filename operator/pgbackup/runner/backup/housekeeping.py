"""Housekeeping after a backup (and by `pgbackup retention`): retention of backups followed by the WAL archive's,
and removing what failed or killed runs left. Copies to other storages (copies) run before it. None of this
fails a backup that is already recorded: failures are logged and retried after the next backup."""

from __future__ import annotations

from datetime import datetime, timedelta

from pgbackup.api.policy import Retention
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.retention import RetentionDecision, prune_backups
from pgbackup.runner.common.config import PolicyConfig
from pgbackup.runner.common.errors import StorageUnreachable
from pgbackup.runner.common.log import log, log_error
from pgbackup.runner.common.timestamps import utc_now
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.wal.retention import apply_wal_retention_after


def apply_retention(catalog: Catalog, rules: Retention, now: datetime, *, dry_run: bool = False) -> list[RetentionDecision]:
    """Delete the backups no rule keeps (unless dry_run), then the WAL that no retained base backup needs."""
    pruned = prune_backups(catalog, rules, now, dry_run=dry_run)
    apply_wal_retention_after(catalog, dry_run=dry_run, backups=pruned.remaining, stored=pruned.stored)
    return pruned.decisions


def run_retention_after_backup(policy: PolicyConfig, storage: Storage) -> list[str] | None:
    """Apply retention; returns the ids of the policy's backups kept (newest first), None when it failed. Failures
    are logged, not fatal: the backup itself is good and recorded."""
    try:
        decisions = apply_retention(Catalog(storage, policy), policy.spec.retention, utc_now(), dry_run=False)
    except Exception as exc:  # noqa: BLE001
        log_error("retention.failed", error=exc,
                  hint="the backup succeeded; old backups were not pruned, run `pgbackup retention` to retry")
        return None
    kept = [d.id for d in decisions if d.keep]
    log("retention.done", kept=kept, deleted=[d.id for d in decisions if not d.keep])
    return kept


UNFINISHED_GRACE_MARGIN = timedelta(hours=1)


def unfinished_grace(policy: PolicyConfig) -> timedelta:
    """How old an unfinished backup must be before it is removed: longer than a backup Job may run
    (activeDeadlineSeconds) plus a margin, so the objects of a backup still running elsewhere are never touched."""
    return timedelta(seconds=policy.spec.job_template.active_deadline_seconds) + UNFINISHED_GRACE_MARGIN


def clean_leftovers(policy: PolicyConfig, storage: Storage, now: datetime | None = None, *,
                    before_backup: bool = False) -> list[str]:
    """Remove the objects of failed or killed backups (no manifest) whose run is provably over (its claim ended or
    its lease ran out; without a claim, older than the grace period); not fatal. Runs before and after a backup."""
    grace = unfinished_grace(policy)
    try:
        removed = Catalog(storage, policy).clean_unfinished(grace, now or utc_now())
    except Exception as exc:  # noqa: BLE001 - the backup itself is not at stake
        if before_backup and isinstance(exc, StorageUnreachable):
            raise  # the backup cannot succeed either: fail now, with the network exit code
        log_error("unfinished.clean_failed", error=exc,
                  hint=("the backup goes ahead; leftovers of dead runs are removed by a later backup" if before_backup
                        else "the backup succeeded; leftovers of dead runs are removed by a later backup"))
        return []
    log("unfinished.cleaned", removed=removed, grace_seconds=int(grace.total_seconds()))
    return removed
