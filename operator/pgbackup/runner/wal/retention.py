"""WAL retention: keep exactly the WAL the retained physical base backups need, delete what lies before.

Pure planning (plan_wal_retention) plus applying it to a WalArchive. The cut is one WAL position: the start
segment of the oldest retained base backup. Every archived segment (and .partial, and .backup label file) at
or after that position is kept, on every timeline; everything before it is deleted. Deleting only what lies
before one position removes a prefix of each timeline, so it never opens a gap inside the recoverability
window. Timeline history files are always kept (tiny, and recovery needs them to follow timeline switches).
Without any retained physical base backup nothing is deleted: the WAL may be waiting for the next one.

Applying it lists only the WAL before the cut (WalArchive.listing_before), never the archive that is kept: the
cut comes from the backups' manifests, so without a physical base backup no WAL is listed at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.common.log import log, log_error, log_warning
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.listing import ArchivedSegment, WalListing
from pgbackup.runner.wal.window import backups_segment_size, base_backup_segments
from pgbackup.runner.wal.xlog import DEFAULT_SEGMENT_SIZE, WalSegment, parse_segment_name


@dataclass(frozen=True)
class WalRetentionPlan:
    keep: list[ArchivedSegment]
    delete: list[ArchivedSegment]
    cutoff: WalSegment | None = None
    """Start segment of the oldest retained base backup; None = nothing is deleted."""
    reason: str = ""
    delete_labels: list[str] = field(default_factory=list)
    """Backup label files (<segment>.<offset>.backup) before the cutoff."""


def retention_cutoff(retained_base_backups: Sequence[Any],
                     seg_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[WalSegment | None, str]:
    """The start segment of the oldest retained base backup (by WAL position), or None and why not."""
    if not retained_base_backups:
        return None, "no retained physical base backup: all WAL is kept until one exists"
    starts: list[WalSegment] = []
    for physical in retained_base_backups:
        needed = base_backup_segments(physical, seg_size)
        if needed is None:
            return None, "a retained base backup records no usable start LSN/segment: all WAL is kept"
        starts.append(needed[0])
    oldest = min(starts, key=lambda s: (s.number(seg_size), s.timeline))
    return oldest, f"WAL before {oldest.name}, the start of the oldest retained base backup"


def plan_wal_retention(segments: Sequence[ArchivedSegment], retained_base_backups: Sequence[Any],
                       seg_size: int = DEFAULT_SEGMENT_SIZE, *, labels: Sequence[str] = ()) -> WalRetentionPlan:
    """Keep every segment at or after the oldest retained base backup's start position, delete the rest."""
    cutoff, reason = retention_cutoff(retained_base_backups, seg_size)
    ordered = sorted(segments)
    if cutoff is None:
        return WalRetentionPlan(keep=ordered, delete=[], cutoff=None, reason=reason)
    limit = cutoff.number(seg_size)
    keep = [s for s in ordered if s.segment.number(seg_size) >= limit]
    delete = [s for s in ordered if s.segment.number(seg_size) < limit]
    old_labels = sorted(name for name in labels if parse_segment_name(name).number(seg_size) < limit)
    return WalRetentionPlan(keep=keep, delete=delete, cutoff=cutoff, reason=reason, delete_labels=old_labels)


def apply_wal_retention(archive: WalArchive, backups: Sequence[Manifest], *, seg_size: int | None = None,
                        dry_run: bool = False) -> WalRetentionPlan:
    """Plan over the (already pruned) catalog's physical backups and the WAL archived before the cut they set,
    then delete. The plan's `keep` holds only the kept segments that listing saw (those right after the cut)."""
    retained = [m.physical for m in backups if m.method == "physical" and m.physical is not None]
    listing: WalListing | None = None
    if not retained:
        plan = plan_wal_retention([], retained)
    else:
        size = seg_size or backups_segment_size(backups) or archive.segment_size(backups)
        cutoff, _ = retention_cutoff(retained, size)
        listing = archive.listing_before(cutoff.position) if cutoff is not None else None
        plan = plan_wal_retention(listing.segments if listing else [], retained, size,
                                  labels=listing.labels if listing else ())
    names = [s.name for s in plan.delete] + plan.delete_labels
    if names and not dry_run:
        archive.delete(names, listing=listing)
    log("wal.retention", cutoff=plan.cutoff.name if plan.cutoff else None, reason=plan.reason, dry_run=dry_run,
        deleted=len(names),
        deleted_range=[plan.delete[0].name, plan.delete[-1].name] if plan.delete else [])
    return plan


def apply_wal_retention_for_catalog(catalog: Catalog, *, dry_run: bool = False, backups: list[Manifest] | None = None,
                                    stored: set[str] | None = None) -> WalRetentionPlan | None:
    """WAL retention after backup retention, when the storage holds a WAL archive. Skipped (None) when a
    manifest in storage could not be read: its backup might need the oldest WAL, so nothing is deleted.
    `backups`/`stored`: every policy's readable backups and the ids with a manifest (none: one catalog scan)."""
    archive = WalArchive(catalog.storage)
    if not archive.has_wal():
        return None
    if backups is None or stored is None:
        scan = catalog.scan()
        backups = catalog.location_backups(scan)  # every policy's: the archive may be shared (StorageOverlap)
        stored = scan.complete()
    unreadable = sorted(stored - {m.id for m in backups})
    if unreadable:
        log_warning("wal.retention.skipped", unreadable_manifests=unreadable[:10], storage=catalog.storage.url,
                    hint="a manifest could not be read, so the WAL its backup needs is unknown: no WAL is deleted "
                         "until `pgbackup show <id>` works for every backup again")
        return None
    return apply_wal_retention(archive, backups, dry_run=dry_run)


def apply_wal_retention_after(catalog: Catalog, *, dry_run: bool = False, backups: list[Manifest] | None = None,
                              stored: set[str] | None = None) -> None:
    """After backup retention, the WAL archive (wal/ beside the backups, when there is one): keep exactly the WAL
    the retained physical base backups need. A failure is logged, never fatal: the backups themselves are fine.
    `backups` and `stored`: every policy's readable backups and the ids with a manifest, when the caller has
    read them."""
    try:
        apply_wal_retention_for_catalog(catalog, dry_run=dry_run, backups=backups, stored=stored)
    except Exception as exc:  # noqa: BLE001
        log_error("wal.retention.failed", error=exc, storage=catalog.storage.url,
                  hint="old WAL was not pruned (nothing was lost); it is retried after the next backup or with "
                       "`pgbackup retention`")
