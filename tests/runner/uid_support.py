"""Run the runner as a UID that has no passwd entry, as pods do under OpenShift's restricted SCC or a
`securityContext.runAsUser` override. The tests run as root: the runner is started as a real subprocess under
that UID (setpriv), in a workspace that UID owns."""

from __future__ import annotations

import functools
import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FIRST_UID = 65532  # the UID of the image and of the Job builders
RUNNER = [sys.executable, "-m", "pgbackup.runner"]


def unused_uid() -> int:
    """A UID (also free as a GID) that has no passwd and no group entry on this machine."""
    for uid in range(FIRST_UID, FIRST_UID + 1000):
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
            continue
        except KeyError:
            return uid
    raise AssertionError("no unused UID between 65532 and 66531")


def _probe(prefix: list[str]) -> str:
    done = subprocess.run([*prefix, sys.executable, "-c", "import sys, pgbackup.runner.cli.main; print(sys.version)"],
                          capture_output=True, text=True, cwd="/", env={"PATH": os.environ.get("PATH", ""), "HOME": "/"},
                          timeout=120)
    return done.stdout.strip() if done.returncode == 0 else f"failed: {done.stderr.strip()[-300:]}"


@functools.cache
def as_uid(uid: int) -> tuple[str, ...]:
    """argv prefix that runs a program as `uid`/`uid` with no supplementary groups. Checked, not assumed: when
    this interpreter's own installation is unreadable for that UID (e.g. under root's 0700 home, where the
    binary would silently run on another Python's library), the UID is lent CAP_DAC_READ_SEARCH (read and
    directory search only, never write: what the runner writes still has to be its own). Skips, saying why,
    when neither works."""
    if os.geteuid() != 0:
        pytest.skip("running as another UID needs root")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    plain = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    reading = [*plain, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    tried = []
    for prefix in (plain, reading):
        version = _probe(prefix)
        if version == sys.version:
            return tuple(prefix)
        tried.append(version)
    pytest.skip(f"uid {uid} cannot run this interpreter ({sys.executable}) with its own library: {tried}")


def chown_tree(path: Path, uid: int) -> None:
    os.chown(path, uid, uid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), uid, uid)


@contextmanager
def uid_workspace(uid: int) -> Iterator[Path]:
    """A private directory owned by `uid` (its home and scratch in the tests), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX))
    os.chmod(path, 0o700)
    os.chown(path, uid, uid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


WORKSPACE_PREFIX = "pgbackup-test-uid-"


def owned_by(uid: int, directory: Path) -> list[Path]:
    """Entries of `directory` owned by `uid`: what a run under that UID left where it should not write. The
    workspaces of `uid_workspace` are not counted: test runs in other checkouts on the same machine make and remove
    theirs (owned by the same first free UID) at any moment."""
    return [p for p in directory.iterdir() if p.lstat().st_uid == uid and not p.name.startswith(WORKSPACE_PREFIX)]


def runner_env(**values: str) -> dict[str, str]:
    """This environment without libpq/pgbackup settings and any passwd wrapper, plus `values`."""
    dropped = ("PG", "LD_PRELOAD", "NSS_WRAPPER")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(dropped)}, **values}
