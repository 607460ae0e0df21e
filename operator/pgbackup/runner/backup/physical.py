"""Physical backups: `pg_basebackup -D - -Ft -X fetch` streamed through the pipeline as one tar.

Why `-X fetch` to stdout rather than `-X stream` into FIFOs: pg_basebackup refuses a non-empty target
directory (so FIFOs cannot be pre-created) and cannot stream WAL in tar mode to stdout. With `fetch` the WAL
needed for consistency is appended to the same tar at the end of the backup: one object, no temporary copy.
The cost: WAL written during the backup must still be on the server at its end, so `wal_keep_size` (or
continuous WAL archiving, spec.wal) must cover the backup's duration on busy servers. Only the default
tablespace fits in a stdout tar; clusters with extra tablespaces are refused with a clear error.

start/stop LSN, timeline and backup_label are read from the tar stream as it passes (backup_label member)
and from pg_basebackup's verbose output (end point).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.common.log import Progress, log
from pgbackup.runner.backup.logical import DumpedObject, StreamTarget
from pgbackup.runner.postgres.children import ChildOutput
from pgbackup.runner.postgres.facts import ServerInfo
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import PgTools
from pgbackup.runner.storage.pipeline import store_stream
from pgbackup.runner.wal.xlog import parse_lsn, wal_segment_name

BASE_OBJECT = "base.tar"
BLOCK = 512
_CAPTURED = {"backup_label", "./backup_label", "tablespace_map", "./tablespace_map"}


class TarScanner:
    """Follows a tar stream's headers as chunks pass and keeps the contents of a few small members."""

    def __init__(self, wanted: set[str] = _CAPTURED, limit: int = 1 << 20) -> None:
        self.wanted = wanted
        self.limit = limit
        self.members: dict[str, bytes] = {}
        self._header = bytearray()
        self._skip = 0  # bytes of member data (+padding) still to pass
        self._capture: tuple[str, int, bytearray] | None = None
        self._ended = False

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view and not self._ended:
            if self._skip:
                take = min(self._skip, len(view))
                if self._capture is not None:
                    name, size, buffer = self._capture
                    buffer += view[: max(0, min(size - len(buffer), take))]
                self._skip -= take
                view = view[take:]
                if not self._skip and self._capture is not None:
                    self.members[self._capture[0].removeprefix("./")] = bytes(self._capture[2])
                    self._capture = None
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
        if name in self.wanted and size <= self.limit and header[156:157] in (b"0", b"\0"):
            self._capture = (name, size, bytearray())
            if size == 0:
                self.members[name.removeprefix("./")] = b""
                self._capture = None


def _tar_number(field: bytes) -> int:
    if field[0] & 0x80:  # base-256 for sizes beyond 8 GiB
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip() or b"0"
    return int(text, 8)


class ScannedStream:
    """Passes chunks through while a TarScanner reads along."""

    def __init__(self, source: Iterable[bytes]) -> None:
        self.source = source
        self.scanner = TarScanner()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.source:
            self.scanner.feed(chunk)
            yield chunk


@dataclass(frozen=True)
class PhysicalFacts:
    start_lsn: str
    stop_lsn: str
    timeline: int
    start_wal_segment: str
    stop_wal_segment: str
    backup_label: str


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


def run_physical(params: ConnParams, tools: PgTools, server: ServerInfo, target: StreamTarget
                 ) -> tuple[DumpedObject, PhysicalFacts]:
    """Stream the whole cluster (plus the WAL making it consistent) as one tar object."""
    args = [tools.path("pg_basebackup"), "-D", "-", "-Ft", "-X", "fetch", "-c", "fast", "--no-password", "-v",
            "-l", "pgbackup"]
    what = f"pg_basebackup from {params.describe()}"
    hint = ("check that the user has the REPLICATION attribute, pg_hba.conf allows a 'replication' connection, "
            "max_wal_senders > 0, the cluster has no extra tablespaces, and wal_keep_size covers the backup")
    log("basebackup.start", server_version=server.version)
    source = ChildOutput(args, env=params.child_env(), what=what, hint=hint, scrub=(params.password or "",))
    scanned = ScannedStream(source)
    with source, Progress("basebackup") as progress:
        stored = store_stream(scanned, target.storage, target.key_for(BASE_OBJECT), compression=target.compression,
                              recipients=tuple(target.recipients), progress=progress)
    label = scanned.scanner.members.get("backup_label", b"").decode(errors="replace")
    facts = parse_facts(label, source.stderr_text(), server.wal_segment_size)
    log("basebackup.done", key=stored.key, size=stored.size, start_lsn=facts.start_lsn, stop_lsn=facts.stop_lsn)
    return DumpedObject(stored=stored, name=BASE_OBJECT, kind="base"), facts
