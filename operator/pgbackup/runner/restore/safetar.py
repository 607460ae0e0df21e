"""Safe tar extraction on every Python the package supports (requires-python >= 3.11).

tarfile's extraction filters (`filter='data'`, PEP 706) exist from Python 3.11.4 on; Debian 12's python3 is
3.11.2, and wal-push/wal-fetch run on database hosts with whatever Python they have. Every extraction in the
runner goes through this module, which checks each member itself before tarfile writes it (the rules of the
'data' filter) and, where tarfile has filters, applies the 'data' filter too. Refused (UnsafeArchive): absolute
names, '..' components, members whose directory resolves outside the target through a symlink, symlinks and
hard links pointing outside it, device files and FIFOs. Extracted files belong to the running user, without
setuid/setgid/sticky bits or group/other write permission; directories get the default mode.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import BinaryIO, Final

from pgbackup.runner.common.errors import RunnerError

HAS_FILTERS: Final = hasattr(tarfile, "data_filter")
"""Whether this Python's tarfile has extraction filters (3.11.4 and later)."""


class UnsafeArchive(RunnerError):
    """A tar member would land outside the target: the object was not written by pgbackup as stored."""

    reason = "UnsafeArchive"


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _clean_name(name: str, what: str) -> str:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or not name.strip("/.") or "\0" in name:
        raise UnsafeArchive(f"refusing tar member {what}{name!r}: absolute or '..' paths would land outside "
                            f"the target; the object was altered after the backup, restore from another backup")
    return "/".join(part for part in parts if part not in ("", "."))


def check_member(member: tarfile.TarInfo, root: Path) -> Path:
    """The path `member` extracts to, after checking it (and its link target) stays inside `root`, also through
    symlinks already there. The member itself may replace a symlink (volumes restored with overwrite)."""
    name = _clean_name(member.name, "")
    real_root = os.path.realpath(root)
    destination = root / name
    parent = os.path.realpath(destination.parent)
    if not _inside(real_root, parent):
        raise UnsafeArchive(f"refusing tar member {member.name!r}: its directory resolves to {parent}, outside "
                            f"{root} (through a symlink)")
    if member.issym():
        if os.path.isabs(member.linkname):
            raise UnsafeArchive(f"refusing symlink {member.name!r} -> {member.linkname!r}: absolute link targets "
                                f"point outside the restored files")
        resolved = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
        real_target = os.path.realpath(os.path.join(parent, member.linkname))
        if resolved == ".." or resolved.startswith("../") or not _inside(real_root, real_target):
            raise UnsafeArchive(f"refusing symlink {member.name!r} -> {member.linkname!r}: it points outside "
                                f"the restored files")
    if member.islnk():
        target = _clean_name(member.linkname, "link target ")
        real_target = os.path.realpath(root / target)
        if not _inside(real_root, real_target):
            raise UnsafeArchive(f"refusing hard link {member.name!r} -> {member.linkname!r}: outside {root}")
    return destination


def extract_member_as_is(archive: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
    """Extract one member already checked with check_member, keeping its owner (when root), mode and times."""
    if HAS_FILTERS:
        archive.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")
    else:
        archive.extract(member, root, set_attrs=True, numeric_owner=True)


def _data_mode(mode: int) -> int:
    """The 'data' filter's mode for a regular file: no high bits, no group/other write, owner read+write."""
    mode &= 0o755
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def extract_data(stream: BinaryIO, root: Path) -> None:
    """Extract the tar read from `stream` (in order, no seeking) into `root` as plain data; see the module doc."""
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if member.isdir() and member.name in (".", "./"):  # the target itself (`tar -C dir -cf - .`)
                root.mkdir(parents=True, exist_ok=True)
                continue
            if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
                raise UnsafeArchive(f"refusing tar member {member.name!r}: it is a device file or FIFO, which a "
                                    f"backup never holds; the object was altered after the backup, restore from "
                                    f"another backup")
            destination = check_member(member, root)
            if os.path.lexists(destination) and not _inside(os.path.realpath(root),
                                                            os.path.realpath(destination)):
                raise UnsafeArchive(f"refusing tar member {member.name!r}: it would be written through a symlink "
                                    f"to {os.path.realpath(destination)}, outside {root}")
            if HAS_FILTERS:
                archive.extract(member, root, filter="data")
            elif member.isdir():
                destination.mkdir(parents=True, exist_ok=True)  # the default mode, as the 'data' filter does
            else:
                member.uid, member.gid, member.uname, member.gname = os.geteuid(), os.getegid(), "", ""
                if not member.issym():
                    member.mode = _data_mode(member.mode)
                archive.extract(member, root, set_attrs=True, numeric_owner=True)
