"""Restoring application volumes (`pgbackup restore --volume`, RestoreRequest spec.volumes).

The tar is read back through the verifying pipeline and extracted member by member. Nothing may land outside
the target directory: absolute names, '..' components, links pointing outside, and writes through symlinks
already in the target are refused (the archive is then treated as tampered with). A non-empty target needs
overwrite.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pgbackup.api.restore import RestorePlan, RestoreRequestSpec, VolumeRestore
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, volume_object
from pgbackup.runner.common.config import CHUNK, LOST_AND_FOUND, app_volumes_root
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.restore.reading import damage_reported, verify_objects
from pgbackup.runner.restore.safetar import check_member, extract_member_as_is


@dataclass
class VolumeRestoreReport:
    claim: str
    target_dir: Path
    files: int = 0
    directories: int = 0
    links: int = 0
    bytes: int = 0


def _clear_for(member: tarfile.TarInfo, destination: Path) -> None:
    """With overwrite: remove what is in the way (never follow a symlink that is already there)."""
    if destination.is_symlink() or (os.path.lexists(destination) and not destination.is_dir()):
        destination.unlink()
    elif destination.is_dir() and not member.isdir():
        raise UsageError(f"cannot restore file {member.name!r}: a directory of that name exists in the target; "
                         f"remove it or restore into an empty directory", reason="TargetConflict")


def extract_volume(stream: BinaryIO, root: Path, claim: str) -> VolumeRestoreReport:
    """Extract the tar in `stream` into `root` safely, then read the stream to its end (checksum check)."""
    report = VolumeRestoreReport(claim=claim, target_dir=root)
    directories: list[tuple[tarfile.TarInfo, Path]] = []
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                log_warning("volume.restore_skipped", claim=claim, member=member.name, type=member.type.decode())
                continue
            destination = check_member(member, root)
            _clear_for(member, destination)
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
                directories.append((member, destination))
                report.directories += 1
                continue
            extract_member_as_is(archive, member, root)
            if member.isreg():
                report.files += 1
                report.bytes += member.size
            else:
                report.links += 1
        for member, destination in reversed(directories):  # after their contents, as extractall does
            if os.geteuid() == 0:
                archive.chown(member, str(destination), numeric_owner=True)
            archive.utime(member, str(destination))
            archive.chmod(member, str(destination))
    while stream.read(CHUNK):  # read to the end so size and SHA-256 are verified
        pass
    return report


def restore_volume(catalog: Catalog, manifest: Manifest, claim: str, target_dir: Path, overwrite: bool = False,
                   identity: str | None = None, *, verify_first: bool = True) -> VolumeRestoreReport:
    """Restore the volume `claim` of `manifest` into `target_dir` (created when missing). `verify_first`: compare
    the object's size and SHA-256 with the manifest before the first file is written (a RestoreRequest did so
    while planning)."""
    obj = volume_object(manifest, claim)
    if target_dir.exists() and not target_dir.is_dir():
        raise UsageError(f"{target_dir} is not a directory", reason="TargetDirectoryInvalid")
    if target_dir.is_dir() and any(p.name != LOST_AND_FOUND for p in target_dir.iterdir()) and not overwrite:
        raise UsageError(f"{target_dir} is not empty: restore volume {claim} into an empty directory, or allow "
                         f"replacing files of the same name (RestoreRequest spec.volumes[].overwrite: true)",
                         reason="TargetDirectoryNotEmpty")
    if verify_first:
        verify_objects(catalog, manifest, [obj], changed=f"nothing was written to {target_dir}")
    target_dir.mkdir(parents=True, exist_ok=True)
    log("volume.restore.start", backup_id=manifest.id, claim=claim, target_dir=str(target_dir), overwrite=overwrite)
    with damage_reported(catalog, manifest, obj, f"files of it may already be in {target_dir}"), \
            catalog.open_object(manifest, obj, identity=identity) as stream:
        report = extract_volume(stream, target_dir, claim)
    log("volume.restore.done", backup_id=manifest.id, claim=claim, target_dir=str(target_dir), files=report.files,
        directories=report.directories, links=report.links, bytes=report.bytes)
    return report


# ---------------------------------------------------------------- RestoreRequest spec.volumes


def volume_target_dir(volume: VolumeRestore, environ: Mapping[str, str] | None = None) -> Path:
    """Where a RestoreRequest volume goes: the target claim's mount (the restore Job mounts it there)."""
    base = app_volumes_root(environ) / volume.target_claim
    return base / volume.path if volume.path else base


def plan_volumes(spec: RestoreRequestSpec, manifest: Manifest, catalog: Catalog, plan: RestorePlan) -> None:
    """Check every requested volume is in the backup (before anything changes) and add it to the plan; its
    size and SHA-256 are verified with the database objects while planning (restore_plan.plan_restore)."""
    for volume in spec.volumes:
        obj = volume_object(manifest, volume.claim_name)
        location = catalog.storage.location(catalog.object_key(manifest.id, obj.key))
        if location not in plan.objects:  # plan_restore lists (and verifies) the volume objects already
            plan.objects.append(location)
        where = f"{volume.target_claim}:/{volume.path}"
        plan.steps.append(f"restore volume {volume.claim_name} into claim {where}"
                          + (" (replacing files of the same name)" if volume.overwrite else " (must be empty)"))


def restore_request_volumes(spec: RestoreRequestSpec, manifest: Manifest, catalog: Catalog, identity: str | None,
                            environ: Mapping[str, str] | None = None) -> int:
    """Restore spec.volumes after the databases; returns the bytes written."""
    written = 0
    for volume in spec.volumes:
        report = restore_volume(catalog, manifest, volume.claim_name, volume_target_dir(volume, environ),
                                volume.overwrite, identity, verify_first=False)  # verified while planning
        written += report.bytes
    return written
