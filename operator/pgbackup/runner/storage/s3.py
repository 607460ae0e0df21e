"""S3-compatible storage through boto3: streaming multipart uploads that are aborted on any failure.

Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the pod's identity),
never from arguments; a private CA comes from AWS_CA_BUNDLE. botocore retries throttling, 5xx and
connection errors with exponential backoff ('standard' mode) before we give up with a clear error; each retry is
logged and counted (s3_retries).
"""

from __future__ import annotations

import builtins
import functools
import io
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from pgbackup.api.policy import S3Storage as S3StorageSpec
from pgbackup.runner.common.log import log_warning
from pgbackup.runner.storage.base import (
    ExclusiveCreateUnsupported,
    ObjectInfo,
    ObjectNotFound,
    ObjectWriter,
    Storage,
    StorageError,
    StorageUnreachable,
)
from pgbackup.runner.storage.parts import PartUploads
from pgbackup.runner.storage.s3_reading import open_object
from pgbackup.runner.storage.s3_retries import watch_retries

MIB = 1024 * 1024
DELETE_BATCH = 1000  # the DeleteObjects limit
MAX_PARTS = 10_000  # S3: parts per multipart upload
MAX_PART_SIZE = 5 * 1024 * MIB  # S3: bytes per part
MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MIB  # S3: bytes per object (5 TiB)
ENV_MAX_ATTEMPTS = "PGBACKUP_S3_MAX_ATTEMPTS"
ENV_RETRY_MODE = "PGBACKUP_S3_RETRY_MODE"
DEFAULT_MAX_ATTEMPTS = 8

# Endpoint unreachable, connection refused/reset/closed, connect or read timeouts (botocore has already
# retried them): a network failure, not a problem with the data or the credentials.
_NETWORK_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError, OSError)
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION_FAILED = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
# What stores without conditional writes answer to If-None-Match on PutObject.
_CONDITION_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest", "501"}
_ABORT_FAILED_HINT = (
    "the incomplete upload keeps costing storage until it is aborted: a later backup (or `pgbackup retention`) of "
    "this policy aborts the uploads of its backups once they are older than spec.jobTemplate.activeDeadlineSeconds "
    "+ 1 h (7 h by default), WAL uploads never; a bucket lifecycle rule with AbortIncompleteMultipartUpload cleans "
    "up any of them; to abort it now: aws s3api abort-multipart-upload --bucket {bucket} --key {key} "
    "--upload-id {upload_id}"
)
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "Forbidden", "AllAccessDisabled"}


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair handed to one S3Storage's boto3 session; repr never shows the secret."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


