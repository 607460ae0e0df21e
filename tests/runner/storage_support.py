"""Fixtures shared by the storage, pipeline and catalog tests (imported explicitly by those modules)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.s3 import S3Bucket


@dataclass(frozen=True)
class AgeKey:
    """A key pair made by the stock `age-keygen`, the way a user makes one."""

    identity_file: Path
    identity: str  # AGE-SECRET-KEY-1...
    recipient: str  # age1...


def make_age_key(directory: Path, name: str) -> AgeKey:
    path = directory / f"{name}.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    text = path.read_text()
    recipient = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("# public key: "))
    identity = next(line for line in text.splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    return AgeKey(path, identity, recipient.strip())


@pytest.fixture(scope="session")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> AgeKey:
    return make_age_key(tmp_path_factory.mktemp("age"), "backup")


@pytest.fixture(scope="session")
def other_age_key(tmp_path_factory: pytest.TempPathFactory) -> AgeKey:
    return make_age_key(tmp_path_factory.mktemp("age-other"), "other")


@pytest.fixture
def fs_storage(tmp_path: Path) -> FilesystemStorage:
    root = tmp_path / "volume" / "orders-db"
    root.mkdir(parents=True)
    return FilesystemStorage(root)


@pytest.fixture
def s3_storage(s3_bucket: S3Bucket) -> S3Storage:
    return S3Storage(s3_bucket.spec(), max_attempts=2)


@pytest.fixture(params=["volume", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    """Each test using it runs against both backends."""
    return request.getfixturevalue("fs_storage" if request.param == "volume" else "s3_storage")


def overwrite(storage: Storage, key: str, data: bytes) -> None:
    """Replace an object's bytes behind the catalog's back (simulated bit rot / truncation)."""
    storage.put_bytes(key, data)
