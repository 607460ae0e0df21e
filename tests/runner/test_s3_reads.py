"""Reading objects back from S3: the same bytes as written, a body that breaks off mid-transfer is resumed from
where it stopped (a connection dropped during a long restore download does not fail it), and one that keeps
breaking fails naming the object. Real moto S3, with a relay proxy in front that cuts responses.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from pgbackup.runner.storage.base import StorageError
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.s3 import CuttingProxy, MotoServer, S3Bucket


@pytest.fixture
def big_object(s3_bucket: S3Bucket) -> tuple[str, bytes]:
    data = os.urandom(25 * 1024 * 1024 + 12345)
    S3Storage(s3_bucket.spec(), max_attempts=2).put_bytes("big/object.bin", data)
    return "big/object.bin", data


def test_a_big_object_reads_back_byte_for_byte(s3_bucket: S3Bucket, big_object: tuple[str, bytes]) -> None:
    key, data = big_object
    storage = S3Storage(s3_bucket.spec(), max_attempts=2)
    with storage.open_reader(key) as reader:
        read = b"".join(iter(lambda: reader.read(1_000_003), b""))
    assert hashlib.sha256(read).hexdigest() == hashlib.sha256(data).hexdigest()
    assert storage.get_bytes(key) == data


def test_small_and_empty_objects_read_back(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.spec(), max_attempts=2)
    storage.put_bytes("small", b"x" * 1000)
    storage.put_bytes("empty", b"")
    assert storage.get_bytes("small") == b"x" * 1000
    assert storage.get_bytes("empty") == b""


def test_a_download_cut_off_once_is_resumed(s3_bucket: S3Bucket, moto_server: MotoServer,
                                           big_object: tuple[str, bytes]) -> None:
    key, data = big_object
    proxy = CuttingProxy(moto_server.port, "object.bin", cuts=1)
    try:
        storage = S3Storage(s3_bucket.spec(endpoint=proxy.endpoint), max_attempts=2)
        with storage.open_reader(key) as reader:
            assert reader.read() == data
    finally:
        proxy.close()


def test_a_download_that_keeps_breaking_fails_naming_the_object(s3_bucket: S3Bucket, moto_server: MotoServer,
                                                                big_object: tuple[str, bytes]) -> None:
    key, _ = big_object
    proxy = CuttingProxy(moto_server.port, "object.bin", cuts=1000)
    try:
        storage = S3Storage(s3_bucket.spec(endpoint=proxy.endpoint), max_attempts=2)
        with pytest.raises(StorageError, match="object.bin"):
            with storage.open_reader(key) as reader:
                reader.read()
    finally:
        proxy.close()