class S3Storage(Storage):
    """A bucket + prefix; keys are relative to the prefix."""

    def __init__(
        self,
        spec: S3StorageSpec,
        *,
        max_attempts: int | None = None,
        retry_mode: Literal["standard", "adaptive"] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        credentials: S3Credentials | None = None,
        max_parts: int = MAX_PARTS,
    ) -> None:
        """`credentials`: explicit keys for this storage only (a copy's Secret, read from its own env names);
        None = boto3's usual chain (AWS_* env, pod identity). `max_parts`: the service's limit of parts per
        upload (S3: 10,000)."""
        self.spec = spec
        self.bucket = spec.bucket
        prefix = (spec.prefix or "").strip("/")  # PolicyConfig fills an unset prefix in ('<namespace>/<policy>')
        self.prefix = f"{prefix}/" if prefix else ""
        self.part_size = spec.part_size_mib * MIB
        self.max_parts = max_parts
        self._growth_step = _growth_step(self.part_size, max_parts)
        attempts = max_attempts or int(os.environ.get(ENV_MAX_ATTEMPTS, DEFAULT_MAX_ATTEMPTS))
        mode = retry_mode or os.environ.get(ENV_RETRY_MODE, "standard")
        retries: Any = {"mode": mode, "total_max_attempts": attempts}  # botocore checks the mode's value
        config = Config(
            region_name=spec.region,
            s3={"addressing_style": "path" if spec.force_path_style else "auto"},
            retries=retries,
            request_checksum_calculation=spec.request_checksum_calculation,
            response_checksum_validation=spec.response_checksum_validation,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        self.attempts = attempts
        self._conditional_writes_checked = False
        # A session of its own: boto3's default session is not thread-safe to create clients from.
        session = (boto3.session.Session(aws_access_key_id=credentials.access_key_id,
                                         aws_secret_access_key=credentials.secret_access_key)
                   if credentials is not None else boto3.session.Session())
        self.client = session.client("s3", endpoint_url=spec.endpoint or None, config=config)
        watch_retries(self.client, attempts)  # botocore retries silently: log each retry, count it for the summary

    # -- naming -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise StorageError(f"invalid object key {key!r} in {self.url}: keys are relative, '/'-separated")
        return self.prefix + key

    def _endpoint(self) -> str:
        return self.spec.endpoint or f"AWS S3 ({self.spec.region})"

    def error(self, exc: Exception, action: str, key: str | None = None) -> StorageError:
        """A StorageError that names bucket, key and what to check."""
        where = f"s3://{self.bucket}/{self._key(key)}" if key else self.url
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            message = exc.response.get("Error", {}).get("Message", "") or str(exc)
            if code == "NoSuchBucket":
                return StorageError(
                    f"{action} {where} failed: bucket {self.bucket!r} does not exist at {self._endpoint()}; "
                    f"create it or fix storage.s3.bucket / storage.s3.endpoint"
                )
            if code in _NOT_FOUND:
                return ObjectNotFound(f"{action} {where} failed: object not found")
            if code in _DENIED:
                return StorageError(
                    f"{action} {where} failed: access denied ({code}); check the Secret named by "
                    f"storage.s3.credentialsSecret (keys accessKeyId and secretAccessKey) and the bucket policy"
                )
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in {"SlowDown", "Throttling", "RequestLimitExceeded"} or status >= 500:
                return StorageError(
                    f"{action} {where} failed after {self.attempts} attempts: the service is overloaded or failing "
                    f"({code}: {message}); retry later or lower the backup concurrency"
                )
            return StorageError(f"{action} {where} failed: {code}: {message}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                f"{action} {where} failed: no S3 credentials; set storage.s3.credentialsSecret "
                f"(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or give the pod an identity (IRSA)"
            )
        if isinstance(exc, SSLError):
            return StorageError(
                f"{action} {where} failed: TLS with {self._endpoint()} failed ({exc}); if the endpoint uses a private "
                f"CA, set storage.s3.caBundleSecret to its certificate"
            )
        if isinstance(exc, _NETWORK_ERRORS):
            return StorageUnreachable(
                f"{action} {where} failed after {self.attempts} attempts: S3 endpoint {self._endpoint()} is "
                f"unreachable ({exc}); check storage.s3.endpoint, DNS, network policies and the service"
            )
        if isinstance(exc, BotoCoreError):
            return StorageError(f"{action} {where} failed: {exc}; check storage.s3.endpoint and region")
        return StorageError(f"{action} {where} failed: {exc}")

    def _extra_args(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.spec.storage_class:
            extra["StorageClass"] = self.spec.storage_class
        if self.spec.server_side_encryption:
            extra["ServerSideEncryption"] = self.spec.server_side_encryption
        if self.spec.kms_key_id:
            extra["SSEKMSKeyId"] = self.spec.kms_key_id
        return extra

    def part_size_for(self, number: int) -> int:
        """Size of part `number` (1-based) of an upload. The size of a backup stream is not known in advance, so
        parts grow as the upload goes (as rclone and the AWS CLI do): storage.s3.partSizeMib for the first parts,
        then doubling every `_growth_step` parts up to S3's 5 GiB, so that `max_parts` parts hold at least 5 TiB
        (S3's largest object). With the default 64 MiB: 1,000 parts of each size, so objects up to 62.5 GiB use
        64 MiB parts, up to 437 GiB at most 256 MiB, up to 5 TiB at most 4 GiB (each part is held in memory)."""
        return min(self.part_size << ((number - 1) // self._growth_step), max(MAX_PART_SIZE, self.part_size))

    def capacity(self) -> int:
        """The largest object an upload can hold within `max_parts` parts."""
        return sum(self.part_size_for(number) for number in range(1, self.max_parts + 1))

    # -- Storage ----------------------------------------------------------------------------------

    def open_writer(self, key: str) -> ObjectWriter:
        return _MultipartWriter(self, key)

    def open_reader(self, key: str) -> BinaryIO:
        """One GET, resumed from where it stopped when its body breaks off (pgbackup.runner.storage.s3_reading)."""
        return open_object(self.client, self.bucket, self._key(key), key, self.error)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._list_objects(prefix)

    def list_after(self, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        """ListObjectsV2 with StartAfter: only keys beyond `start_after` are sent."""
        return self._list_objects(prefix, start_after=self.prefix + start_after)

    def list_dirs(self, prefix: str = "") -> Iterator[str]:
        """ListObjectsV2 with Delimiter='/': the CommonPrefixes (one entry per directory, not its objects)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    yield common["Prefix"][len(self.prefix):]
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self.error(exc, "listing", prefix or None) from exc

    def _list_objects(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, StartAfter=start_after):
                for item in page.get("Contents", []):
                    yield ObjectInfo(key=item["Key"][len(self.prefix):], size=item["Size"], modified=item["LastModified"].astimezone(UTC))
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self.error(exc, "listing", prefix or None) from exc

    def delete(self, keys: builtins.list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(key)} for key in batch], "Quiet": True},
                )
            except (ClientError, BotoCoreError, OSError) as exc:
                raise self.error(exc, "deleting", batch[0]) from exc
            errors = [e for e in response.get("Errors", []) if e.get("Code") not in _NOT_FOUND]
            if errors:
                first = errors[0]
                raise StorageError(
                    f"deleting s3://{self.bucket}/{first.get('Key')} failed: {first.get('Code')}: "
                    f"{first.get('Message')} ({len(errors)} keys not deleted); check the bucket policy allows DeleteObject"
                )

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND:
                return False
            raise self.error(exc, "checking", key) from exc
        except (BotoCoreError, OSError) as exc:
            raise self.error(exc, "checking", key) from exc
        return True

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """PutObject with If-None-Match: * (AWS S3 since 2024, MinIO, Ceph RGW, moto). The first success per
        storage is followed by a second identical request, which must be refused: a store that ignores the
        header answers it with 200, and is then reported as not supporting exclusive creation."""
        if not self._put_if_absent(key, data):
            return False
        if not self._conditional_writes_checked:
            if self._put_if_absent(key, data):
                self.delete([key])
                raise ExclusiveCreateUnsupported(
                    f"{self._endpoint()} ignores If-None-Match on PutObject (s3://{self.bucket}/{self._key(key)} "
                    f"was overwritten)"
                )
            self._conditional_writes_checked = True
        return True

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*",
                                   **self._extra_args())
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _PRECONDITION_FAILED or status in _PRECONDITION_FAILED:
                return False
            if code in _CONDITION_UNSUPPORTED or status in _CONDITION_UNSUPPORTED:
                raise ExclusiveCreateUnsupported(
                    f"{self._endpoint()} refuses If-None-Match on PutObject ({code}: "
                    f"{exc.response.get('Error', {}).get('Message', '')})"
                ) from exc
            raise self.error(exc, "creating", key) from exc
        except (BotoCoreError, OSError) as exc:
            raise self.error(exc, "creating", key) from exc
        return True

    def incomplete_uploads(self, prefix: str = "") -> builtins.list[IncompleteUpload]:
        """Multipart uploads started and never completed or aborted (e.g. by a killed Job)."""
        found: builtins.list[IncompleteUpload] = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for upload in page.get("Uploads", []):
                    found.append(
                        IncompleteUpload(upload["Key"][len(self.prefix):], upload["UploadId"], upload["Initiated"])
                    )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self.error(exc, "listing multipart uploads in", prefix or None) from exc
        return found

    def abort_upload(self, upload: IncompleteUpload) -> None:
        """Abort one incomplete upload (it costs storage until aborted)."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(upload.key), UploadId=upload.upload_id)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self.error(exc, "aborting the multipart upload of", upload.key) from exc


def _growth_step(initial: int, max_parts: int) -> int:
    """Parts per size step: the longest run of equal parts (starting at max_parts // 10) with which `max_parts`
    doubling parts still hold MAX_OBJECT_SIZE."""
    def capacity(step: int) -> int:
        return sum(min(initial << ((number - 1) // step), max(MAX_PART_SIZE, initial))
                   for number in range(1, max_parts + 1))

    for groups in range(10, max_parts + 1):
        step = max(1, max_parts // groups)
        if step == 1 or capacity(step) >= MAX_OBJECT_SIZE:
            return step
    return 1


@dataclass(frozen=True)
class IncompleteUpload:
    key: str
    upload_id: str
    initiated: datetime


class _MultipartWriter(ObjectWriter):
    """Buffers one part in memory and hands full parts to concurrent uploads (PartUploads: a bounded number of
    bytes in flight); objects smaller than a part become one PutObject."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._full_key = storage._key(key)
        self._buffer = io.BytesIO()
        self._upload_id: str | None = None
        self._parts: PartUploads | None = None
        self._finished = False

    def write(self, data: bytes) -> None:
        if self._finished:
            raise StorageError(f"write to s3://{self._storage.bucket}/{self._full_key} after commit/abort")
        self._buffer.write(data)
        number = self._parts.count + 1 if self._parts is not None else 1
        if self._buffer.tell() >= self._storage.part_size_for(number):
            self._upload_buffer()

    def _upload_part(self, upload_id: str, number: int, body: bytes) -> str:
        """One UploadPart (on a PartUploads worker thread); its ETag."""
        try:
            uploaded = self._storage.client.upload_part(
                Bucket=self._storage.bucket, Key=self._full_key, UploadId=upload_id, PartNumber=number, Body=body
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._storage.error(exc, "uploading", self._key) from exc
        return str(uploaded["ETag"])

    def _upload_buffer(self) -> None:
        body = self._buffer.getvalue()
        self._buffer = io.BytesIO()
        number = self._parts.count + 1 if self._parts is not None else 1
        if number > self._storage.max_parts:
            self.abort()
            raise StorageError(
                f"uploading s3://{self._storage.bucket}/{self._full_key} failed: the object is larger than "
                f"{self._storage.capacity() // MIB} MiB, the most {self._storage.max_parts} parts starting at "
                f"storage.s3.partSizeMib {self._storage.part_size // MIB} can hold; raise partSizeMib"
            )
        try:
            if self._parts is None:
                created = self._storage.client.create_multipart_upload(
                    Bucket=self._storage.bucket, Key=self._full_key, **self._storage._extra_args()
                )
                self._upload_id = upload_id = str(created["UploadId"])
                self._parts = PartUploads(functools.partial(self._upload_part, upload_id))
            self._parts.submit(number, body)
        except (ClientError, BotoCoreError, OSError) as exc:
            self.abort()
            raise self._storage.error(exc, "uploading", self._key) from exc
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        if self._finished:
            return
        client = self._storage.client
        try:
            if self._parts is None:
                self._buffer.seek(0)
                client.put_object(
                    Bucket=self._storage.bucket, Key=self._full_key, Body=self._buffer, **self._storage._extra_args()
                )
            else:
                if self._buffer.tell():
                    self._upload_buffer()
                parts = self._parts.results()
                assert self._upload_id is not None  # set with self._parts
                client.complete_multipart_upload(
                    Bucket=self._storage.bucket,
                    Key=self._full_key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": number, "ETag": etag} for number, etag in parts]},
                )
        except (ClientError, BotoCoreError, OSError) as exc:
            self.abort()
            raise self._storage.error(exc, "uploading", self._key) from exc
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._buffer = io.BytesIO()

    def abort(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._buffer = io.BytesIO()
        if self._parts is not None:
            self._parts.cancel()  # the parts on the wire finish first: an abort after them leaves no part behind
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self._storage.client.abort_multipart_upload(
                    Bucket=self._storage.bucket, Key=self._full_key, UploadId=upload_id
                )
            except (ClientError, BotoCoreError, OSError) as exc:
                # The original error matters more: this one is only logged, with who cleans up and when.
                log_warning(
                    "s3.abort_failed",
                    bucket=self._storage.bucket,
                    key=self._full_key,
                    upload_id=upload_id,
                    error=exc,
                    hint=_ABORT_FAILED_HINT.format(bucket=self._storage.bucket, key=self._full_key,
                                                   upload_id=upload_id),
                )
