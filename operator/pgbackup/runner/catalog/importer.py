"""`pgbackup import`: register a dump the replaced scripts made (custom format `.dump`, or `pg_dump | gzip`
`.sql.gz`, each with a `sha256sum` file) as a backup of the catalog, so the history survives the move.

The file's checksum is verified BEFORE anything is written. The dump is then streamed through the normal
pipeline (the policy's compression and encryption, SHA-256 of what is stored) and a manifest is written last,
exactly as for a backup the runner took. A `.sql.gz` is stored decompressed-then-recompressed as a plain SQL
object (dump_format 'plain'): the gzip stream is fully decoded once at import (a truncated file fails here, not
at restore time), every object of the catalog then follows the policy's compression and encryption, and a
restore replays it with psql. Row counts were never recorded for these dumps, so the manifest has none and
restores skip the row-count comparison (imported: true).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from pgbackup import installed_version
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import PolicyConfig
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.common.log import Progress, log
from pgbackup.runner.catalog.manifest import DatabaseInfo, Manifest, ManifestObject
from pgbackup.runner.postgres.tools import find_tools
from pgbackup.runner.storage.pipeline import store_stream
from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.common.timestamps import assume_utc

CUSTOM_MAGIC = b"PGDMP"
GZIP_MAGIC = b"\x1f\x8b"
SHA256_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64}) [ *](?P<name>.+)$")


class ChecksumMismatch(RunnerError):
    reason = "ChecksumMismatch"


@dataclass(frozen=True)
class DumpFile:
    path: Path
    dump_format: str
    """'custom' (pg_dump -Fc) or 'plain' (SQL, possibly gzipped)."""
    gzipped: bool
    sha256: str | None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(sha_file: Path, dump: Path) -> str:
    """The digest `sha256sum` wrote for `dump` (the line naming its file; a one-line file may name another path)."""
    try:
        lines = [line.strip() for line in sha_file.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read the checksum file {sha_file}: {exc.strerror}") from exc
    entries = [m for m in map(SHA256_LINE.match, lines) if m]
    if not entries:
        raise UsageError(f"{sha_file} is not in `sha256sum` format ('<64 hex digits>  <file name>')",
                         reason="ChecksumInvalid")
    named = [m for m in entries if Path(m["name"]).name == dump.name]
    if named:
        return named[0]["digest"].lower()
    if len(entries) == 1:
        return entries[0]["digest"].lower()
    raise UsageError(f"{sha_file} lists {len(entries)} files but none named {dump.name!r}", reason="ChecksumInvalid")


def inspect_dump(path: Path, sha_file: Path | None, *, skip_checksum: bool = False) -> DumpFile:
    """Detect the format and verify the checksum; raises before anything is stored."""
    if not path.is_file():
        raise UsageError(f"{path} is not a file: pass the .dump or .sql.gz file to import")
    if sha_file is None and not skip_checksum:
        default = path.with_name(path.name + ".sha256")
        if not default.is_file():
            raise UsageError(f"no checksum file for {path}: expected {default} (as `sha256sum` wrote it); pass "
                             f"--sha256-file FILE, or --no-checksum to import it unverified", reason="ChecksumMissing")
        sha_file = default
    digest: str | None = None
    if sha_file is not None:
        want = expected_sha256(sha_file, path)
        digest = file_sha256(path)
        if digest != want:
            raise ChecksumMismatch(f"{path} does not match its checksum file {sha_file}: the file has SHA-256 {digest}, "
                                   f"the checksum file says {want}. The dump is damaged or not the one the checksum "
                                   f"was made for; nothing was imported")
    with path.open("rb") as handle:
        head = handle.read(5)
    if head.startswith(CUSTOM_MAGIC):
        return DumpFile(path, "custom", False, digest)
    if head.startswith(GZIP_MAGIC):
        with gzip.open(path, "rb") as inner:
            if inner.read(5).startswith(CUSTOM_MAGIC):
                return DumpFile(path, "custom", True, digest)
        return DumpFile(path, "plain", True, digest)
    return DumpFile(path, "plain", False, digest)


def _chunks(dump: DumpFile) -> Iterator[bytes]:
    opener = gzip.open if dump.gzipped else open
    try:
        with opener(dump.path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; truncation raises EOFError
        raise RunnerError(f"cannot read {dump.path}: {exc}; the file is damaged (e.g. a truncated gzip) and nothing "
                          f"was imported", reason="DumpUnreadable") from exc


def _header(dump: DumpFile, environ: Mapping[str, str]) -> dict[str, str]:
    """dbname / server and pg_dump versions from the dump's own header (pg_restore -l, or the SQL comments)."""
    facts: dict[str, str] = {}
    if dump.dump_format == "custom" and not dump.gzipped:
        tools = find_tools(0, environ)  # the newest pg_restore reads dumps of every older version
        done = subprocess.run([tools.path("pg_restore"), "-l", str(dump.path)], capture_output=True, text=True,
                              env=dict(environ))
        if done.returncode != 0:
            raise RunnerError(f"pg_restore cannot read {dump.path}: {done.stderr.strip()[-500:]}; is it a pg_dump "
                              f"custom-format file?", reason="DumpUnreadable")
        patterns = {"dbname": r"^;\s+dbname: (.+)$", "server": r"^;\s+Dumped from database version: (.+)$",
                    "pg_dump": r"^;\s+Dumped by pg_dump version: (.+)$"}
        text = done.stdout
    else:
        head: list[str] = []
        for chunk in _chunks(dump):
            head.append(chunk[:65536].decode(errors="replace"))
            break
        text = "".join(head)
        connect = re.search(r"^\\(?:connect|c) .*$", text, re.MULTILINE)
        if connect:
            raise UsageError(f"{dump.path} switches databases ({connect.group(0)[:80]!r}): it was made with "
                             f"`pg_dump --create` or pg_dumpall, and replaying it would write into that database "
                             f"instead of the restore target. Import dumps made without --create (one database "
                             f"each); nothing was imported", reason="UnsupportedDump")
        patterns = {"server": r"^-- Dumped from database version (.+)$", "pg_dump": r"^-- Dumped by pg_dump version (.+)$"}
    for key, pattern in patterns.items():
        match = re.search(pattern, text, re.MULTILINE)
        if match:
            facts[key] = match.group(1).strip()
    return facts


