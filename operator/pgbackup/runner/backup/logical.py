"""Logical backups: `pg_dump` per database plus `pg_dumpall --globals-only`, streamed into storage.

Custom format goes straight from pg_dump's stdout through the pipeline (compress, encrypt, hash, upload): no
temporary copy. Directory format (needed for parallel `-j` dumps) is written to scratch space first and then
streamed as one tar. pg_dump runs uncompressed (-Z0): the pipeline compresses once, with zstd.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pgbackup.api.policy import BackupPolicySpec, Compression
from pgbackup.runner.common.log import Progress, log
from pgbackup.runner.catalog.manifest import DatabaseGrant, DatabaseProperties
from pgbackup.runner.postgres.archive_toc import FORMAT_DIRECTORY, NotApplicable, read_toc
from pgbackup.runner.postgres.children import ChildOutput
from pgbackup.runner.postgres.facts import DatabaseFacts, exported_snapshot, list_databases
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools
from pgbackup.runner.storage.pipeline import StoredObject, store_stream
from pgbackup.runner.storage.base import Storage

KeyFor = Callable[[str], str]
"""Maps an object name inside the backup (e.g. 'databases/shop.dump') to its storage key."""


@dataclass(frozen=True)
class DumpedObject:
    stored: StoredObject
    name: str
    kind: str
    database: str | None = None


@dataclass
class DumpedDatabase:
    facts: DatabaseFacts
    dump_format: str
    properties: DatabaseProperties | None = None


_PROVIDERS: dict[str, Literal["libc", "icu", "builtin"]] = {"c": "libc", "i": "icu", "b": "builtin"}


def database_properties(params: ConnParams, dbname: str) -> DatabaseProperties:
    """What `pg_restore` without --create does not bring back: owner, encoding and locale, privileges,
    `ALTER DATABASE/ROLE ... SET`, connection limit, comment (from pg_database and pg_db_role_setting)."""
    with params.connect(dbname) as conn:
        version = int(conn.execute("SELECT current_setting('server_version_num')::int").fetchone()[0])  # type: ignore[index]
        provider = "d.datlocprovider::text" if version >= 150000 else "NULL"
        locale = "d.datlocale" if version >= 170000 else "d.daticulocale" if version >= 150000 else "NULL"
        rules = "d.daticurules" if version >= 160000 else "NULL"
        row = conn.execute(
            f"SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate::text, "
            f"d.datctype::text, {provider}, {locale}, {rules}, d.datconnlimit, "
            f"shobj_description(d.oid, 'pg_database'), d.datacl IS NULL "
            f"FROM pg_database d WHERE d.datname = current_database()").fetchone()
        assert row is not None
        grants: dict[str, DatabaseGrant] = {}
        for grantee, privilege, grantable in conn.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
                "a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database() "
                "ORDER BY 1, 2").fetchall():
            grant = grants.setdefault(str(grantee), DatabaseGrant(grantee=str(grantee)))
            grant.privileges.append(str(privilege))
            if grantable:
                grant.grantable.append(str(privilege))
        settings: list[str] = []
        role_settings: dict[str, list[str]] = {}
        for role, config in conn.execute(
                "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, s.setconfig "
                "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE d.datname = current_database() ORDER BY 1 NULLS FIRST").fetchall():
            if role is None:
                settings = list(config or [])
            else:
                role_settings[str(role)] = list(config or [])
    return DatabaseProperties(
        owner=row[0], encoding=row[1], collate=row[2], ctype=row[3], locale_provider=_PROVIDERS.get(row[4] or ""),
        locale=row[5], icu_rules=row[6], connection_limit=row[7], comment=row[8],
        acl=None if row[9] else list(grants.values()), settings=settings, role_settings=role_settings)


@dataclass
class LogicalResult:
    objects: list[DumpedObject]
    databases: list[DumpedDatabase]


@dataclass(frozen=True)
class StreamTarget:
    """Where and how objects are stored."""

    storage: Storage
    key_for: KeyFor
    compression: Compression
    recipients: Sequence[str] = ()

    def store(self, source: ChildOutput, name: str, phase: str, **fields: Any) -> StoredObject:
        with source, Progress(phase, **fields) as progress:
            return store_stream(source, self.storage, self.key_for(name), compression=self.compression,
                                recipients=tuple(self.recipients), progress=progress)


def database_object_name(dbname: str, dump_format: str) -> str:
    """Object name of one database's dump; the name is percent-encoded so any database name is a safe key."""
    suffix = "dump" if dump_format == "custom" else "dir.tar"
    return f"databases/{quote(dbname, safe='')}.{suffix}"


GLOBALS_OBJECT = "globals.sql"


