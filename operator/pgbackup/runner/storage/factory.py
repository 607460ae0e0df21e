"""Opening storage: the one a policy's `storage` section names, and the ones its `copies` name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pgbackup.api import jobenv
from pgbackup.api.policy import CopySpec
from pgbackup.api.policy import Storage as StorageSpec
from pgbackup.runner.common.config import PolicyConfig
from pgbackup.runner.common.errors import StorageError, UsageError
from pgbackup.runner.common.log import log
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.fs import FilesystemStorage


def default_volume_root() -> Path:
    """Where the backup volume is mounted in the Job's pod ($PGBACKUP_VOLUME_ROOT overrides it)."""
    return Path(os.environ.get(jobenv.ENV_VOLUME_ROOT) or jobenv.VOLUME_STORAGE_ROOT)


def open_storage(spec: StorageSpec, *, volume_root: Path | None = None) -> Storage:
    """S3: bucket + prefix (boto3 imported only here); volume: <volume root>/<storage.volume.path>."""
    if spec.s3 is not None:
        from pgbackup.runner.storage.s3 import S3Storage  # boto3 is loaded only for S3 (wal-push on a volume is quick)

        return S3Storage(spec.s3)
    assert spec.volume is not None  # the model guarantees exactly one

    root = volume_root if volume_root is not None else default_volume_root()
    return FilesystemStorage(root / spec.volume.path if spec.volume.path else root, volume_root=root)


def open_policy_storage(policy: PolicyConfig, environ: Mapping[str, str] | None = None) -> Storage:
    environ = os.environ if environ is None else environ
    root = environ.get(jobenv.ENV_VOLUME_ROOT)
    return open_storage(policy.spec.storage, volume_root=Path(root) if root else None)


def find_copy(policy: PolicyConfig, name: str) -> CopySpec:
    """The copy `name` of the policy; a RunnerError (usage) that lists the copies it has otherwise."""
    for copy in policy.spec.copies:
        if copy.name == name:
            return copy
    known = ", ".join(c.name for c in policy.spec.copies) or "none"
    raise UsageError(
        f"BackupPolicy {policy.namespace}/{policy.name} has no copy named {name!r} (its copies: {known}); "
        f"use one of spec.copies[].name, or leave the copy out to read from the primary storage",
        reason="UnknownCopy",
    )


def open_source_storage(policy: PolicyConfig, from_copy: str | None,
                        environ: Mapping[str, str] | None = None) -> Storage:
    """Where to read backups from: the copy named `from_copy`, else the policy's primary storage."""
    if not from_copy:
        return open_policy_storage(policy, environ)
    copy = find_copy(policy, from_copy)
    log("copy.reading_from", copy=copy.name)
    return open_copy_storage(copy, environ)


def open_copy_storage(copy: CopySpec, environ: Mapping[str, str] | None = None) -> Storage:
    """The copy's storage with its own credentials: $PGBACKUP_COPY_<NAME>_AWS_ACCESS_KEY_ID / ..._SECRET_ACCESS_KEY
    go to a boto3 session of this storage only (never an argument, never logged); a volume copy is mounted at
    $PGBACKUP_COPY_<NAME>_VOLUME_ROOT (default /var/lib/pgbackup/copies/<name>)."""
    environ = os.environ if environ is None else environ
    if copy.s3 is not None:
        from pgbackup.runner.storage.s3 import S3Credentials, S3Storage  # boto3 only for S3, as in open_storage

        key_id = environ.get(jobenv.copy_access_key_env(copy.name))
        secret = environ.get(jobenv.copy_secret_key_env(copy.name))
        if copy.s3.credentials_secret is not None and not (key_id and secret):
            ref = copy.s3.credentials_secret
            raise StorageError(
                f"copy {copy.name!r}: no credentials: ${jobenv.copy_access_key_env(copy.name)} / "
                f"${jobenv.copy_secret_key_env(copy.name)} are empty; check that Secret {ref.name!r} exists in the "
                f"policy's namespace with keys {ref.access_key_id_key!r} and {ref.secret_access_key_key!r} "
                f"(copies[{copy.name}].s3.credentialsSecret); when running `pgbackup` by hand, set the two variables"
            )
        credentials = S3Credentials(key_id, secret) if key_id and secret else None
        return S3Storage(copy.s3, credentials=credentials)
    root_env = environ.get(jobenv.copy_volume_root_env(copy.name))
    root = Path(root_env) if root_env else Path(jobenv.COPY_VOLUME_ROOT) / copy.name
    return open_storage(copy.storage, volume_root=root)
