"""`pgbackup check`: what re-reading a backup's objects found, object by object (size and SHA-256 against the
manifest)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from pgbackup.runner.catalog.manifest import ManifestObject
from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.common.log import Progress
from pgbackup.runner.storage.base import ObjectNotFound, Storage, StorageError

ObjectStatus = Literal["ok", "missing", "truncated", "oversized", "corrupt", "unreadable", "changed"]


@dataclass(frozen=True)
class ObjectCheck:
    key: str
    status: ObjectStatus
    expected_size: int
    actual_size: int | None = None
    expected_sha256: str = ""
    actual_sha256: str | None = None
    message: str = ""


@dataclass
class CheckReport:
    backup_id: str
    objects: list[ObjectCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.status == "ok" for o in self.objects)

    @property
    def problems(self) -> list[ObjectCheck]:
        return [o for o in self.objects if o.status != "ok"]

    def summary(self) -> str:
        if self.ok:
            return f"backup {self.backup_id}: all {len(self.objects)} objects match their size and SHA-256"
        lines = [f"backup {self.backup_id}: {len(self.problems)} of {len(self.objects)} objects are damaged:"]
        lines += [f"  {p.key}: {p.status}: {p.message}" for p in self.problems]
        return "\n".join(lines)


def check_object(storage: Storage, key: str, obj: ManifestObject, progress: Progress) -> ObjectCheck:
    """Re-read the stored object `key` and compare its size and SHA-256 with the manifest's entry `obj`."""
    location = storage.location(key)
    digest = hashlib.sha256()
    size = 0
    try:
        with storage.open_reader(key) as reader:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                progress.add(len(chunk))
    except ObjectNotFound:
        return ObjectCheck(obj.key, "missing", obj.size, None, obj.sha256, None, f"{location} does not exist")
    except (StorageError, OSError) as exc:
        return ObjectCheck(obj.key, "unreadable", obj.size, size, obj.sha256, None, f"{location}: {exc}")
    actual = digest.hexdigest()
    if size < obj.size:
        status: ObjectStatus = "truncated"
        message = f"{location} has {size} bytes, the manifest records {obj.size}"
    elif size > obj.size:
        status = "oversized"
        message = f"{location} has {size} bytes, the manifest records {obj.size}"
    elif actual != obj.sha256:
        status = "corrupt"
        message = f"{location} SHA-256 {actual} != recorded {obj.sha256}"
    else:
        status, message = "ok", ""
    return ObjectCheck(obj.key, status, obj.size, size, obj.sha256, actual, message)
