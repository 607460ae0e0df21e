"""Chains of incremental physical backups: a full backup, then incrementals each of the one before (see
pgbackup.runner.backup.chain). Restores need every member; retention keeps every backup a kept one builds on."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.common.errors import RunnerError


class ChainIncomplete(RunnerError):
    """A backup of the chain an incremental builds on is missing (deleted, or its manifest unreadable)."""

    reason = "BackupChainIncomplete"


def chain_ids(manifest: Manifest, by_id: Mapping[str, Manifest]) -> list[str]:
    """The ids of `manifest`'s chain, root first, ending with `manifest` itself. The walk stops at a member
    missing from `by_id` (its id is then the first of the list)."""
    return [backup_id for backup_id, _ in reversed(list(parents(manifest, by_id.get)))] + [manifest.id]


def chain_of(manifest: Manifest, by_id: Mapping[str, Manifest]) -> list[Manifest]:
    """The manifests of `manifest`'s chain, root first; ChainIncomplete names the first member `by_id` lacks."""
    ids = chain_ids(manifest, by_id)
    missing = [backup_id for backup_id in ids if backup_id != manifest.id and backup_id not in by_id]
    if missing:
        raise ChainIncomplete(
            f"backup {manifest.id} is an incremental backup, and backup {missing[0]} of its chain "
            f"({' -> '.join(ids)}) is missing (deleted, or its manifest cannot be read). Nothing was restored or "
            f"changed; restore another backup (`pgbackup list` shows full ones as type 'full')")
    return [manifest if backup_id == manifest.id else by_id[backup_id] for backup_id in ids]


def chain_complete(manifest: Manifest, by_id: Mapping[str, Manifest]) -> bool:
    """Whether every backup `manifest` builds on is in `by_id` (always for a full backup)."""
    return all(backup_id == manifest.id or backup_id in by_id for backup_id in chain_ids(manifest, by_id))


def parents(manifest: Manifest, get: Callable[[str], Manifest | None]) -> Iterator[tuple[str, Manifest | None]]:
    """The backups `manifest` builds on, its parent first, each read with `get`: (id, manifest), or (id, None) for a
    missing one, which ends the walk. Reads only the chain's manifests, not the whole catalog."""
    seen = [manifest.id]
    current = manifest
    while (parent_id := current.incremental_of) is not None:
        if parent_id in seen:  # only edited manifests loop
            raise RunnerError(f"the chain of backup {manifest.id} loops at {parent_id}: its manifests were edited",
                              reason="ManifestInvalid")
        seen.append(parent_id)
        parent = get(parent_id)
        yield parent_id, parent
        if parent is None:
            return
        current = parent
