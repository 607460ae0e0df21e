"""Physical backups: `pg_basebackup -D - -Ft -X fetch` streamed through the pipeline as one tar.

Why `-X fetch` to stdout rather than `-X stream` into FIFOs: pg_basebackup refuses a non-empty target
directory (so FIFOs cannot be pre-created) and cannot stream WAL in tar mode to stdout. With `fetch` the WAL
needed for consistency is appended to the same tar at the end of the backup: one object, no temporary copy.
The cost: WAL written during the backup must still be on the server at its end, so `wal_keep_size` (or
continuous WAL archiving, spec.wal) must cover the backup's duration on busy servers. Only the default
tablespace fits in a stdout tar; clusters with extra tablespaces are refused with a clear error.

start/stop LSN, timeline and backup_label are read from the tar stream as it passes (backup_label member)
and from pg_basebackup's verbose output (end point). pg_basebackup's backup_manifest (injected into the stdout
tar) is spooled as it passes and stored as an object of its own: the next run's `--incremental` is taken against
it without reading the parent's base.tar.

Who compresses: with zstd and a pg_basebackup that can (PostgreSQL 15+ built with zstd), pg_basebackup itself
(`-Z client-zstd:level=N,workers=T`): its C compressor runs without the pipe carrying the raw tar and without
the Python hop per chunk, which is where our time went compared with `pg_basebackup -Z client-zstd:3`. The
runner decompresses the stream as it passes (a few percent of the compression's cost) to follow the tar, count
its raw size and prove the object decodes, then hashes and stores the compressed bytes as they came: the same
`base.tar.zst` (one standard zstd frame), the same manifest entry. Otherwise the pipeline compresses, as before.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import zstandard

from pgbackup.api.policy import Compression

from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.common.log import Progress, log
from pgbackup.runner.backup.logical import DumpedObject, StreamTarget
from pgbackup.runner.catalog.manifest import BACKUP_MANIFEST_OBJECT
from pgbackup.runner.postgres.children import ChildOutput
from pgbackup.runner.postgres.facts import ServerInfo
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools
from pgbackup.runner.storage.pipeline import SUFFIXES, store_stream
from pgbackup.runner.wal.xlog import parse_lsn, wal_segment_name

BASE_OBJECT = "base.tar"
CLIENT_ZSTD_MAJOR = 15
"""pg_basebackup compresses with zstd itself from this major on (-Z client-zstd:...)."""
BLOCK = 512
_CAPTURED = {"backup_label", "./backup_label", "tablespace_map", "./tablespace_map"}
_SPOOLED = {BACKUP_MANIFEST_OBJECT, f"./{BACKUP_MANIFEST_OBJECT}"}
SPOOL_IN_MEMORY = 1 << 20
"""A spooled member (backup_manifest: ~100 bytes per file of the cluster) stays in memory up to this size, then
goes to a temporary file in the scratch directory."""


class TarScanner:
    """Follows a tar stream's headers as chunks pass; keeps the contents of a few small members (in memory, up to
    `limit` each) and spools the `spooled` ones (any size) into temporary files."""

    def __init__(self, wanted: set[str] = _CAPTURED, limit: int = 1 << 20, *, spooled: set[str] = _SPOOLED,
                 spool_dir: Path | None = None) -> None:
        self.wanted = wanted
        self.limit = limit
        self.members: dict[str, bytes] = {}
        self.spooled_names = spooled
        self.spool_dir = spool_dir
        self.spooled: dict[str, tuple[IO[bytes], int]] = {}
        """Spooled member name -> (file positioned at 0, size)."""
        self._header = bytearray()
        self._skip = 0  # bytes of member data (+padding) still to pass
        self._capture: tuple[str, int, bytearray] | None = None
        self._spool: tuple[str, int, IO[bytes]] | None = None
        self._ended = False

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view and not self._ended:
            if self._skip:
                take = min(self._skip, len(view))
                if self._capture is not None:
                    name, size, buffer = self._capture
                    buffer += view[: max(0, min(size - len(buffer), take))]
                if self._spool is not None:
                    name, size, file = self._spool
                    file.write(view[: max(0, min(size - file.tell(), take))])
                self._skip -= take
                view = view[take:]
                if not self._skip and self._capture is not None:
                    self.members[self._capture[0].removeprefix("./")] = bytes(self._capture[2])
                    self._capture = None
                if not self._skip and self._spool is not None:
                    self._finish_spool()
                continue
            need = BLOCK - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) == BLOCK:
                self._parse_header(bytes(self._header))
                self._header.clear()

    def _parse_header(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            return
        name = header[0:100].split(b"\0", 1)[0].decode(errors="replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode(errors="replace") if header[257:262] == b"ustar" else ""
        if prefix:
            name = f"{prefix}/{name}"
        size = _tar_number(header[124:136])
        self._skip = (size + BLOCK - 1) // BLOCK * BLOCK
        regular = header[156:157] in (b"0", b"\0")
        if name in self.wanted and size <= self.limit and regular:
            self._capture = (name, size, bytearray())
            if size == 0:
                self.members[name.removeprefix("./")] = b""
                self._capture = None
        elif name in self.spooled_names and regular:
            self._spool = (name, size, tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY,
                                                                    dir=str(self.spool_dir) if self.spool_dir else None))
            if size == 0:
                self._finish_spool()

    def _finish_spool(self) -> None:
        assert self._spool is not None
        name, size, file = self._spool
        file.seek(0)
        previous = self.spooled.pop(name.removeprefix("./"), None)
        if previous is not None:
            previous[0].close()
        self.spooled[name.removeprefix("./")] = (file, size)
        self._spool = None

    def close(self) -> None:
        """Remove the spooled members' temporary files."""
        for file, _ in self.spooled.values():
            file.close()
        self.spooled.clear()
        if self._spool is not None:
            self._spool[2].close()
            self._spool = None


