"""Counting what storage listings cost: requests sent to S3 and keys they return (a boto3 event hook on the real
client, nothing mocked), and listings asked of a Storage (a delegating wrapper)."""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pgbackup.runner.storage.base import ObjectInfo, Storage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.s3 import S3Bucket
from tests.runner.claim_support import DelegatingStorage


@dataclass
class ListingCounter:
    """ListObjectsV2 requests an S3Storage sent, and the keys and directories (CommonPrefixes) they returned."""

    requests: int = 0
    keys: builtins.list[str] = field(default_factory=builtins.list)
    dirs: builtins.list[str] = field(default_factory=builtins.list)

    def attach(self, storage: S3Storage) -> ListingCounter:
        storage.client.meta.events.register("after-call.s3.ListObjectsV2", self._count)
        return self

    def _count(self, parsed: dict[str, Any], **_: Any) -> None:
        self.requests += 1
        self.keys += [item["Key"] for item in parsed.get("Contents", [])]
        self.dirs += [common["Prefix"] for common in parsed.get("CommonPrefixes", [])]

    def reset(self) -> None:
        self.requests, self.keys, self.dirs = 0, [], []

    def keys_under(self, part: str) -> builtins.list[str]:
        return [key for key in self.keys if f"/{part}" in f"/{key}"]


class CountingStorage(DelegatingStorage):
    """A real storage that counts the listings asked of it (every kind) and the objects they yielded."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.listings: builtins.list[tuple[str, str]] = []
        self.yielded: builtins.list[str] = []

    def _counted(self, kind: str, prefix: str, found: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
        self.listings.append((kind, prefix))
        for info in found:
            self.yielded.append(info.key)
            yield info

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._counted("list", prefix, self.inner.list(prefix))

    def list_after(self, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        return self._counted("list_after", prefix, self.inner.list_after(prefix, start_after))

    def list_dirs(self, prefix: str = "") -> Iterator[str]:
        self.listings.append(("list_dirs", prefix))
        return self.inner.list_dirs(prefix)


def segment_name(number: int) -> str:
    """The name of WAL segment `number` on timeline 1 (16 MiB segments)."""
    return f"00000001{number // 256:08X}{number % 256:08X}"


def put_wal_file(bucket: S3Bucket, name: str) -> list[str]:
    """Archive `name` as the streamer does (data object, then its sidecar), stored directly; returns its keys."""
    key = f"wal/00000001/{name}"
    data = b"wal"
    sidecar = {"version": 1, "name": name, "key": f"{key}.zst", "size": len(data),
               "sha256": hashlib.sha256(data).hexdigest(), "compression": "zstd", "encrypted": False,
               "raw_size": 16 * 1024 * 1024, "raw_sha256": hashlib.sha256(name.encode()).hexdigest(),
               "archived_at": datetime.now(UTC).isoformat()}
    bucket.client.put_object(Bucket=bucket.bucket, Key=f"{bucket.prefix}/{key}.zst", Body=data)
    bucket.client.put_object(Bucket=bucket.bucket, Key=f"{bucket.prefix}/{key}.meta.json",
                             Body=json.dumps(sidecar).encode())
    return [f"{key}.zst", f"{key}.meta.json"]


def fill_wal_archive(bucket: S3Bucket, segments: int) -> None:
    """Segments 1..`segments` archived (two objects each)."""
    with ThreadPoolExecutor(8) as pool:
        builtins.list(pool.map(lambda number: put_wal_file(bucket, segment_name(number)), range(1, segments + 1)))
