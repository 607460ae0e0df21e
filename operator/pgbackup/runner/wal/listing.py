"""What the WAL archive holds, as listings find it: where each WAL file is stored (wal/<timeline>/<name>[.zst|.gz]
[.age] and its sidecar <name>.meta.json, the commit marker), the archived segments a listing shows, and a listing
kept current incrementally (for the status the streamer serves)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pgbackup.runner.common.timestamps import as_utc
from pgbackup.runner.storage.base import ObjectInfo, Storage
from pgbackup.runner.storage.pipeline import AGE_SUFFIX, SUFFIXES
from pgbackup.runner.wal.xlog import WalSegment, classify, parse_segment_name, timeline_of

WAL_PREFIX = "wal/"
SIDECAR_SUFFIX = ".meta.json"
PARTIAL_SUFFIX = ".partial"


class HasStorage(Protocol):
    """A WalArchive, as far as listing it goes."""

    @property
    def storage(self) -> Storage: ...


@dataclass(frozen=True, order=True)
class ArchivedSegment:
    """A full segment or a .partial in the archive (sorted by timeline, position, full before partial)."""

    name: str = field(compare=False)
    timeline: int
    segment: WalSegment
    archived_at: datetime = field(compare=False)
    """When its commit marker was written (the sidecar's modification time)."""
    size: int = field(compare=False)
    """Stored bytes."""
    partial: bool


@dataclass
class ArchivedFiles:
    """The stored keys of one archived name."""

    data: list[ObjectInfo] = field(default_factory=list)
    sidecar: ObjectInfo | None = None


@dataclass(frozen=True)
class WalListing:
    """Archived WAL files as one listing found them: name -> its stored objects."""

    files: dict[str, ArchivedFiles]

    @property
    def segments(self) -> list[ArchivedSegment]:
        """Full segments and .partials (a .partial whose full segment exists is left out), sorted."""
        return segments_of(self.files)

    @property
    def labels(self) -> list[str]:
        """Backup history files (<segment>.<offset>.backup), sorted."""
        return sorted(name for name, stored in self.files.items()
                      if classify(name) == "backup_label" and stored.sidecar is not None and stored.data)


def wal_dir(timeline: int) -> str:
    return f"{WAL_PREFIX}{timeline:08X}/"


def wal_key(name: str) -> str:
    """The key (without compression/encryption suffixes) a WAL file is stored under."""
    return wal_dir(timeline_of(name)) + name


def name_of_key(key: str) -> tuple[str, bool] | None:
    """(WAL file name, is sidecar) for a key under wal/, None for anything else (temp files, strangers)."""
    base = key.rsplit("/", 1)[-1]
    if base.endswith(SIDECAR_SUFFIX):
        name = base[: -len(SIDECAR_SUFFIX)]
        return (name, True) if classify(name) != "unknown" else None
    if base.endswith(AGE_SUFFIX):
        base = base[: -len(AGE_SUFFIX)]
    for suffix in (s for s in SUFFIXES.values() if s):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return (base, False) if classify(base) != "unknown" else None


class IncrementalWalListing:
    """The archive's segments, kept current by listings that start after what cannot change any more (S3
    StartAfter): after the first (full) listing, a refresh returns only the files archived since, plus the
    .partial being shipped. A file is settled once it is committed (data and sidecar) and is not a .partial;
    every key up to the last settled file's is taken from the previous listing. Deleting does not show in such a
    listing: refresh(full=True) now and then (after retention) lists everything again."""

    def __init__(self, archive: HasStorage) -> None:
        self.archive = archive
        self._files: dict[str, ArchivedFiles] | None = None

    def refresh(self, *, full: bool = False) -> list[ArchivedSegment]:
        storage = self.archive.storage
        if full or self._files is None:
            self._files = collect_files(storage.list(WAL_PREFIX))
            return segments_of(self._files)
        start = self._settled_up_to(self._files)
        fresh = collect_files(storage.list_after(WAL_PREFIX, start))
        merged: dict[str, ArchivedFiles] = {}
        for name, stored in self._files.items():  # keys up to `start` as known; beyond it as listed now
            kept = ArchivedFiles([info for info in stored.data if info.key <= start],
                          stored.sidecar if stored.sidecar is not None and stored.sidecar.key <= start else None)
            if kept.data or kept.sidecar is not None:
                merged[name] = kept
        for name, stored in fresh.items():
            entry = merged.setdefault(name, ArchivedFiles())
            entry.data += stored.data
            entry.sidecar = stored.sidecar or entry.sidecar
        self._files = merged
        return segments_of(merged)

    @staticmethod
    def _settled_up_to(files: dict[str, ArchivedFiles]) -> str:
        """The greatest key of a settled file ('' when there is none: everything is listed)."""
        settled = [max([info.key for info in stored.data] + [stored.sidecar.key])
                   for name, stored in files.items()
                   if stored.sidecar is not None and stored.data and classify(name) != "partial"]
        return max(settled, default="")


def collect_files(found: Iterable[ObjectInfo]) -> dict[str, ArchivedFiles]:
    """Listed keys under wal/ grouped by the WAL file they store (temp files and strangers left out)."""
    files: dict[str, ArchivedFiles] = {}
    for info in found:
        parsed = name_of_key(info.key)
        if parsed is None:
            continue
        name, is_sidecar = parsed
        entry = files.setdefault(name, ArchivedFiles())
        if is_sidecar:
            entry.sidecar = info
        else:
            entry.data.append(info)
    return files


def segments_of(files: dict[str, ArchivedFiles]) -> list[ArchivedSegment]:
    found: list[ArchivedSegment] = []
    for name, stored in files.items():
        kind = classify(name)
        if kind not in ("segment", "partial") or stored.sidecar is None or not stored.data:
            continue
        if kind == "partial":
            full = files.get(name[: -len(PARTIAL_SUFFIX)])
            if full is not None and full.sidecar is not None:
                continue
        segment = parse_segment_name(name)
        found.append(ArchivedSegment(timeline=segment.timeline, segment=segment, partial=kind == "partial",
                                     name=name, archived_at=as_utc(stored.sidecar.modified),
                                     size=max(stored.data, key=lambda o: o.modified).size))
    return sorted(found)
