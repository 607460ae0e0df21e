"""Restoring an incremental physical backup: every backup of its chain (the full one .. the incremental) is
extracted into a scratch directory, then `pg_combinebackup` writes the synthetic full backup into the target data
directory. Nothing in the target is touched until every member is extracted (checksums verified), so a missing or
damaged member fails the restore with the target as it was.

Where the members go: beside the target when that directory is writable and on the target's filesystem, else the
runner's scratch directory. On one filesystem pg_combinebackup (PostgreSQL 18+) hard-links the files into the
target (`--link`) instead of copying them: the members are removed afterwards, so the target owns the only links
and the restore needs the chain's size once, not twice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.chains import chain_complete, chain_of, parents
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.common.config import scratch_dir
from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.postgres.account import chown_tree
from pgbackup.runner.postgres.pg import environ_without_libpq
from pgbackup.runner.postgres.tools import major_of, server_tools
from pgbackup.runner.restore.reading import extract_tar

LINK_MAJOR = 18
"""pg_combinebackup --link exists from this major on."""


@dataclass(frozen=True)
class ExtractedChain:
    """The members of a chain, each extracted into a directory of its own, root first."""

    members: list[Manifest]
    directories: list[Path]
    same_filesystem: bool
    """Whether the directories are on the target's filesystem (hard links work)."""


def chain_members(catalog: Catalog, manifest: Manifest) -> list[Manifest]:
    """`manifest`'s chain, root first (ChainIncomplete names a missing member before anything is read). Only the
    members' manifests are read, one per member, not the whole catalog."""
    return chain_of(manifest, {backup_id: parent for backup_id, parent in parents(manifest, catalog.find)
                               if parent is not None})


def newest_whole(eligible: list[Manifest], backups: list[Manifest]) -> Manifest:
    """The newest eligible base backup whose chain is complete (an older one replays more WAL, but restores);
    ChainIncomplete naming the missing backup when none is."""
    by_id = {m.id: m for m in backups}
    for base in eligible:
        if chain_complete(base, by_id):
            if base is not eligible[0]:
                log_warning("pitr.chain_incomplete", skipped=eligible[0].id, base=base.id,
                            hint=f"a backup of the chain of {eligible[0].id} is missing: recovery starts from the "
                                 f"older {base.id} and replays more WAL")
            return base
    chain_of(eligible[0], by_id)  # raises, naming the missing member
    return eligible[0]


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _scratch_for(target_dir: Path, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """A new directory for the members, and whether it is on the target's filesystem."""
    device = _existing(target_dir).stat().st_dev
    beside = _existing(target_dir.parent)
    if beside.stat().st_dev == device and os.access(beside, os.W_OK):
        return Path(tempfile.mkdtemp(prefix=".pgbackup-chain-", dir=beside)), True
    base = scratch_dir(environ)
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pgbackup-chain-", dir=base))
    return workdir, workdir.stat().st_dev == device


@contextmanager
def extracted_chain(catalog: Catalog, members: Sequence[Manifest], target_dir: Path, identity: str | None,
                    environ: Mapping[str, str]) -> Iterator[ExtractedChain]:
    """Every member's base.tar extracted (and checksum-verified) into a scratch directory; removed afterwards."""
    workdir, same = _scratch_for(target_dir, environ)
    os.chmod(workdir, 0o700)
    try:
        directories = []
        for member in members:
            base = member.object_by_kind("base")
            if not base:
                raise RunnerError(f"backup {member.id} (of the chain of {members[-1].id}) has no base object; its "
                                  f"manifest is damaged. Nothing was restored or changed", reason="ManifestInvalid")
            into = workdir / member.id
            into.mkdir()
            log("restore.chain.extract", backup_id=member.id, into=str(into), incremental=member.backup_type == "incr")
            with catalog.open_object(member, base[0], identity=identity) as stream:
                extract_tar(stream, into)
            directories.append(into)
        yield ExtractedChain(members=list(members), directories=directories, same_filesystem=same)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def combine(chain: ExtractedChain, target_dir: Path, environ: Mapping[str, str]) -> None:
    """pg_combinebackup of the extracted chain into `target_dir` (empty), owned as the newest member's files were."""
    newest = chain.members[-1]
    tools = server_tools(major_of(newest.server_version), environ=environ)
    link = chain.same_filesystem and tools.major >= LINK_MAJOR
    # --no-sync: PostgreSQL syncs the whole data directory when it starts from a backup (as after a full restore)
    args = [tools.path("pg_combinebackup"), "--no-sync", "-o", str(target_dir), *(["--link"] if link else []),
            *[str(d) for d in chain.directories]]
    log("restore.chain.combine", backup_id=newest.id, chain=[m.id for m in chain.members],
        mode="link" if link else "copy")
    result = subprocess.run(args, capture_output=True, text=True, env={**environ_without_libpq(), "LC_ALL": "C"}, check=False)
    if result.returncode != 0:
        raise RunnerError(f"pg_combinebackup could not combine the chain of backup {newest.id} "
                          f"({' -> '.join(m.id for m in chain.members)}): {result.stderr.strip()[-800:]}",
                          reason="RestoreFailed")
    owner = (chain.directories[-1] / "PG_VERSION").stat()
    if os.geteuid() == 0:  # as a full restore: the files belong to whom they belonged to in the backup
        chown_tree(target_dir, (owner.st_uid, owner.st_gid))
    os.chmod(target_dir, 0o700)
