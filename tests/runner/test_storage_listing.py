"""Bounded listings: directories by delimiter (S3 CommonPrefixes, one directory read on a volume) and listings
that start after a key (S3 StartAfter), on both backends."""

from __future__ import annotations

import pytest

from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.s3 import S3Storage
from tests.runner.listing_support import ListingCounter
from tests.runner.storage_support import fs_storage, s3_storage, storage  # noqa: F401 - fixtures

KEYS = [
    "20261120T020000Z/claim.json",
    "20261120T020000Z/manifest.json",
    "20261121T020000Z/databases/orders.dump.zst",
    "20261121T020000Z/manifest.json",
    "notes.txt",
    "wal/00000001/000000010000000000000001.meta.json",
    "wal/00000001/000000010000000000000001.zst",
    "wal/00000001/000000010000000000000002.meta.json",
    "wal/00000001/000000010000000000000002.zst",
    "wal/00000002/00000002.history",
]


def fill(storage: Storage) -> None:
    for key in KEYS:
        storage.put_bytes(key, key.encode())


def test_list_dirs_names_the_directories_of_one_level_only(storage: Storage) -> None:
    fill(storage)
    assert list(storage.list_dirs()) == ["20261120T020000Z/", "20261121T020000Z/", "wal/"]
    assert list(storage.list_dirs("wal/")) == ["wal/00000001/", "wal/00000002/"]
    assert list(storage.list_dirs("2026112")) == ["20261120T020000Z/", "20261121T020000Z/"]
    assert list(storage.list_dirs("20261121T020000Z/")) == ["20261121T020000Z/databases/"]
    assert list(storage.list_dirs("missing/")) == []


def test_list_after_returns_only_the_keys_beyond_the_one_given(storage: Storage) -> None:
    fill(storage)
    after = [info.key for info in storage.list_after("wal/", "wal/00000001/000000010000000000000001.zst")]
    assert after == KEYS[7:]
    assert [info.key for info in storage.list_after("", "20261121T020000Z/manifest.json")] == KEYS[4:]
    assert [info.key for info in storage.list_after("wal/", "wal/00000002/00000002.history")] == []
    assert [info.key for info in storage.list_after("wal/", "")] == KEYS[5:]


def test_s3_listings_send_only_what_is_asked(s3_storage: S3Storage) -> None:
    fill(s3_storage)
    counter = ListingCounter().attach(s3_storage)
    assert len(list(s3_storage.list_dirs())) == 3
    # one request; of the objects only the one beside the directories, none inside them
    assert counter.requests == 1 and [key.rsplit("/", 1)[1] for key in counter.keys] == ["notes.txt"]
    counter.reset()
    assert len(list(s3_storage.list_after("wal/", "wal/00000001/000000010000000000000002.zst"))) == 1
    assert counter.requests == 1 and [key.rsplit("/", 1)[1] for key in counter.keys] == ["00000002.history"]


@pytest.mark.parametrize("start_after", ["wal/00000001/", "wal/00000001/000000010000000000000001.zst", "wal/0"])
def test_list_after_matches_a_filtered_full_listing(storage: Storage, start_after: str) -> None:
    fill(storage)
    full = [info.key for info in storage.list() if info.key > start_after]
    assert [info.key for info in storage.list_after("", start_after)] == full
