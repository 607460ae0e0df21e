"""How far a WAL archive can restore, counting only files whose checksum verifies (the RPO benchmark's reading).

Each reader lists the archive, fetches every file it has not verified yet and checks it as a restore would, and
returns the WAL position (LSN, bytes) up to which the archive holds the WAL without a hole: the end of the last
segment of the unbroken run from the oldest archived one, or inside a trailing `.partial` the end of its data
(pg_receivewal pads a .partial with zeros to the segment size; the data ends at its last non-zero byte). A file
that fails its check ends the run there and is counted in `failures`.

- pgbackup's archive (`wal-stream` and `wal-push` write it): `WalArchive.fetch`, the code `pgbackup wal-fetch`
  runs as restore_command, which checks the SHA-256 recorded in the file's sidecar.
- pgBackRest's archive in S3: `<segment>-<sha1>.gz` objects, gunzipped and checked against the SHA-1 in the name,
  as `pgbackrest archive-get` does.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.storage.pipeline import IntegrityError
from pgbackup.runner.wal.archive import WalArchive, archive_for_policy
from pgbackup.runner.wal.xlog import DEFAULT_SEGMENT_SIZE, parse_segment_name

SEGMENT = DEFAULT_SEGMENT_SIZE  # the benchmark's server runs with the default wal_segment_size


@dataclass(frozen=True)
class Piece:
    """One verified archived file: the segment number it holds and where its verified WAL ends."""

    number: int
    end_lsn: int


def restorable_end(pieces: Sequence[Piece]) -> int | None:
    """The end of the unbroken run of segments from the oldest one (None for an empty archive). `pieces` hold at
    most one entry per segment number; a partial's end lies inside its segment, so nothing can follow it."""
    end: int | None = None
    expected: int | None = None
    for piece in sorted(pieces, key=lambda p: p.number):
        if expected is not None and piece.number != expected:
            break
        end = piece.end_lsn
        if piece.end_lsn < (piece.number + 1) * SEGMENT:  # a partial: the WAL after it is not archived
            break
        expected = piece.number + 1
    return end


def data_end(raw: bytes) -> int:
    """Bytes of WAL data in a zero-padded .partial (up to its last non-zero byte)."""
    return len(raw.rstrip(b"\0"))


class PgbackupReader:
    """The archive under a policy's storage, read back as `pgbackup wal-fetch --allow-partial` reads it."""

    def __init__(self, policy: Mapping[str, Any], environ: Mapping[str, str], scratch: Path) -> None:
        self.archive: WalArchive = archive_for_policy(policy_from_document(dict(policy), "the RPO benchmark"),
                                                      environ=dict(environ))
        self.scratch = scratch
        self.verified: dict[str, Piece] = {}  # full segments: immutable once their sidecar exists
        self.partials: dict[tuple[str, int, str], Piece] = {}  # (name, stored size, archived at) -> piece
        self.failures = 0

    def restorable(self) -> tuple[float, int | None]:
        """(monotonic time of the listing, the LSN the archive restores to)."""
        listed_at = time.monotonic()
        pieces: list[Piece] = []
        for archived in self.archive.segments(1):
            number = archived.segment.number(SEGMENT)
            if not archived.partial:
                piece = self.verified.get(archived.name) or self._fetch(archived.name, number, partial=False)
                if piece is None:
                    break
                self.verified[archived.name] = piece
            else:
                key = (archived.name, archived.size, archived.archived_at.isoformat())
                piece = self.partials.get(key) or self._fetch(archived.name, number, partial=True)
                if piece is None:
                    break
                self.partials = {key: piece}
            pieces.append(piece)
        return listed_at, restorable_end(pieces)

    def _fetch(self, name: str, number: int, *, partial: bool) -> Piece | None:
        segment = parse_segment_name(name.removesuffix(".partial")).name
        dest = self.scratch / "rpo-fetched"
        try:
            if not self.archive.fetch(segment, dest, allow_partial=partial):
                return None  # a .partial superseded by its full segment meanwhile: the next listing has it
        except IntegrityError:
            self.failures += 1
            return None
        length = data_end(dest.read_bytes()) if partial else SEGMENT
        dest.unlink()
        return Piece(number, number * SEGMENT + length)


_PGBACKREST_SEGMENT = re.compile(r"/([0-9A-F]{24})-([0-9a-f]{40})\.gz$")


class PgbackrestReader:
    """pgBackRest's archive in an S3 bucket (repo1-path under `prefix`, compress-type=gz)."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.verified: dict[str, Piece] = {}
        self.failures = 0

    def restorable(self) -> tuple[float, int | None]:
        listed_at = time.monotonic()
        keys = [obj["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=self.prefix) for obj in page.get("Contents", [])]
        pieces: list[Piece] = []
        for key in sorted(keys):
            match = _PGBACKREST_SEGMENT.search(key)
            if match is None:
                continue  # archive.info, history files, backup labels
            piece = self.verified.get(key) or self._check(key, match.group(1), match.group(2))
            if piece is None:
                continue  # a bad copy: the run breaks at its segment
            self.verified[key] = piece
            pieces.append(piece)
        return listed_at, restorable_end(pieces)

    def _check(self, key: str, name: str, sha1: str) -> Piece | None:
        raw = gzip.decompress(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        if hashlib.sha1(raw).hexdigest() != sha1:  # noqa: S324 - pgBackRest's own checksum of the segment
            self.failures += 1
            return None
        number = parse_segment_name(name).number(SEGMENT)
        return Piece(number, (number + 1) * SEGMENT)
