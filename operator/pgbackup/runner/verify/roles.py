"""The roles a backup without globals refers to (owners, grantees in its dumps), created as NOLOGIN roles in the
throwaway server so the dumps restore as they would into the original cluster."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO

from psycopg import sql

from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest
from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.common.errors import RunnerError, program_ended
from pgbackup.runner.common.log import log
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools
from pgbackup.runner.restore.reading import extract_tar, feed_stdin

_IDENT = r'"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*'
_OWNER_OR_ROLE = re.compile(rf"\b(?:OWNER TO|FOR ROLE|SESSION AUTHORIZATION)\s+({_IDENT})")
_GRANTEES = re.compile(r"^(?:GRANT|REVOKE)\b.*?\s(?:TO|FROM)\s+(.+?)(?:\s+WITH GRANT OPTION|\s+GRANTED BY\s.*)?;$")
_NOT_ROLES = {"public", "current_user", "session_user", "current_role"}


def role_names(line: str) -> list[str]:
    found = [m.group(1) for m in _OWNER_OR_ROLE.finditer(line)]
    grant = _GRANTEES.match(line)
    if grant:
        found += re.findall(_IDENT, grant.group(1))
    names = []
    for name in found:
        if name.startswith('"'):
            names.append(name[1:-1].replace('""', '"'))
        elif name.lower() not in _NOT_ROLES:
            names.append(name.lower())
    return names


def roles_needed(catalog: Catalog, manifest: Manifest, tools: PgTools, identity: str | None,
                  scratch: Path | None) -> set[str]:
    """Roles the dumps refer to (owners, grantees), read from `pg_restore --schema-only -f -` of each dump."""
    roles: set[str] = set()
    for obj in manifest.object_by_kind("database"):
        info = next((d for d in manifest.databases if d.name == obj.database), None)
        workdir = Path(tempfile.mkdtemp(prefix="pgbackup-roles-", dir=scratch))
        try:
            script = workdir / "schema.sql"
            args = [tools.path("pg_restore"), "--schema-only", "-f", str(script)]
            with catalog.open_object(manifest, obj, identity=identity) as stream:
                if info is not None and info.dump_format == "plain":  # an imported SQL dump is the script itself
                    with open(script, "wb") as out:
                        shutil.copyfileobj(stream, out, CHUNK)
                    done = subprocess.CompletedProcess(args, 0, "", "")
                elif info is not None and info.dump_format == "directory":
                    extract_tar(stream, workdir / "dump")  # read to the end, so the checksum is verified
                    done = subprocess.run([*args, str(workdir / "dump")], capture_output=True, text=True)
                else:
                    done = _pipe_into(args, stream, workdir / "stderr")
            if done.returncode != 0:
                raise RunnerError(f"pg_restore could not read the dump of database {obj.database!r} in backup "
                                  f"{manifest.id}: it {program_ended(done.returncode, done.stderr, tail=800)}",
                                  reason="RestoreFailed")
            with open(script, errors="replace") as lines:
                for line in lines:
                    roles.update(role_names(line.rstrip("\n")))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return roles


def _pipe_into(args: list[str], stream: BinaryIO, errors: Path) -> subprocess.CompletedProcess[str]:
    """Run a program with `stream` as its stdin (read to the end either way, so its checksum is verified)."""
    with open(errors, "wb") as stderr, subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                                         stderr=stderr) as proc:
        assert proc.stdin is not None
        feed_stdin(stream, proc.stdin)
    return subprocess.CompletedProcess(args, proc.returncode, "", errors.read_text(errors="replace"))


def create_roles(params: ConnParams, roles: set[str]) -> None:
    """NOLOGIN roles for the names the dumps need that the throwaway server lacks."""
    with params.connect() as conn:
        existing = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        missing = sorted(roles - existing)
        for role in missing:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    if missing:
        log("verify.roles_created", roles=missing, why="the backup has no globals; the dumps refer to them")