def _tar_number(field: bytes) -> int:
    if field[0] & 0x80:  # base-256 for sizes beyond 8 GiB
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip() or b"0"
    return int(text, 8)


class ScannedStream:
    """Passes chunks through while a TarScanner reads along."""

    def __init__(self, source: Iterable[bytes], spool_dir: Path | None = None) -> None:
        self.source = source
        self.scanner = TarScanner(spool_dir=spool_dir)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.source:
            self.scanner.feed(chunk)
            yield chunk


class DecompressedScan:
    """Passes pg_basebackup's zstd-compressed tar through unchanged while decompressing it alongside, so a
    TarScanner can read along and the raw size is known; a stream that does not decode fails the backup."""

    def __init__(self, source: Iterable[bytes], spool_dir: Path | None = None) -> None:
        self.source = source
        self.scanner = TarScanner(spool_dir=spool_dir)
        self.raw_size = 0
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.source:
            try:
                raw = self._decompressor.decompress(chunk)
            except zstandard.ZstdError as exc:
                raise RunnerError(f"pg_basebackup's zstd output does not decode ({exc}); nothing was kept",
                                  reason="BackupFailed") from exc
            if raw:
                self.scanner.feed(raw)
                self.raw_size += len(raw)
            yield chunk
        if not self._decompressor.eof:
            raise RunnerError("pg_basebackup's zstd output ended in the middle of a frame; nothing was kept",
                              reason="BackupFailed")


def client_compression(tools: PgTools, compression: Compression) -> str | None:
    """The `-Z` value that makes pg_basebackup compress the tar as `compression` asks, or None when the
    pipeline has to (gzip/none, pg_basebackup before 15, or a build without zstd)."""
    if compression.algorithm != "zstd" or tools.major < CLIENT_ZSTD_MAJOR:
        return None
    threads = compression.threads or len(os.sched_getaffinity(0))
    spec = f"client-zstd:level={compression.effective_level()}" + (f",workers={threads}" if threads > 1 else "")
    return spec if _accepts_compression(tools.path("pg_basebackup"), spec) else None


