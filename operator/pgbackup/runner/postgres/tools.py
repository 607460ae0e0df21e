"""The PostgreSQL client programs (pg_dump, pg_restore, psql, pg_basebackup, pg_receivewal): which
installations there are, and the one that fits a server's major version."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pgbackup.runner.common.errors import RunnerError, UsageError

ENV_PG_BINDIR = "PGBACKUP_PG_BINDIR"


@dataclass(frozen=True)
class PgTools:
    """One installation of the PostgreSQL client programs."""

    bindir: Path
    major: int
    version: str

    def path(self, program: str) -> str:
        return str(self.bindir / program)


def _pgserver_bindir() -> Path | None:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@lru_cache(maxsize=32)
def _tools_in(bindir: Path) -> PgTools | None:
    program = bindir / "pg_dump"
    if not os.access(program, os.X_OK):
        return None
    try:
        output = subprocess.run([str(program), "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"(\d+)(?:\.(\d+))?", output)
    if not match:
        return None
    return PgTools(bindir=bindir, major=int(match.group(1)), version=output.strip().removeprefix("pg_dump (PostgreSQL) "))


def installed_tools(environ: Mapping[str, str] | None = None) -> list[PgTools]:
    environ = os.environ if environ is None else environ
    candidates: list[Path] = []
    if environ.get(ENV_PG_BINDIR):
        candidates.append(Path(environ[ENV_PG_BINDIR]))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    bundled = _pgserver_bindir()
    if bundled is not None:
        candidates.append(bundled)
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    found = [tools for tools in (_tools_in(c) for c in candidates) if tools is not None]
    return found


def find_tools(server_major: int, environ: Mapping[str, str] | None = None) -> PgTools:
    """The client tools for a server: PGBACKUP_PG_BINDIR when set, else the same major, else the newest newer one
    (pg_dump refuses servers newer than itself)."""
    environ = os.environ if environ is None else environ
    found = installed_tools(environ)
    if environ.get(ENV_PG_BINDIR):
        forced = _tools_in(Path(environ[ENV_PG_BINDIR]))
        if forced is None:
            raise UsageError(f"{ENV_PG_BINDIR}={environ[ENV_PG_BINDIR]} holds no working pg_dump")
        return forced
    same = [t for t in found if t.major == server_major]
    if same:
        return same[0]
    newer = sorted((t for t in found if t.major > server_major), key=lambda t: t.major, reverse=True)
    if newer:
        return newer[0]
    have = ", ".join(f"{t.major} ({t.bindir})" for t in found) or "none"
    raise RunnerError(
        f"no PostgreSQL client tools for server version {server_major}: found {have}; install "
        f"postgresql-client-{server_major} or newer, or point {ENV_PG_BINDIR} at its bin directory",
        reason="ToolsMissing",
    )


# ---------------------------------------------------------------- server programs (throwaway servers)

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _has_server(tools: PgTools) -> bool:
    return all(os.access(tools.bindir / program, os.X_OK) for program in SERVER_PROGRAMS)


def server_installations(environ: Mapping[str, str] | None = None) -> list[PgTools]:
    """Installations that can run a server (initdb, pg_ctl, postgres), one per bin directory."""
    seen: set[Path] = set()
    found: list[PgTools] = []
    for tools in installed_tools(environ):
        if tools.bindir not in seen and _has_server(tools):
            seen.add(tools.bindir)
            found.append(tools)
    return found


def server_tools(major: int, *, allow_newer: bool = False, environ: Mapping[str, str] | None = None) -> PgTools:
    """Server binaries of PostgreSQL `major` (or, with allow_newer, the newest newer major when that one is
    missing: a logical dump restores into newer servers, a data directory only into its own major)."""
    found = server_installations(environ)
    same = [t for t in found if t.major == major]
    if same:
        return same[0]
    newer = sorted((t for t in found if t.major > major), key=lambda t: t.major, reverse=True)
    if allow_newer and newer:
        return newer[0]
    have = ", ".join(f"{t.major} ({t.bindir})" for t in found) or "none"
    wanted = f"{major} or newer" if allow_newer else str(major)
    raise RunnerError(
        f"no PostgreSQL {wanted} server binaries (initdb, pg_ctl, postgres) to restore into: found {have}. "
        f"Use an image that carries postgresql-{major} (the server package), or point {ENV_PG_BINDIR} at its "
        f"bin directory",
        reason="ServerBinariesMissing",
    )


def major_of(version: str) -> int:
    """The major of a server version string: '15.10 (Debian 15.10-1)' -> 15, '9.6.24' -> 9."""
    match = re.match(r"\s*(\d+)", version)
    if not match:
        raise RunnerError(f"cannot read a PostgreSQL major version from {version!r}", reason="ManifestInvalid")
    return int(match.group(1))
