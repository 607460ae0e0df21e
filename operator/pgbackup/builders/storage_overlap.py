"""Storage locations of BackupPolicies, and the check that no two policies share one (pure).

Two policies writing into the same bucket + prefix (or claim + path) would share one catalog and one WAL
archive. The runner keeps their backups apart (each catalog sees only its own policy's backups), but a shared
WAL archive of two servers cannot work and the layout is a mistake: the policy created later is Ready=False
with reason StorageOverlap, naming the other, until one of them moves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pgbackup.api.policy import BackupPolicySpec, S3Storage, Storage, VolumeStorage, relative_volume_path
from pgbackup.builders.conditions import Check

STORAGE_OVERLAP = "StorageOverlap"


@dataclass(frozen=True)
class StorageUse:
    """One storage location a policy writes to."""

    location: str
    """Normalised location, e.g. 's3://minio.minio.svc:9000/backups/shop/orders' or 'pvc://shop/backups/orders'."""
    namespace: str
    name: str
    created: str
    """The policy's metadata.creationTimestamp (RFC 3339, so text order is time order)."""
    field: str
    """Which part of the spec names it: 'spec.storage' or 'spec.copies[<name>]'."""

    @property
    def policy(self) -> str:
        return f"{self.namespace}/{self.name}"


def _s3_location(s3: S3Storage) -> str:
    endpoint = (s3.endpoint or "https://s3.amazonaws.com").rstrip("/").split("://", 1)[-1].lower()
    prefix = "/".join(part for part in (s3.prefix or "").split("/") if part)
    return f"s3://{endpoint}/{s3.bucket}/{prefix}".rstrip("/")


def _volume_location(volume: VolumeStorage, namespace: str) -> str:
    path = relative_volume_path(volume.path, "storage.volume.path") if volume.path else "."
    return f"pvc://{namespace}/{volume.claim_name}" + ("" if path == "." else f"/{path}")


def location_of(storage: Storage, namespace: str) -> str:
    """Where a storage (its policy defaults already applied) keeps its backups, as one comparable string."""
    if storage.s3 is not None:
        return _s3_location(storage.s3)
    assert storage.volume is not None  # the model guarantees exactly one
    return _volume_location(storage.volume, namespace)


def storage_uses(namespace: str, name: str, created: str, spec: BackupPolicySpec) -> list[StorageUse]:
    """Every location the policy writes to: its storage and each copy, with the default prefix applied."""
    resolved = spec.for_policy(namespace, name)
    uses = [StorageUse(location_of(resolved.storage, namespace), namespace, name, created, "spec.storage")]
    uses += [StorageUse(location_of(copy.storage, namespace), namespace, name, created, f"spec.copies[{copy.name}]")
             for copy in resolved.copies]
    return uses


def _order(use: StorageUse) -> tuple[str, str, str]:
    return use.created, use.namespace, use.name


def overlap_check(mine: Iterable[StorageUse], known: Iterable[StorageUse]) -> Check:
    """Fails when another policy created earlier (ties: namespace/name order) writes to one of `mine`'s
    locations; the message names both policies, the location and what to change."""
    known = list(known)
    problems: list[str] = []
    for use in mine:
        earlier = sorted({other for other in known if other.location == use.location and other.policy != use.policy
                          and _order(other) < _order(use)}, key=_order)
        for other in earlier:
            problems.append(
                f"BackupPolicy {use.policy} stores backups in {use.location} ({use.field}), which BackupPolicy "
                f"{other.policy} already uses ({other.field}); policies sharing a location would share one WAL "
                f"archive and mix their catalogs. Give this policy its own location (leave storage.s3.prefix "
                f"unset for '<namespace>/<name>', or set a distinct prefix or volume.path); until then its "
                f"CronJob is not created or changed")
    if problems:
        return Check(False, STORAGE_OVERLAP, "; ".join(problems))
    return Check(True, "Reconciled", "")
