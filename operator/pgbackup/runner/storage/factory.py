"""The Storage a policy's `storage` section names."""

from __future__ import annotations

import os
from pathlib import Path

from pgbackup.api import jobenv
from pgbackup.api.policy import Storage as StorageSpec
from pgbackup.runner.storage.base import Storage


def default_volume_root() -> Path:
    """Where the backup volume is mounted in the Job's pod ($PGBACKUP_VOLUME_ROOT overrides it)."""
    return Path(os.environ.get(jobenv.ENV_VOLUME_ROOT) or jobenv.VOLUME_STORAGE_ROOT)


def open_storage(spec: StorageSpec, *, volume_root: Path | None = None) -> Storage:
    """S3: bucket + prefix (boto3 imported only here); volume: <volume root>/<storage.volume.path>."""
    if spec.s3 is not None:
        from pgbackup.runner.storage.s3 import S3Storage

        return S3Storage(spec.s3)
    assert spec.volume is not None  # the model guarantees exactly one
    from pgbackup.runner.storage.fs import FilesystemStorage

    root = volume_root if volume_root is not None else default_volume_root()
    return FilesystemStorage(root / spec.volume.path if spec.volume.path else root, volume_root=root)