@functools.cache
def _accepts_compression(program: str, spec: str) -> bool:
    """Whether this pg_basebackup build takes `-Z spec`: it checks the specification (zstd compiled in,
    workers supported) before connecting, so a connection to a socket that does not exist tells."""
    try:
        probe = subprocess.run([program, "-D", "-", "-Ft", "-X", "fetch", "-Z", spec, "--no-password",
                                "-d", "host=/nonexistent-pgbackup-probe port=1"],
                               stdin=subprocess.DEVNULL, capture_output=True, env={"LC_ALL": "C"}, timeout=30,
                               check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"compression" not in probe.stderr


@dataclass(frozen=True)
class PhysicalFacts:
    start_lsn: str
    stop_lsn: str
    timeline: int
    start_wal_segment: str
    stop_wal_segment: str
    backup_label: str
    system_identifier: str | None = None


def parse_facts(backup_label: str, stderr: str, segment_size: int) -> PhysicalFacts:
    start = re.search(r"START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)", backup_label)
    timeline = re.search(r"START TIMELINE: (\d+)", backup_label)
    stop = re.search(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)", stderr)
    if not start or not timeline:
        raise RunnerError("pg_basebackup's tar holds no readable backup_label; the backup cannot be used",
                          reason="BackupLabelMissing")
    if not stop:
        raise RunnerError(f"pg_basebackup did not report its WAL end point: {stderr[-500:]}", reason="BackupFailed")
    tli = int(timeline.group(1))
    return PhysicalFacts(start_lsn=start.group(1), stop_lsn=stop.group(1), timeline=tli,
                         start_wal_segment=start.group(2),
                         stop_wal_segment=wal_segment_name(tli, parse_lsn(stop.group(1)), segment_size),
                         backup_label=backup_label)


def run_physical(params: ConnParams, tools: PgTools, server: ServerInfo, target: StreamTarget, *,
                 incremental_of: Path | None = None, spool_dir: Path | None = None
                 ) -> tuple[list[DumpedObject], PhysicalFacts]:
    """Stream the whole cluster (plus the WAL making it consistent) as one tar object, and store its
    backup_manifest beside it. `incremental_of`: the parent's backup_manifest, for `pg_basebackup --incremental`."""
    by_client = client_compression(tools, target.compression)
    args = [tools.path("pg_basebackup"), "-D", "-", "-Ft", "-X", "fetch", "-c", "fast", "--no-password", "-v",
            "-l", "pgbackup", *(["-Z", by_client] if by_client else []),
            *([f"--incremental={incremental_of}"] if incremental_of is not None else [])]
    what = f"pg_basebackup from {params.describe()}"
    hint = ("check that the user has the REPLICATION attribute, pg_hba.conf allows a 'replication' connection, "
            "max_wal_senders > 0, the cluster has no extra tablespaces, and wal_keep_size covers the backup")
    log("basebackup.start", server_version=server.version, incremental=incremental_of is not None,
        compression=by_client or f"{target.compression.algorithm} in the runner")
    source = ChildOutput(args, env=params.child_env(), what=what, hint=hint, scrub=(params.password or "",))
    passing: DecompressedScan | ScannedStream
    with source, Progress("basebackup") as progress:
        if by_client:  # stored as it comes: the key and the manifest entry of a runner-compressed zstd object
            passing = DecompressedScan(source, spool_dir)
            stored = store_stream(passing, target.storage, target.key_for(BASE_OBJECT + SUFFIXES["zstd"]),
                                  compression=Compression(algorithm="none"), recipients=tuple(target.recipients),
                                  progress=progress)
            stored = replace(stored, compression="zstd", raw_size=passing.raw_size)
        else:
            passing = ScannedStream(source, spool_dir)
            stored = store_stream(passing, target.storage, target.key_for(BASE_OBJECT),
                                  compression=target.compression, recipients=tuple(target.recipients),
                                  progress=progress)
    scanner = passing.scanner
    try:
        label = scanner.members.get("backup_label", b"").decode(errors="replace")
        facts = parse_facts(label, source.stderr_text(), server.wal_segment_size)
        objects = [DumpedObject(stored=stored, name=BASE_OBJECT, kind="base")]
        spooled = scanner.spooled.get(BACKUP_MANIFEST_OBJECT)
        if spooled is not None:
            file, size = spooled
            facts = replace(facts, system_identifier=_system_identifier(file.read(4096)))
            file.seek(0)
            kept = store_stream(file, target.storage, target.key_for(BACKUP_MANIFEST_OBJECT),
                                compression=target.compression, recipients=tuple(target.recipients))
            objects.append(DumpedObject(stored=kept, name=BACKUP_MANIFEST_OBJECT, kind="other"))
            log("basebackup.manifest_stored", key=kept.key, raw_size=size)
    finally:
        scanner.close()
    log("basebackup.done", key=stored.key, size=stored.size, start_lsn=facts.start_lsn, stop_lsn=facts.stop_lsn)
    return objects, facts


def _system_identifier(head: bytes) -> str | None:
    """The System-Identifier of a backup_manifest (PostgreSQL 17+ write it near the top)."""
    match = re.search(rb'"System-Identifier"\s*:\s*(\d+)', head)
    return match.group(1).decode() if match else None
