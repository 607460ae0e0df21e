"""Retention: which backups to keep, as a pure function of (backups, rules, now), plus deleting the others
(pgbackup.runner.backup.housekeeping prunes the WAL archive after it).

A backup is kept if ANY rule keeps it; every decision carries its reasons. GFS periods are UTC days,
ISO weeks and calendar months; each of the last N periods that HAVE backups keeps its newest one.
The newest successful and the newest verified backup are never deleted, whatever the rules say.

The rules (and those two protections) count only the policy's own full backups (purpose scheduled or
on-demand). Other purposes have fixed rules of their own, so they never take the place of a base backup:
- pre-restore safety backups are kept for SAFETY_KEEP_DAYS days, and the newest one always (the undo of the
  latest overwrite restore stays available however long ago it was);
- imported dumps are never deleted by retention (they were registered by hand; delete them by hand).

Chains of incremental physical backups stay whole: a backup that a kept incremental builds on (its parent, the
parent's parent, .. the full backup) is kept too, with the reason naming the incremental. So a chain's full
backup is deleted only when no backup of its chain is kept, and then with all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pgbackup.api.base import parse_duration
from pgbackup.api.policy import Retention
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import OWN_PURPOSES, Manifest, backup_id_sort_key
from pgbackup.runner.common.log import log
from pgbackup.runner.common.timestamps import as_utc


@dataclass(frozen=True)
class BackupRef:
    """What retention needs to know about a backup."""

    id: str
    completed_at: datetime
    verified: bool = False
    succeeded: bool = True
    purpose: str = "scheduled"
    """Manifest.purpose: only 'scheduled' and 'on-demand' backups count for the policy's rules."""
    parent: str | None = None
    """The backup an incremental physical backup builds on (Manifest.incremental_of)."""


@dataclass
class RetentionDecision:
    id: str
    keep: bool
    reasons: list[str] = field(default_factory=list)


NEWEST_SUCCESSFUL = "newest successful backup (never deleted)"
NEWEST_VERIFIED = "newest verified backup (never deleted)"
SAFETY_KEEP_DAYS = 7
NEWEST_SAFETY = "newest pre-restore safety backup (never deleted)"
IMPORTED = "imported dump (never deleted by retention)"
BASE_OF = "in the chain of the kept incremental backup"


def _order(ref: BackupRef) -> tuple[datetime, tuple[str, int]]:
    return as_utc(ref.completed_at), backup_id_sort_key(ref.id)


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _iso_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _month(moment: datetime) -> str:
    return f"{moment.year}-{moment.month:02d}"


def _newest_per_period(
    newest_first: Sequence[BackupRef], periods: int, period_of: Callable[[datetime], str]
) -> dict[str, str]:
    """id -> period label for the newest backup in each of the `periods` newest periods with backups."""
    kept: dict[str, str] = {}
    seen: set[str] = set()
    for ref in newest_first:
        period = period_of(as_utc(ref.completed_at))
        if period in seen:
            continue
        if len(seen) == periods:
            break
        seen.add(period)
        kept[ref.id] = period
    return kept


