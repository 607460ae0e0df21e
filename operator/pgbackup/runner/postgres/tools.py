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
"""One bin directory used for every client program (pg_dump, pg_restore, ...), whatever the server's version."""
ENV_PG_BINDIR_MAJOR = "PGBACKUP_PG_BINDIR_{major}"
"""The bin directory of one major version (e.g. PGBACKUP_PG_BINDIR_15), searched before anything else."""
ENV_PG_SEARCH_PATH = "PGBACKUP_PG_SEARCH_PATH"
"""Where installations are looked for, ':'-separated; set (even empty) it replaces the default places."""
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPPORTED_MAJORS = (14, 15, 16, 17, 18)
"""The majors the image carries (Dockerfile PG_MAJORS) and the tests run against (15 and 18)."""
_MAJOR_OVERRIDE = re.compile(r"PGBACKUP_PG_BINDIR_(\d+)")


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


@lru_cache(maxsize=4)
def _pg_config_bindir(pg_config: str) -> Path | None:
    try:
        output = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True,
                                timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(output) if output else None


def search_path(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where installations are looked for, in order. Each entry is a bin directory or a directory of
    `<major>/bin` directories (Debian's /usr/lib/postgresql). PGBACKUP_PG_SEARCH_PATH when set (an empty value
    finds nothing), else /usr/lib/postgresql, the pgserver wheel's, `pg_config --bindir` and pg_dump's on PATH."""
    environ = os.environ if environ is None else environ
    if ENV_PG_SEARCH_PATH in environ:
        return [Path(entry) for entry in environ[ENV_PG_SEARCH_PATH].split(":") if entry]
    places = [DEBIAN_ROOT]
    bundled = _pgserver_bindir()
    if bundled is not None:
        places.append(bundled)
    pg_config = shutil.which("pg_config", path=environ.get("PATH"))
    configured = _pg_config_bindir(os.path.realpath(pg_config)) if pg_config else None
    if configured is not None:
        places.append(configured)
    on_path = shutil.which("pg_dump", path=environ.get("PATH"))
    if on_path:
        places.append(Path(os.path.realpath(on_path)).parent)
    return places


def _bindirs(entry: Path) -> list[Path]:
    if (entry / "pg_dump").exists():
        return [entry]
    return sorted(entry.glob("*/bin"))


def _overrides(environ: Mapping[str, str]) -> dict[int, Path]:
    """PGBACKUP_PG_BINDIR_<major> settings."""
    found: dict[int, Path] = {}
    for name, value in environ.items():
        match = _MAJOR_OVERRIDE.fullmatch(name)
        if match and value:
            found[int(match.group(1))] = Path(value)
    return found


def _overridden(major: int, environ: Mapping[str, str]) -> PgTools | None:
    """The installation PGBACKUP_PG_BINDIR_<major> names (None when unset); one that is not of that major is
    a configuration error."""
    bindir = _overrides(environ).get(major)
    if bindir is None:
        return None
    tools = _tools_in(bindir)
    if tools is None or tools.major != major:
        what = "no working pg_dump" if tools is None else f"PostgreSQL {tools.major}"
        raise UsageError(f"{ENV_PG_BINDIR_MAJOR.format(major=major)}={bindir} holds {what}: point it at the bin "
                         f"directory of PostgreSQL {major} (e.g. {DEBIAN_ROOT}/{major}/bin) or unset it",
                         reason="ToolsMissing")
    return tools


def installed_tools(environ: Mapping[str, str] | None = None) -> list[PgTools]:
    """Every installation found, one per bin directory: PGBACKUP_PG_BINDIR, PGBACKUP_PG_BINDIR_<major>, then
    the search path."""
    environ = os.environ if environ is None else environ
    candidates: list[Path] = []
    if environ.get(ENV_PG_BINDIR):
        candidates.append(Path(environ[ENV_PG_BINDIR]))
    candidates += [path for _, path in sorted(_overrides(environ).items())]
    for entry in search_path(environ):
        candidates += _bindirs(entry)
    seen: set[str] = set()
    found: list[PgTools] = []
    for tools in (_tools_in(c) for c in candidates):
        if tools is not None and os.path.realpath(tools.bindir) not in seen:
            seen.add(os.path.realpath(tools.bindir))
            found.append(tools)
    return found


def _pick(found: list[PgTools], major: int, allow_newer: bool) -> PgTools | None:
    """That major, else (allow_newer) the newest newer one."""
    same = [t for t in found if t.major == major]
    if same:
        return same[0]
    newer = sorted((t for t in found if t.major > major), key=lambda t: t.major, reverse=True)
    return newer[0] if allow_newer and newer else None


def _where(found: list[PgTools], environ: Mapping[str, str]) -> str:
    have = ", ".join(f"{t.major} ({t.bindir})" for t in found) or "none"
    places = ":".join(str(p) for p in search_path(environ))
    setting = f"{ENV_PG_SEARCH_PATH}={places!r}" if ENV_PG_SEARCH_PATH in environ else f"{places!r}"
    return f"found {have} searching {setting}"


def _remedy(major: int, package: str) -> str:
    """What to install or set for a missing major."""
    override = ENV_PG_BINDIR_MAJOR.format(major=major)
    carried = f"{SUPPORTED_MAJORS[0]} to {SUPPORTED_MAJORS[-1]}"
    if major in SUPPORTED_MAJORS:
        return (f"The pgbackup-operator image carries PostgreSQL {carried}; in another image or host install "
                f"{package}, or point {override} at its bin directory")
    return (f"PostgreSQL {major} is not in the pgbackup-operator image (it carries {carried}): install {package} "
            f"in an image built on it, or point {override} at its bin directory")


def find_tools(server_major: int, environ: Mapping[str, str] | None = None) -> PgTools:
    """The client tools for a server: PGBACKUP_PG_BINDIR when set, else the same major, else the newest newer one
    (pg_dump refuses servers newer than itself, pg_restore reads only dumps of its own major or older)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_PG_BINDIR):
        forced = _tools_in(Path(environ[ENV_PG_BINDIR]))
        if forced is None:
            raise UsageError(f"{ENV_PG_BINDIR}={environ[ENV_PG_BINDIR]} holds no working pg_dump")
        return forced
    found = installed_tools(environ)
    picked = _overridden(server_major, environ) or _pick(found, server_major, allow_newer=True)
    if picked is not None:
        return picked
    raise UsageError(
        f"no PostgreSQL client tools (pg_dump, pg_restore) of version {server_major} or newer: "
        f"{_where(found, environ)}. {_remedy(server_major, f'postgresql-client-{server_major}')}",
        reason="ToolsMissing",
    )