def _default_database(dump: DumpFile, header: Mapping[str, str]) -> str:
    if header.get("dbname"):
        return header["dbname"]
    return dump.path.name.split(".", 1)[0]


def import_dump(policy: PolicyConfig, catalog: Catalog, path: Path, *, sha_file: Path | None = None,
                database: str | None = None, taken_at: datetime | None = None, skip_checksum: bool = False,
                environ: Mapping[str, str]) -> Manifest:
    """Verify, store and register one dump file; returns its manifest (written last)."""
    dump = inspect_dump(path, sha_file, skip_checksum=skip_checksum)
    if dump.dump_format == "custom" and dump.gzipped:
        raise UsageError(f"{path} is a gzipped custom-format dump: gunzip it (and its checksum) first, then import "
                         f"the .dump", reason="UnsupportedDump")
    header = _header(dump, environ)
    name = database or _default_database(dump, header)
    when = taken_at or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    when = assume_utc(when)
    spec = policy.spec
    backup_id = catalog.new_id(when)
    suffix = "dump" if dump.dump_format == "custom" else "sql"
    object_name = f"databases/{quote(name, safe='')}.{suffix}"
    recipients = list(spec.encryption.recipients) if spec.encryption else []
    log("import.start", file=str(path), format=dump.dump_format, gzipped=dump.gzipped, database=name,
        backup_id=backup_id, storage=catalog.storage.url)
    with Progress("import", database=name) as progress:
        stored = store_stream(_chunks(dump), catalog.storage, catalog.object_key(backup_id, object_name),
                              compression=spec.compression, recipients=recipients, progress=progress)
    tools = {"pgbackup": installed_version()}
    if header.get("pg_dump"):
        tools["pg_dump"] = header["pg_dump"].split()[0]
    manifest = Manifest(
        id=backup_id, policy=policy.name, namespace=policy.namespace, method="logical",
        started_at=when, completed_at=when, duration_seconds=0.0, size_bytes=stored.size,
        raw_size_bytes=stored.raw_size,
        objects=[ManifestObject.from_stored(stored, backup_id, kind="database", database=name)],
        databases=[DatabaseInfo(name=name, size_bytes=0, dump_format=dump.dump_format)],
        server_version=header.get("server", "unknown"), tools=tools, compression=spec.compression.algorithm,
        encryption_recipients=recipients, imported=True, purpose="imported",
        source=f"{path.name}" + (f" sha256:{dump.sha256}" if dump.sha256 else " (no checksum)"),
    )
    location, _ = catalog.write_manifest(manifest)
    log("import.done", backup_id=backup_id, manifest=location, database=name, raw_size=stored.raw_size)
    return manifest
