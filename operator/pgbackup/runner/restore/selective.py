"""Selective restore: only some schemas/tables of a logical backup, chosen from pg_restore's table of contents.

How objects are chosen: `pg_restore -l` lists the dump's entries; `pg_restore -s -f -` prints their SQL, each
under a '-- Name: ...; Type: ...; Schema: ...' header. An entry that hangs off a table (index, constraint,
foreign key, default, trigger, identity/owned sequence) is kept when every table its SQL names is included,
so a foreign key to a table left out is skipped (and logged) instead of failing the restore. The kept
entries go to `pg_restore -L list -f script.sql`, and psql replays that script in ONE transaction.

Overwrite of an existing database (RestoreRequest target.overwrite, carried out by
pgbackup.runner.restore.execute): the selection is first restored into a
temporary database and checked there (row counts of the included tables, extensions, SQL checks); then the
same checked script runs on the target inside one transaction that first drops the included tables (no
CASCADE: a view or another table's foreign key on them makes the transaction fail, and nothing changes),
recreates them and asserts their row counts before COMMIT. Every other table of the target is untouched, and
the replaced tables' old contents are in the safety backup taken before.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.catalog.manifest import Manifest, ManifestObject
from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.common.errors import RunnerError, UsageError, program_ended
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.postgres.facts import server_info
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools
from pgbackup.runner.restore.ddl import RestoreSpace
from pgbackup.runner.restore.ownership import Ownership
from pgbackup.runner.restore.logical import RestoreReport, TableCheck
from pgbackup.runner.restore.reading import tools_for, damage_reported, extract_tar, pick_database

Table = tuple[str, str]
"""(schema, name)"""

MULTI_WORD_DESCS = ("MATERIALIZED VIEW DATA", "SEQUENCE OWNED BY", "FK CONSTRAINT", "TABLE DATA", "SEQUENCE SET",
                    "DEFAULT ACL", "MATERIALIZED VIEW", "INDEX ATTACH", "FOREIGN TABLE", "LARGE OBJECT", "BLOB DATA",
                    "BLOBS", "ROW SECURITY", "EVENT TRIGGER", "SERVER", "USER MAPPING", "TEXT SEARCH CONFIGURATION")
ATTACHED = frozenset({"INDEX", "CONSTRAINT", "FK CONSTRAINT", "DEFAULT", "TRIGGER", "SEQUENCE OWNED BY", "POLICY",
                      "ROW SECURITY"})
TOC_LINE = re.compile(r"^(?P<id>\d+); (?P<tableoid>\d+) (?P<oid>\d+) (?P<rest>.*)$")
SCRIPT_HEADER = re.compile(r"^-- (?:Data for )?Name: (?P<name>.*); Type: (?P<type>[^;]*); Schema: (?P<schema>[^;]*);"
                           r" Owner: .*$", re.MULTILINE)
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
QUALIFIED = re.compile(rf"(?<![\w\"$.])({_IDENT})\.({_IDENT})")


class ObjectNotInBackup(UsageError):
    reason = "ObjectNotInBackup"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(table: Table) -> str:
    return f"{quote_ident(table[0])}.{quote_ident(table[1])}"


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


@dataclass(frozen=True)
class Selection:
    """What to restore: whole schemas and single tables."""

    schemas: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()

    @classmethod
    def parse(cls, schemas: Iterable[str], tables: Iterable[str]) -> Selection:
        parsed: list[Table] = []
        for name in tables:
            parts = name.split(".")
            if len(parts) > 2 or not all(parts):
                raise UsageError(f"{name!r} is not a table name: write 'schema.table' or 'table' (= public.table)",
                                 reason="InvalidRestoreRequest")
            parsed.append((parts[0], parts[1]) if len(parts) == 2 else ("public", parts[0]))
        selection = cls(schemas=tuple(dict.fromkeys(schemas)), tables=tuple(dict.fromkeys(parsed)))
        if not selection.schemas and not selection.tables:
            raise UsageError("a selective restore needs at least one schema or table", reason="InvalidRestoreRequest")
        return selection

    def describe(self) -> str:
        parts = [f"schema {s}" for s in self.schemas] + [f"{s}.{t}" for s, t in self.tables]
        return ", ".join(parts)


@dataclass(frozen=True)
class TocEntry:
    line: str
    desc: str
    schema: str
    tag: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.desc, self.schema, self.tag


def parse_toc(text: str) -> list[TocEntry]:
    """The entries of `pg_restore -l` (comment lines skipped). Schema is '-' for objects without one."""
    entries: list[TocEntry] = []
    for line in text.splitlines():
        match = TOC_LINE.match(line)
        if not match:
            continue
        rest = match["rest"]
        desc = next((d for d in MULTI_WORD_DESCS if rest.startswith(d + " ")), rest.split(" ", 1)[0])
        fields = rest[len(desc) + 1:]
        schema, _, remainder = fields.partition(" ")
        tag = remainder.rsplit(" ", 1)[0] if " " in remainder else remainder  # the last word is the owner
        entries.append(TocEntry(line=line, desc=desc, schema=schema, tag=tag))
    return entries


def parse_script(text: str) -> dict[tuple[str, str, str], str]:
    """(type, schema, name) -> the SQL pg_restore prints for that entry."""
    headers = list(SCRIPT_HEADER.finditer(text))
    out: dict[tuple[str, str, str], str] = {}
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        key = (header["type"], header["schema"], header["name"])
        out[key] = out.get(key, "") + text[header.end():end]
    return out


def tables_named(statement: str, known: set[Table]) -> set[Table]:
    found = {(_unquote(m[1]), _unquote(m[2])) for m in QUALIFIED.finditer(statement)}
    return found & known


@dataclass
class SelectedList:
    entries: list[TocEntry]
    tables: list[Table]
    sequences: list[Table]
    schemas: list[str]
    skipped: list[str] = field(default_factory=list)


def select_entries(toc: Sequence[TocEntry], statements: Mapping[tuple[str, str, str], str], selection: Selection,
                   backup_id: str, database: str) -> SelectedList:
    """The entries of the included objects; unknown schemas/tables raise ObjectNotInBackup."""
    known = {(e.schema, e.tag) for e in toc if e.desc == "TABLE"}
    schemas_seen = {e.schema for e in toc} | {e.tag for e in toc if e.desc == "SCHEMA"}
    missing = [f"schema {s!r}" for s in selection.schemas if s not in schemas_seen]
    missing += [f"table {s}.{t}" for s, t in selection.tables if (s, t) not in known]
    if missing:
        listing = ", ".join(f"{s}.{t}" for s, t in sorted(known)[:30]) or "none"
        raise ObjectNotInBackup(f"database {database!r} of backup {backup_id} has no {', '.join(missing)}; nothing was "
                                f"changed. Its tables are: {listing}")
    included: set[Table] = set(selection.tables) | {t for t in known if t[0] in selection.schemas}

    def attached(entry: TocEntry) -> bool | None:
        """True: hangs off included tables only; False: off others too (skipped); None: off none."""
        refs = tables_named(statements.get(entry.key, ""), known)
        if not refs or not refs & included:
            return None
        return refs <= included

    sequences: set[Table] = set()
    for entry in toc:
        if entry.desc == "SEQUENCE OWNED BY" and attached(entry):
            sequences.add((entry.schema, entry.tag))
        elif entry.desc == "SEQUENCE" and (entry.schema in selection.schemas or attached(entry)):
            sequences.add((entry.schema, entry.tag))
    kept: list[TocEntry] = []
    skipped: list[str] = []
    names = {*(f"TABLE {t}" for _, t in included), *(f"SEQUENCE {s}" for _, s in sequences)}
    for entry in toc:
        obj = (entry.schema, entry.tag)
        if entry.desc == "EXTENSION":
            keep = True  # CREATE EXTENSION IF NOT EXISTS: types and operator classes the tables may use
        elif entry.desc in ("TABLE", "TABLE DATA"):
            keep = obj in included
        elif entry.desc in ("SEQUENCE", "SEQUENCE SET"):
            keep = obj in sequences
        elif entry.desc in ATTACHED:
            verdict = attached(entry)
            keep = bool(verdict)
            if verdict is False:
                skipped.append(f"{entry.desc} {entry.schema}.{entry.tag}")
        elif entry.desc in ("ACL", "COMMENT"):
            keep = entry.tag in names and any(entry.schema == s for s, _ in included | sequences)
        else:
            keep = False
        if keep:
            kept.append(entry)
    return SelectedList(entries=kept, tables=sorted(included), sequences=sorted(sequences),
                        schemas=sorted({s for s, _ in included | sequences}), skipped=skipped)


@dataclass
class PreparedSelection:
    selected: SelectedList
    script: Path
    bytes_read: int


def _run(args: list[str], env: Mapping[str, str], what: str) -> str:
    done = subprocess.run(args, env=dict(env), capture_output=True, text=True)
    if done.returncode != 0:
        raise RunnerError(f"{what} failed: {Path(args[0]).name} {program_ended(done.returncode, done.stderr)}",
                          reason="RestoreFailed")
    return done.stdout


@contextmanager
def prepare_selection(catalog: Catalog, manifest: Manifest, obj: ManifestObject, dump_format: str,
                      selection: Selection, tools: PgTools, identity: str | None, scratch: Path | None,
                      env: Mapping[str, str], script_args: Sequence[str] = ()) -> Iterator[PreparedSelection]:
    """Download the dump to scratch space, choose the entries and write the SQL script of just those (with
    `script_args`, e.g. pg_restore's --no-owner / --no-privileges). Reads only: an unknown table or schema fails
    here, before the target is touched."""
    if dump_format == "plain":
        raise UsageError(f"backup {manifest.id} holds a plain SQL dump (imported): a selective restore needs a custom "
                         f"or directory-format dump; restore the whole database instead", reason="UnsupportedRestore")
    workdir = Path(tempfile.mkdtemp(prefix="pgbackup-selective-", dir=scratch))
    try:
        dump = workdir / ("dump" if dump_format == "directory" else "dump.custom")
        read = 0
        with damage_reported(catalog, manifest, obj, "nothing was restored or changed"), \
                catalog.open_object(manifest, obj, identity=identity) as stream:
            if dump_format == "directory":
                extract_tar(stream, dump)
                read = obj.raw_size
            else:
                with dump.open("wb") as out:
                    while chunk := stream.read(CHUNK):
                        out.write(chunk)
                        read += len(chunk)
        what = f"pg_restore of backup {manifest.id} database {obj.database!r}"
        toc = parse_toc(_run([tools.path("pg_restore"), "-l", str(dump)], env, f"{what} (listing)"))
        statements = parse_script(_run([tools.path("pg_restore"), "-s", "-f", "-", str(dump)], env,
                                       f"{what} (schema)"))
        selected = select_entries(toc, statements, selection, manifest.id, str(obj.database))
        if selected.skipped:
            log_warning("restore.selective.skipped", objects=selected.skipped,
                        hint="they reference tables that are not restored; include those tables to keep them")
        listing = workdir / "list.txt"
        listing.write_text("".join(e.line + "\n" for e in selected.entries))
        script = workdir / "selection.sql"
        _run([tools.path("pg_restore"), "-L", str(listing), *script_args, "-f", str(script), str(dump)], env,
             f"{what} (script)")
        log("restore.selective.prepared", backup_id=manifest.id, database=obj.database,
            tables=[f"{s}.{t}" for s, t in selected.tables], sequences=[f"{s}.{t}" for s, t in selected.sequences],
            entries=len(selected.entries))
        yield PreparedSelection(selected=selected, script=script, bytes_read=read)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def apply_selection(target: ConnParams, database: str, tools: PgTools, prepared: PreparedSelection, *,
                    replace: bool, expected_rows: Mapping[str, int] | None = None, lock_timeout: str = "60s",
                    ownership: Ownership = Ownership()) -> None:
    """Replay the script into `database` in one transaction. `replace`: drop the included tables (and sequences)
    first, in that same transaction; `expected_rows`: assert those counts before COMMIT."""
    selected = prepared.selected
    prelude = [f"SET LOCAL lock_timeout = '{lock_timeout}';"]
    prelude += [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(s)};" for s in selected.schemas]
    if replace:
        prelude += [f"DROP TABLE IF EXISTS {qualified(t)};" for t in selected.tables]
        prelude += [f"DROP SEQUENCE IF EXISTS {qualified(s)};" for s in selected.sequences]
    postlude = []
    for name, count in sorted((expected_rows or {}).items()):
        table = tuple(name.split(".", 1))
        postlude.append(f"DO $pgbackup$ BEGIN IF (SELECT count(*) FROM {qualified(table)}) <> {int(count)} THEN "  # type: ignore[arg-type]
                        f"RAISE EXCEPTION 'row count of % differs from the checked restore (% rows)', "
                        f"{_literal(name)}, {int(count)}; END IF; END $pgbackup$;")
    workdir = prepared.script.parent
    (workdir / "prelude.sql").write_text("\n".join(prelude) + "\n")
    (workdir / "postlude.sql").write_text("\n".join(postlude) + "\n")
    args = [tools.path("psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "--single-transaction",
            "-d", database, "-f", str(workdir / "prelude.sql"), "-f", str(prepared.script),
            "-f", str(workdir / "postlude.sql")]
    done = subprocess.run(args, env=target.child_env(database), capture_output=True, text=True)
    if done.returncode != 0:
        errors = target.scrub(done.stderr.strip()[-1200:])
        refused = (ownership.explain_refusal(errors, target, database, changed=f"the selective restore was rolled "
                                             f"back, {database!r} is unchanged") if replace
                   else ownership.explain_refusal(errors, target, database))
        if refused is not None:
            raise refused
        hint = (" Another object (a view, or a foreign key of a table not restored) depends on a replaced table: "
                "include it or drop it first." if "depend" in errors else "")
        raise RunnerError(f"selective restore into {database!r} on {target.describe()} failed and was rolled back, "
                          f"{database!r} is unchanged: {errors}.{hint}", reason="RestoreFailed")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def count_tables(target: ConnParams, database: str, tables: Iterable[Table]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with target.connect(database) as conn:
        for schema, name in tables:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema),
                                                                             sql.Identifier(name))).fetchone()
            counts[f"{schema}.{name}"] = int(row[0]) if row else 0
    return counts


def dump_format_of(manifest: Manifest, obj: ManifestObject) -> str:
    info = next((d for d in manifest.databases if d.name == obj.database), None)
    return info.dump_format if info else "custom"


def expected_rows(manifest: Manifest, obj: ManifestObject, tables: Iterable[Table]) -> dict[str, int]:
    info = next((d for d in manifest.databases if d.name == obj.database), None)
    rows = info.row_counts if info else {}
    return {f"{s}.{t}": rows[f"{s}.{t}"] for s, t in tables if f"{s}.{t}" in rows}


def restore_selected(catalog: Catalog, backup_id: str, target: ConnParams, target_database: str, selection: Selection,
                     identity: str | None = None, *, source_database: str | None = None, scratch: Path | None = None,
                     environ: Mapping[str, str] | None = None, ownership: Ownership = Ownership()) -> RestoreReport:
    """`pgbackup restore ID --target-database NEW --table ... --schema ...`: the selection into a NEW database;
    row counts compared for the included tables only."""
    environ = os.environ if environ is None else environ
    started = time.monotonic()
    manifest = catalog.get(backup_id)
    if manifest.method != "logical":
        raise UsageError(f"backup {backup_id} is a physical backup: a selective restore needs a logical backup")
    obj = pick_database(manifest, source_database)
    with target.connect("postgres") as conn:
        server = server_info(conn)
    tools = tools_for(manifest, server.major, environ)
    with prepare_selection(catalog, manifest, obj, dump_format_of(manifest, obj), selection, tools, identity, scratch,
                           target.child_env("postgres"), ownership.pg_restore_args()) as prepared:
        with target.connect("postgres") as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target_database,)).fetchone():
                raise UsageError(f"database {target_database!r} already exists on {target.describe()}: a selective "
                                 f"restore with `pgbackup restore` creates a new database; replace tables of an "
                                 f"existing one with a RestoreRequest (target.overwrite: true)",
                                 reason="TargetDatabaseExists")
        info = next((d for d in manifest.databases if d.name == obj.database), None)
        properties = ownership.recorded(info.properties if info else None)
        with RestoreSpace(target, server.version_num) as space:  # aside first, the name only when complete
            space.drop_leftovers(target_database)
            with space.aside(target_database, manifest.id, properties) as temp:
                apply_selection(target, temp, tools, prepared, replace=False, ownership=ownership)
                actual = count_tables(target, temp, prepared.selected.tables)
        expected = expected_rows(manifest, obj, prepared.selected.tables)
    report = RestoreReport(backup_id=backup_id, source_database=str(obj.database), target_database=target_database,
                           bytes_read=prepared.bytes_read)
    report.tables = [TableCheck(t, expected.get(t), actual.get(t), checked=not manifest.imported) for t in sorted(actual)]
    report.duration_seconds = round(time.monotonic() - started, 3)
    log("restore.selective.done", backup_id=backup_id, target_database=target_database, tables=sorted(actual),
        mismatches=[c.table for c in report.mismatches])
    return report
