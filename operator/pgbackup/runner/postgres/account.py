"""The account a throwaway server runs as. PostgreSQL refuses to run as root: when we are root (a developer
machine, CI) the server runs as an unprivileged system user; in a pod we already are one. initdb needs the user's
passwd entry: a pod running under a UID that has none (OpenShift's restricted SCC, a securityContext.runAsUser
override) gets one from libnss_wrapper, preloaded into the server programs only, with a passwd/group file
generated beside the server's files. The server's directories must be reachable and owned by that account."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.common.log import log, log_warning

SERVICE_USER = "pgbackup-test"
"""The system user the server runs as when we are root (created when missing, else `nobody`)."""
NSS_WRAPPER_LIBRARY = "libnss_wrapper.so"
"""Supplies a passwd entry to a UID that has none (Debian/Ubuntu: libnss-wrapper; Fedora/RHEL: nss_wrapper)."""
_LIBRARY_DIRS = ("/usr/lib64", "/usr/lib", "/usr/local/lib")


def server_account() -> tuple[int, int] | None:
    """uid/gid for the server when we are root (PostgreSQL refuses root); None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True,
        )
        try:
            entry = pwd.getpwnam(SERVICE_USER if created.returncode == 0 else "nobody")
        except KeyError:
            entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


class ServerAccountMissing(RunnerError):
    """Our UID has no passwd entry (initdb refuses to run without one) and libnss_wrapper is not installed."""

    reason = "ServerAccountMissing"


def _nss_wrapper_candidates() -> list[Path]:
    multiarch = sysconfig.get_config_var("MULTIARCH")  # e.g. x86_64-linux-gnu: this platform's directory first
    dirs = [f"/usr/lib/{multiarch}"] if multiarch else []
    return [Path(directory) / NSS_WRAPPER_LIBRARY for directory in [*dirs, *_LIBRARY_DIRS]]


def nss_wrapper_library() -> Path | None:
    """Where libnss_wrapper.so is installed, or None."""
    return next((path for path in _nss_wrapper_candidates() if path.is_file()), None)


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _table_lines(path: Path) -> list[str]:
    """The lines of /etc/passwd or /etc/group, kept so that other names still resolve under the wrapper."""
    try:
        return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []


def passwd_wrapper_env(directory: Path, stem: str) -> tuple[dict[str, str], list[Path]]:
    """Environment for the server programs when our UID has no passwd entry: LD_PRELOAD of libnss_wrapper with
    a passwd and a group file (written into `directory`, owner-only) that add an entry for our UID/GID. When
    the UID has an entry, ({}, []): nothing changes. Returns the environment and the files written."""
    uid, gid = os.geteuid(), os.getegid()
    if _has_passwd_entry(uid):
        return {}, []
    library = nss_wrapper_library()
    if library is None:
        raise ServerAccountMissing(
            f"this runner runs as uid {uid}, which has no passwd entry, and initdb refuses to run without one "
            f"(\"could not look up effective user ID {uid}\"); {NSS_WRAPPER_LIBRARY}, which would supply one, is "
            f"not installed (looked for {', '.join(map(str, _nss_wrapper_candidates()))}). Use the pgbackup image (it "
            f"carries libnss-wrapper), install libnss-wrapper (Debian/Ubuntu) or nss_wrapper (Fedora/RHEL), or "
            f"run the pod as a user that has a passwd entry")
    passwd_lines = _table_lines(Path("/etc/passwd"))
    taken = {line.split(":", 1)[0] for line in passwd_lines}
    name = "pgbackup" if "pgbackup" not in taken else f"pgbackup-{uid}"
    home = os.environ.get("HOME") or str(directory)
    group_lines = _table_lines(Path("/etc/group"))
    groups = [line.split(":") for line in group_lines]
    if str(gid) not in {fields[2] for fields in groups if len(fields) > 2}:
        group_name = "pgbackup" if "pgbackup" not in {fields[0] for fields in groups} else f"pgbackup-{gid}"
        group_lines.append(f"{group_name}:x:{gid}:")
    passwd_file = directory / f"{stem}-passwd"
    group_file = directory / f"{stem}-group"
    for path, lines in ((passwd_file, [*passwd_lines, f"{name}:x:{uid}:{gid}:pgbackup:{home}:/usr/sbin/nologin"]),
                        (group_file, group_lines)):
        path.write_text("".join(f"{line}\n" for line in lines))
        os.chmod(path, 0o600)
    preload = " ".join(p for p in (str(library), os.environ.get("LD_PRELOAD", "")) if p)
    log("pg.instance.passwd_wrapper", uid=uid, gid=gid, name=name, passwd=str(passwd_file))
    return ({"LD_PRELOAD": preload, "NSS_WRAPPER_PASSWD": str(passwd_file), "NSS_WRAPPER_GROUP": str(group_file)},
            [passwd_file, group_file])


def reachable(path: Path, account: tuple[int, int] | None) -> bool:
    """Whether `account` may traverse every directory above `path` (root's pytest tmp dirs are 0700)."""
    if account is None:
        return True
    uid, gid = account
    for parent in [path, *path.parents]:
        try:
            info = parent.stat()
        except OSError:
            return False
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def make_workspace(scratch: Path | None = None, *, prefix: str = "pgbackup-pg-",
                   account: tuple[int, int] | None = None) -> Path:
    """A new directory for one server's data, log and socket, owned by the account the server runs as.
    Under `scratch` when the account can reach it, else under the system temp directory."""
    base = scratch if scratch is not None else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    if not reachable(base, account):
        log_warning("pg.instance.scratch_unreachable", scratch=str(base), uid=account[0] if account else None,
                    hint="using the system temp directory instead")
        base = Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    os.chmod(workdir, 0o700)
    if account is not None:
        os.chown(workdir, *account)
    return workdir


def chown_tree(path: Path, account: tuple[int, int] | None) -> None:
    if account is None:
        return
    for root, dirs, files in os.walk(path):
        os.lchown(root, *account)
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), *account)
