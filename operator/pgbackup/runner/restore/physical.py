"""Restoring a physical backup into a new, empty data directory, ready for `pg_ctl start`; a failed restore
removes what it extracted. An incremental backup is restored through its chain (pgbackup.runner.restore.chain)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.restore.chain import chain_members, combine, extracted_chain
from pgbackup.runner.restore.reading import extract_tar


def restore_physical(catalog: Catalog, backup_id: str, target_dir: Path, identity: str | None = None,
                     environ: Mapping[str, str] | None = None) -> Path:
    """Extract a physical backup into a new, empty data directory, ready for `pg_ctl start`; an incremental one
    is combined from its chain."""
    environ = os.environ if environ is None else environ
    manifest = catalog.get(backup_id)
    if manifest.method != "physical":
        raise UsageError(f"backup {backup_id} is a logical backup: restore it with --target-database")
    if target_dir.exists() and any(target_dir.iterdir()):
        raise UsageError(f"{target_dir} is not empty: a physical restore needs a new, empty data directory",
                         reason="TargetDirectoryNotEmpty")
    base = manifest.object_by_kind("base")
    if not base:
        raise RunnerError(f"backup {backup_id} has no base object; its manifest is damaged", reason="ManifestInvalid")
    members = chain_members(catalog, manifest) if manifest.backup_type == "incr" else [manifest]
    missing = [path for path in [target_dir, *target_dir.parents] if not path.exists()]
    created = missing[-1] if missing else None  # the topmost directory the restore makes (target_dir or above)
    log("restore.physical.start", backup_id=backup_id, target_dir=str(target_dir),
        chain=[m.id for m in members] if len(members) > 1 else None)
    with ExitStack() as stack:
        # a chain is extracted (and its checksums verified) before the target is touched
        chain = stack.enter_context(extracted_chain(catalog, members, target_dir, identity, environ)
                                    ) if len(members) > 1 else None
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(target_dir, 0o700)
            if chain is not None:
                combine(chain, target_dir, environ)
            else:
                with catalog.open_object(manifest, base[0], identity=identity) as stream:
                    extract_tar(stream, target_dir)
        except BaseException as exc:  # a damaged object, a broken stream, a full disk, SIGTERM: nothing half-done stays
            exc.add_note(_undo_physical_restore(target_dir, created))
            raise
    log("restore.physical.done", backup_id=backup_id, target_dir=str(target_dir))
    return target_dir


def _undo_physical_restore(target_dir: Path, created: Path | None) -> str:
    """Remove what a failed physical restore extracted: the directories it created (`created`: the topmost), else
    the contents of the empty directory it was given (it refuses a non-empty one, so they are all its own).
    Returns what was done, for the error message."""
    try:
        if created is not None:
            if created.exists():
                shutil.rmtree(created)
        else:
            for child in list(target_dir.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    except OSError as exc:
        log_warning("restore.physical.cleanup_failed", target_dir=str(target_dir), error=exc)
        what = created if created is not None else f"the contents of {target_dir}"
        return f"removing the partly restored files failed ({exc}): delete {what} by hand before restoring again"
    log("restore.physical.cleaned_up", target_dir=str(target_dir), removed=str(created) if created else None)
    if created is None:
        return f"{target_dir} was emptied again (it was empty before the restore)"
    if created == target_dir:
        return f"the partly restored data directory {target_dir} was removed (the restore had created it)"
    return (f"the partly restored data directory {target_dir} was removed, and {created} with it (the restore had "
            f"created both)")