# ---------------------------------------------------------------- server programs (throwaway servers)

SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _has_server(tools: PgTools) -> bool:
    return all(os.access(tools.bindir / program, os.X_OK) for program in SERVER_PROGRAMS)


def server_installations(environ: Mapping[str, str] | None = None) -> list[PgTools]:
    """Installations that can run a server (initdb, pg_ctl, postgres), one per bin directory."""
    return [tools for tools in installed_tools(environ) if _has_server(tools)]


def server_tools(major: int, *, allow_newer: bool = False, environ: Mapping[str, str] | None = None) -> PgTools:
    """Server binaries of PostgreSQL `major`, the one place that picks them: PGBACKUP_PG_BINDIR_<major>, else the
    first installation of that major on the search path, else (allow_newer) the newest newer major (a logical
    dump restores into newer servers, a data directory, physical verification and PITR, only into its own
    major). Missing: a configuration error (exit 3) naming the major and what to install."""
    environ = os.environ if environ is None else environ
    found = server_installations(environ)
    overridden = _overridden(major, environ)
    if overridden is not None and not _has_server(overridden):
        raise UsageError(f"{ENV_PG_BINDIR_MAJOR.format(major=major)}={overridden.bindir} holds no server programs "
                         f"({', '.join(SERVER_PROGRAMS)}): install postgresql-{major} there",
                         reason="ServerBinariesMissing")
    picked = overridden or _pick(found, major, allow_newer)
    if picked is not None:
        return picked
    wanted = f"{major} or newer" if allow_newer else str(major)
    why = "" if allow_newer else " (a data directory starts only with the major version it was made by)"
    raise UsageError(
        f"no PostgreSQL {wanted} server binaries ({', '.join(SERVER_PROGRAMS)}) to restore into{why}: "
        f"{_where(found, environ)}. {_remedy(major, f'postgresql-{major}')}",
        reason="ServerBinariesMissing",
    )


def major_of(version: str) -> int:
    """The major of a server version string: '15.10 (Debian 15.10-1)' -> 15, '9.6.24' -> 9."""
    match = re.match(r"\s*(\d+)", version)
    if not match:
        raise RunnerError(f"cannot read a PostgreSQL major version from {version!r}", reason="ManifestInvalid")
    return int(match.group(1))
