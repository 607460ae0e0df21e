"""Safe tar extraction (runner/restore/safetar.py) on every Python from 3.11.0 on: the same refusals and the same
extracted files with tarfile's 'data' filter (3.11.4+) and with the runner's own member check (3.11.0-3.11.3,
e.g. Debian 12's python3 3.11.2, which `scripts/test-system-python.sh` runs these tests under)."""

from __future__ import annotations

import io
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from pgbackup.runner.restore import safetar
from pgbackup.runner.restore.safetar import UnsafeArchive, extract_data

PATHS = [pytest.param(False, id="own-check")] + ([pytest.param(True, id="data-filter")] if safetar.HAS_FILTERS else [])


@pytest.fixture(params=PATHS)
def filters(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each test once per extraction path this Python has (the runner's own check always)."""
    monkeypatch.setattr(safetar, "HAS_FILTERS", request.param)
    return bool(request.param)


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buffer.seek(0)
    return buffer


def _file(name: str, data: bytes = b"data", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.uname, info.gname = mode, 4242, 4242, "someone", "others"
    return info, data


def _dir(name: str, mode: int = 0o700) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def _link(name: str, target: str, *, hard: bool = False, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = (tarfile.LNKTYPE if hard else tarfile.SYMTYPE), target, mode
    return info, b""


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, b""


def test_this_python_is_tested_on_its_own_extraction_path() -> None:
    assert safetar.HAS_FILTERS == (sys.version_info >= (3, 11, 4))


def test_a_dump_directory_extracts_as_plain_files_of_the_running_user(filters: bool, tmp_path: Path) -> None:
    archive = _tar(_dir("./"), _dir("./toc", 0o777), _file("./toc.dat", b"table of contents", 0o4777),
                   _file("./toc/3001.dat", b"rows", 0o600), _file("./run.sh", b"#!/bin/sh", 0o755),
                   _link("./latest", "toc/3001.dat"), _link("./again.sh", "run.sh", hard=True, mode=0o6775))
    target = tmp_path / "dump"

    extract_data(archive, target)

    assert (target / "toc.dat").read_bytes() == b"table of contents"
    assert (target / "toc" / "3001.dat").read_bytes() == b"rows"
    assert (target / "latest").read_bytes() == b"rows" and (target / "latest").is_symlink()
    assert (target / "again.sh").stat().st_ino == (target / "run.sh").stat().st_ino
    assert stat.S_IMODE((target / "toc.dat").stat().st_mode) == 0o755  # no setuid, no group/other write
    assert stat.S_IMODE((target / "toc" / "3001.dat").stat().st_mode) == 0o600
    assert stat.S_IMODE((target / "run.sh").stat().st_mode) == 0o755
    assert {(target / name).stat().st_uid for name in ("toc.dat", "run.sh", "toc")} == {os.geteuid()}


MALICIOUS = {
    "dotdot": [_file("../escaped")],
    "nested-dotdot": [_dir("a"), _file("a/../../escaped")],
    "absolute": [_file("/tmp/pgbackup-safetar-escaped")],
    "symlink-out": [_link("out", "../")],
    "symlink-absolute": [_link("etc", "/etc")],
    "symlink-through-symlink": [_dir("sub"), _link("sub/here", "."), _link("via", "sub/here/../../escaped")],
    "write-through-symlink": [_link("inside", "."), _link("inside/up", ".."), _file("inside/up/escaped")],
    "hardlink-out": [_link("passwd", "../escaped", hard=True)],
    "device": [_special("null", tarfile.CHRTYPE)],
    "fifo": [_special("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("members", MALICIOUS.values(), ids=MALICIOUS.keys())
def test_members_landing_outside_the_target_or_special_files_are_refused(
        filters: bool, tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    (tmp_path / "escaped").write_bytes(b"outside")
    target = tmp_path / "target"
    target.mkdir()

    with pytest.raises(UnsafeArchive) as refused:
        extract_data(_tar(*members), target)

    assert refused.value.reason == "UnsafeArchive"
    assert "refusing" in str(refused.value)
    assert (tmp_path / "escaped").read_bytes() == b"outside"
    assert not Path("/tmp/pgbackup-safetar-escaped").exists()
