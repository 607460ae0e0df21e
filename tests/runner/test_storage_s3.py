"""The S3 backend against a real moto server: multipart, aborts, SSE, pagination and failures."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pgbackup.api.policy import Compression, Storage as StorageSpec
from pgbackup.runner.storage.pipeline import store_stream
from pgbackup.runner.storage.base import ObjectNotFound, StorageError
from pgbackup.runner.storage.factory import open_storage
from pgbackup.runner.storage.s3 import S3Storage
from tests.fixtures.s3 import (
    FlakyProxy,
    MotoServer,
    RelayProxy,
    S3Bucket,
    answer_s3_error,
    free_port,
    make_bucket,
    s3_env,
)
from tests.runner.storage_support import s3_storage  # noqa: F401 - fixture

MIB = 1024 * 1024
NONE = Compression(algorithm="none")


def test_small_object_is_one_put_under_the_prefix(s3_bucket: S3Bucket, s3_storage: S3Storage) -> None:
    s3_storage.put_bytes("20260101T000000Z/globals.sql", b"-- roles")
    assert s3_bucket.keys() == ["team/orders-db/20260101T000000Z/globals.sql"]
    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key="team/orders-db/20260101T000000Z/globals.sql")
    assert "-" not in head["ETag"], "no multipart upload for an object smaller than a part"
    assert s3_storage.get_bytes("20260101T000000Z/globals.sql") == b"-- roles"
    assert s3_storage.location("x/y") == f"s3://{s3_bucket.bucket}/team/orders-db/x/y"


def test_large_object_is_a_multipart_upload(s3_bucket: S3Bucket, s3_storage: S3Storage) -> None:
    data = os.urandom(12 * MIB)
    stored = store_stream(io.BytesIO(data), s3_storage, "20260101T000000Z/base.tar", compression=NONE)
    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=f"team/orders-db/{stored.key}")
    assert head["ETag"].endswith('-3"'), "12 MiB in 5 MiB parts = 3 parts"
    assert head["ContentLength"] == len(data)
    assert s3_storage.get_bytes(stored.key) == data
    assert s3_bucket.incomplete_uploads() == []


def test_parts_grow_so_an_object_needing_more_than_the_part_limit_still_uploads(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.spec(), max_attempts=2, max_parts=10)  # 5 MiB parts, at most 10 per object
    data = os.urandom(60 * MIB)  # 12 parts' worth of 5 MiB
    stored = store_stream(io.BytesIO(data), storage, "20260101T000000Z/base.tar", compression=NONE)
    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=f"team/orders-db/{stored.key}")
    parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])
    assert 1 < parts <= 10
    assert head["ContentLength"] == len(data)
    assert storage.get_bytes(stored.key) == data
    assert s3_bucket.incomplete_uploads() == []


def test_the_part_limit_holds_the_largest_s3_object_from_any_part_size(s3_bucket: S3Bucket) -> None:
    for part_size_mib in (5, 64, 5120):
        storage = S3Storage(s3_bucket.spec(part_size_mib=part_size_mib))
        assert storage.capacity() >= 5 * 1024**4, f"{part_size_mib} MiB parts"  # 5 TiB in 10,000 parts
        assert storage.part_size_for(1) == part_size_mib * MIB
        assert max(storage.part_size_for(n) for n in range(1, 10_001)) <= 5 * 1024 * MIB


def test_an_object_beyond_the_part_limit_fails_at_once_and_leaves_nothing(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.spec(), max_attempts=2, max_parts=2)  # 5 + 10 MiB at most
    with pytest.raises(StorageError, match=r"larger than 15 MiB, the most 2 parts .* raise partSizeMib"):
        store_stream(io.BytesIO(os.urandom(20 * MIB)), storage, "20260101T000000Z/base.tar", compression=NONE)
    assert s3_bucket.keys() == []
    assert s3_bucket.incomplete_uploads() == []


def test_failing_source_aborts_the_multipart_upload(s3_bucket: S3Bucket, s3_storage: S3Storage) -> None:
    def dump_killed_after_7_mib() -> Iterator[bytes]:
        for _ in range(7):
            yield os.urandom(MIB)
        raise BrokenPipeError("pg_dump was killed")

    with pytest.raises(BrokenPipeError, match="pg_dump was killed"):
        store_stream(dump_killed_after_7_mib(), s3_storage, "20260101T000000Z/orders.dump", compression=NONE)
    assert s3_bucket.keys() == []
    assert s3_bucket.incomplete_uploads() == [], "the started multipart upload was aborted"


def test_storage_class_and_server_side_encryption_are_requested(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.spec(storage_class="STANDARD_IA", server_side_encryption="AES256"), max_attempts=2)
    storage.put_bytes("small", b"x")
    store_stream(io.BytesIO(os.urandom(6 * MIB)), storage, "large", compression=NONE)
    for key in ("small", "large"):
        head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=f"team/orders-db/{key}")
        assert head["StorageClass"] == "STANDARD_IA"
        assert head["ServerSideEncryption"] == "AES256"


def test_list_paginates_and_delete_batches(s3_bucket: S3Bucket, s3_storage: S3Storage) -> None:
    keys = [f"20260101T000000Z/wal/{n:06d}" for n in range(1005)]  # more than one page / one DeleteObjects call
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3_bucket.client.put_object(Bucket=s3_bucket.bucket, Key=f"team/orders-db/{key}", Body=b"w"), keys))
    s3_storage.put_bytes("other/keep", b"k")
    assert [info.key for info in s3_storage.list("20260101T000000Z/")] == keys
    s3_storage.delete(keys + ["missing/key"])
    assert [info.key for info in s3_storage.list()] == ["other/keep"]


def test_missing_object_and_exists(s3_storage: S3Storage) -> None:
    assert not s3_storage.exists("nope")
    with pytest.raises(ObjectNotFound):
        s3_storage.open_reader("nope")
    s3_storage.put_bytes("yes", b"1")
    assert s3_storage.exists("yes")


def test_missing_bucket_is_named_with_what_to_do(s3_bucket: S3Bucket) -> None:
    storage = S3Storage(s3_bucket.spec(bucket="no-such-bucket"), max_attempts=2)
    with pytest.raises(StorageError) as failure:
        storage.put_bytes("20260101T000000Z/manifest.json", b"{}")
    message = str(failure.value)
    assert "no-such-bucket" in message and "does not exist" in message and "storage.s3.bucket" in message
    assert "20260101T000000Z/manifest.json" in message


def test_missing_credentials_are_explained(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = S3Storage(s3_bucket.spec(), max_attempts=1)
    with pytest.raises(StorageError, match="no S3 credentials.*credentialsSecret"):
        storage.put_bytes("x", b"1")


def test_unreachable_endpoint_fails_after_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch)
    spec = StorageSpec.model_validate(
        {"s3": {"bucket": "backups", "endpoint": f"http://127.0.0.1:{free_port()}", "forcePathStyle": True}}
    )
    storage = open_storage(spec)
    assert isinstance(storage, S3Storage)
    storage = S3Storage(spec.s3, max_attempts=2, connect_timeout=1)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match=r"s3://backups/x.*unreachable.*storage.s3.endpoint"):
        storage.put_bytes("x", b"1")


def test_server_stopped_mid_upload_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch)
    server = MotoServer.start()
    try:
        bucket = make_bucket(server.endpoint)
        storage = S3Storage(bucket.spec(), max_attempts=3, connect_timeout=1, read_timeout=5)

        def source() -> Iterator[bytes]:
            for n in range(12):
                if n == 6:  # one 5 MiB part is already uploaded
                    server.stop()
                yield os.urandom(MIB)

        with pytest.raises(StorageError) as failure:
            store_stream(source(), storage, "20260101T000000Z/base.tar", compression=NONE)
        message = str(failure.value)
        assert f"s3://{bucket.bucket}/team/orders-db/20260101T000000Z/base.tar" in message
        assert "after 3 attempts" in message and "unreachable" in message
    finally:
        server.stop()


def test_access_denied_names_the_credentials_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    s3_env(monkeypatch)
    server = MotoServer.start(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # moto now checks credentials
    try:
        spec = StorageSpec.model_validate(
            {"s3": {"bucket": "backups", "prefix": "shop", "endpoint": server.endpoint, "forcePathStyle": True}}
        )
        storage = S3Storage(spec.s3, max_attempts=2)  # type: ignore[arg-type]
        with pytest.raises(StorageError) as failure:
            storage.put_bytes("20260101T000000Z/manifest.json", b"{}")
        message = str(failure.value)
        assert "s3://backups/shop/20260101T000000Z/manifest.json" in message
        assert "access denied" in message and "credentialsSecret" in message
        assert "testing" not in message.replace("InvalidAccessKeyId", "")
    finally:
        server.stop()


def test_throttling_and_5xx_are_retried(s3_bucket: S3Bucket, moto_server: MotoServer) -> None:
    proxy = FlakyProxy(moto_server.port, failures=1)  # SlowDown, then through to moto
    try:
        storage = S3Storage(s3_bucket.spec(endpoint=proxy.endpoint), max_attempts=3)
        storage.put_bytes("20260101T000000Z/globals.sql", b"-- roles")
        assert proxy.requests == 2
        assert s3_bucket.keys() == ["team/orders-db/20260101T000000Z/globals.sql"]
    finally:
        proxy.close()


def test_persistent_5xx_fails_after_retries_naming_the_object(s3_bucket: S3Bucket, moto_server: MotoServer) -> None:
    proxy = FlakyProxy(moto_server.port, failures=1000, status=500, code="InternalError")
    try:
        storage = S3Storage(s3_bucket.spec(endpoint=proxy.endpoint), max_attempts=2)
        with pytest.raises(StorageError, match=r"uploading s3://.*/20260101T000000Z/x failed after 2 attempts.*InternalError"):
            storage.put_bytes("20260101T000000Z/x", b"1")
        assert proxy.requests == 2
    finally:
        proxy.close()


class _HoldsFirstPart(RelayProxy):
    """Holds UploadPart 1 until UploadPart 2 has arrived (or 30 s have passed), then relays both."""

    def __init__(self, upstream_port: int) -> None:
        self.second_part = threading.Event()
        self.overlapped: bool | None = None
        super().__init__(upstream_port)

    def intercept(self, request: Any) -> bool:
        query = parse_qs(urlsplit(request.path).query)
        if request.command == "PUT" and query.get("partNumber") == ["1"]:
            self.overlapped = self.second_part.wait(30)
        elif request.command == "PUT" and query.get("partNumber") == ["2"]:
            self.second_part.set()
        return False


def test_the_next_part_is_sent_while_a_part_is_still_uploading(s3_bucket: S3Bucket, moto_server: MotoServer) -> None:
    proxy = _HoldsFirstPart(moto_server.port)
    try:
        storage = S3Storage(s3_bucket.spec(endpoint=proxy.endpoint), max_attempts=2)  # 5 MiB parts
        data = os.urandom(17 * MIB)
        stored = store_stream(io.BytesIO(data), storage, "20260101T000000Z/orders.dump", compression=NONE)
    finally:
        proxy.close()
    assert proxy.overlapped, "part 2 was only sent after part 1 had been uploaded"
    head = s3_bucket.client.head_object(Bucket=s3_bucket.bucket, Key=f"team/orders-db/{stored.key}")
    assert head["ETag"].endswith('-4"'), "17 MiB in 5 MiB parts = 4 parts, assembled in order"
    assert s3_storage_bytes(s3_bucket, stored.key) == data
    assert s3_bucket.incomplete_uploads() == []


def test_a_part_failing_while_others_upload_aborts_the_upload_and_leaves_nothing(
        s3_bucket: S3Bucket, moto_server: MotoServer) -> None:
    class ThirdPartFails(RelayProxy):
        def intercept(self, request: Any) -> bool:
            query = parse_qs(urlsplit(request.path).query)
            if request.command == "PUT" and query.get("partNumber") == ["3"]:
                return answer_s3_error(request, 403, "AccessDenied")
            return False

    proxy = ThirdPartFails(moto_server.port)
    try:
        storage = S3Storage(s3_bucket.spec(endpoint=proxy.endpoint), max_attempts=1)
        with pytest.raises(StorageError, match=r"uploading s3://.*orders\.dump failed: access denied"):
            store_stream(io.BytesIO(os.urandom(40 * MIB)), storage, "20260101T000000Z/orders.dump", compression=NONE)
    finally:
        proxy.close()
    assert s3_bucket.keys() == []
    assert s3_bucket.incomplete_uploads() == [], "the multipart upload was aborted after the parts in flight"


def s3_storage_bytes(s3_bucket: S3Bucket, key: str) -> bytes:
    body = s3_bucket.client.get_object(Bucket=s3_bucket.bucket, Key=f"team/orders-db/{key}")["Body"]
    return bytes(body.read())