def dump_globals(params: ConnParams, tools: PgTools, target: StreamTarget, *, no_role_passwords: bool) -> DumpedObject:
    args = [tools.path("pg_dumpall"), "--globals-only", "--no-password"]
    if no_role_passwords:
        args.append("--no-role-passwords")
    hint = ("on managed services that forbid reading pg_authid set logical.noRolePasswords: true"
            if not no_role_passwords else "check the role's rights")
    log("globals.start", no_role_passwords=no_role_passwords)
    source = ChildOutput(args, env=params.child_env("postgres"), what="pg_dumpall --globals-only", hint=hint,
                         scrub=(params.password or "",))
    stored = target.store(source, GLOBALS_OBJECT, "globals")
    return DumpedObject(stored=stored, name=GLOBALS_OBJECT, kind="globals")


def dump_database(params: ConnParams, tools: PgTools, target: StreamTarget, dbname: str, *, dump_format: str = "custom",
                  jobs: int = 1, scratch: Path | None = None) -> tuple[DumpedObject, DumpedDatabase]:
    """Dump one database in the snapshot whose row counts are recorded (counted while pg_dump runs)."""
    name = database_object_name(dbname, dump_format)
    with exported_snapshot(params, dbname) as exported:
        log("dump.start", database=dbname, format=dump_format, jobs=jobs)
        what = f"pg_dump of database {dbname!r}"
        hint = f"check the server log and the role's rights on database {dbname!r}"
        common = ["--no-password", f"--snapshot={exported.snapshot}", "-Z", "0"]
        env = params.child_env(dbname)
        if dump_format == "custom":
            source = ChildOutput([tools.path("pg_dump"), "-Fc", *common], env=env, what=what, hint=hint,
                                 scrub=(params.password or "",))
            stored = target.store(source, name, "dump", database=dbname)
        else:
            stored = _dump_directory(tools, target, env, name, dbname, jobs, scratch, common, what, hint,
                                     params.password or "")
        facts = exported.facts()  # counted in the same snapshot while pg_dump ran
    properties = database_properties(params, dbname)
    log("dump.done", database=dbname, key=stored.key, size=stored.size, raw_size=stored.raw_size,
        tables=len(facts.row_counts), size_bytes=facts.size_bytes)
    return (DumpedObject(stored=stored, name=name, kind="database", database=dbname),
            DumpedDatabase(facts=facts, dump_format=dump_format, properties=properties))


def tar_members(outdir: Path) -> list[str]:
    """The files of a directory-format dump in the order they go into its tar: toc.dat first, then each table's
    data file in the order of the TOC, then the rest (large objects). A restore then reads it as it would a
    custom-format dump, each table loaded as soon as it has arrived (pgbackup.runner.restore.directory_dump relies on
    this order, which it recognises by toc.dat coming first). A TOC this runner cannot read: the files by name,
    toc.dat not first."""
    names = sorted(path.name for path in outdir.iterdir())
    try:
        toc = read_toc((outdir / "toc.dat").read_bytes(), formats=(FORMAT_DIRECTORY,))
    except (OSError, NotApplicable):
        return sorted(names, key=lambda member: member == "toc.dat")
    first = ["toc.dat", *(entry.filename for entry in toc.entries if entry.filename.endswith(".dat"))]
    present = [member for member in first if member in names]
    return present + [member for member in names if member not in present]


def _dump_directory(tools: PgTools, target: StreamTarget, env: dict[str, str], name: str, dbname: str, jobs: int,
                    scratch: Path | None, common: list[str], what: str, hint: str, password: str) -> StoredObject:
    workdir = Path(tempfile.mkdtemp(prefix="pgbackup-dump-", dir=scratch))
    try:
        outdir = workdir / "dump"
        dump = ChildOutput([tools.path("pg_dump"), "-Fd", "-j", str(jobs), "--no-sync", "-f", str(outdir), *common],
                           env=env, what=what, hint=f"{hint}; a directory-format dump needs scratch space", scrub=(password,))
        with dump:
            for _ in dump:  # pg_dump -Fd writes nothing to stdout; this waits and raises on failure
                pass
        members = workdir / "members"
        members.write_text("".join(f"{member}\n" for member in tar_members(outdir)))
        tar = ChildOutput(["tar", "-C", str(outdir), "-cf", "-", "--verbatim-files-from", "-T", str(members)], env=env,
                          what=f"tar of the dump of {dbname!r}")
        return target.store(tar, name, "dump", database=dbname)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_logical(params: ConnParams, tools: PgTools, spec: BackupPolicySpec, target: StreamTarget,
                scratch: Path | None = None) -> LogicalResult:
    """Globals (optional) and every database the policy names (or all of them)."""
    options = spec.logical
    databases = list(spec.database.databases)
    if not databases:
        with params.connect("postgres") as conn:
            databases = list_databases(conn)
    result = LogicalResult(objects=[], databases=[])
    if options.globals:
        result.objects.append(dump_globals(params, tools, target, no_role_passwords=options.no_role_passwords))
    for dbname in databases:
        dumped, info = dump_database(params, tools, target, dbname, dump_format=options.format, jobs=options.jobs,
                                     scratch=scratch)
        result.objects.append(dumped)
        result.databases.append(info)
    return result