def plan_retention(backups: Sequence[BackupRef], rules: Retention, now: datetime) -> list[RetentionDecision]:
    """Keep/delete for every backup, newest first, each with the reasons it is kept (or deleted)."""
    everything = sorted(backups, key=_order, reverse=True)
    reasons: dict[str, list[str]] = {ref.id: [] for ref in everything}
    _keep_other_purposes(everything, reasons, now)
    ordered = [ref for ref in everything if ref.purpose in OWN_PURPOSES]
    good = [ref for ref in ordered if ref.succeeded]

    if good:
        reasons[good[0].id].append(NEWEST_SUCCESSFUL)
    verified = [ref for ref in good if ref.verified]
    if verified:
        reasons[verified[0].id].append(NEWEST_VERIFIED)

    if rules.keep_last:
        for position, ref in enumerate(good[: rules.keep_last], start=1):
            reasons[ref.id].append(f"keepLast {rules.keep_last} (#{position})")
    if rules.daily:
        for backup_id, label in _newest_per_period(good, rules.daily, _day).items():
            reasons[backup_id].append(f"daily {rules.daily}: newest of {label}")
    if rules.weekly:
        for backup_id, label in _newest_per_period(good, rules.weekly, _iso_week).items():
            reasons[backup_id].append(f"weekly {rules.weekly}: newest of {label}")
    if rules.monthly:
        for backup_id, label in _newest_per_period(good, rules.monthly, _month).items():
            reasons[backup_id].append(f"monthly {rules.monthly}: newest of {label}")
    if rules.max_age:
        limit = parse_duration(rules.max_age)
        for ref in ordered:
            if as_utc(now) - as_utc(ref.completed_at) < limit:
                reasons[ref.id].append(f"maxAge {rules.max_age}: younger than that")

    _keep_chains(everything, reasons)
    decisions = []
    for ref in everything:
        kept_by = reasons[ref.id]
        if kept_by:
            decisions.append(RetentionDecision(ref.id, True, kept_by))
        elif not ref.succeeded:
            decisions.append(RetentionDecision(ref.id, False, ["failed backup that no rule keeps"]))
        elif ref.purpose == "pre-restore":
            decisions.append(RetentionDecision(ref.id, False, [f"pre-restore safety backup older than "
                                                               f"{SAFETY_KEEP_DAYS} days and not the newest"]))
        else:
            decisions.append(RetentionDecision(ref.id, False, ["no retention rule keeps it"]))
    return decisions


def _keep_chains(newest_first: Sequence[BackupRef], reasons: dict[str, list[str]]) -> None:
    """Every backup a kept incremental builds on is kept (newest first: each ancestor names its nearest kept
    descendant)."""
    parents = {ref.id: ref.parent for ref in newest_first}
    for ref in newest_first:
        if not reasons[ref.id] or ref.parent is None:
            continue
        parent: str | None = ref.parent
        while parent is not None and parent in reasons and not any(r.startswith(BASE_OF) for r in reasons[parent]):
            reasons[parent].append(f"{BASE_OF} {ref.id}")
            parent = parents.get(parent)


def _keep_other_purposes(newest_first: Sequence[BackupRef], reasons: dict[str, list[str]], now: datetime) -> None:
    """The fixed rules for backups that are not the policy's own full backups."""
    safety = [ref for ref in newest_first if ref.purpose == "pre-restore"]
    if safety:
        reasons[safety[0].id].append(NEWEST_SAFETY)
    for ref in safety:
        if as_utc(now) - as_utc(ref.completed_at) < timedelta(days=SAFETY_KEEP_DAYS):
            reasons[ref.id].append(f"pre-restore safety backup younger than {SAFETY_KEEP_DAYS} days")
    for ref in newest_first:
        if ref.purpose == "imported":
            reasons[ref.id].append(IMPORTED)


@dataclass(frozen=True)
class PrunedBackups:
    """What prune_backups decided, and what the location holds after it (for the WAL retention that follows)."""

    decisions: list[RetentionDecision]
    remaining: list[Manifest]
    """Every policy's readable backups in the location that were not deleted."""
    stored: set[str]
    """The ids with a manifest that were not deleted."""


def prune_backups(catalog: Catalog, rules: Retention, now: datetime, *, dry_run: bool = False) -> PrunedBackups:
    """Plan over the catalog's complete backups and delete what no rule keeps (unless dry_run). One scan of the
    backup directories serves both this and the WAL retention after it."""
    scan = catalog.scan()
    location = catalog.location_backups(scan)
    refs = [BackupRef(m.id, m.completed_at, m.verified, True, m.purpose, m.incremental_of)
            for m in location if catalog.owns(m)]
    decisions = plan_retention(refs, rules, now)
    deleted: set[str] = set()
    for decision in decisions:
        log(
            "retention.decision",
            backup_id=decision.id,
            keep=decision.keep,
            reasons=decision.reasons,
            dry_run=dry_run,
        )
        if not decision.keep and not dry_run:
            catalog.delete(decision.id)
            deleted.add(decision.id)
    return PrunedBackups(decisions=decisions, remaining=[m for m in location if m.id not in deleted],
                         stored=scan.complete() - deleted)
