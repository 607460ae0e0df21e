"""Reading an S3 object as one stream that survives a dropped connection: botocore retries a GET only until its
response starts, so a body that breaks off mid-transfer (a long restore download) is asked for again from the byte
where it stopped (a ranged GET pinned to the first response's ETag with If-Match, so every byte comes from one
version of the object).

One stream, not parallel ranged GETs: measured against the benchmark's S3 (moto), one GET streams about 600 MB/s,
far more than a restore consumes, while ranged GETs of 8 MiB took 15x longer (see docs/benchmarks.md).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

MIB = 1024 * 1024
RESUMES = 5
"""How often one object's download is resumed after its body broke off, before the read fails."""

ErrorFor = Callable[[Exception, str, str], Exception]
"""S3Storage.error: (exception, action, key) -> the StorageError to raise."""


def open_object(client: Any, bucket: str, full_key: str, key: str, error: ErrorFor) -> BinaryIO:
    """A buffered stream of the object `full_key`; raises what `error` makes of a failure (ObjectNotFound...)."""
    try:
        response = client.get_object(Bucket=bucket, Key=full_key)
    except (ClientError, BotoCoreError, OSError) as exc:
        raise error(exc, "reading", key) from exc
    return io.BufferedReader(_ResumingReader(client, bucket, full_key, key, error, response), buffer_size=MIB)


class _ResumingReader(io.RawIOBase):
    def __init__(self, client: Any, bucket: str, full_key: str, key: str, error: ErrorFor,
                 response: dict[str, Any]) -> None:
        self._client = client
        self._bucket = bucket
        self._full_key = full_key
        self._key = key
        self._error = error
        self._body = response["Body"]
        self._etag = response.get("ETag")
        self._size = response.get("ContentLength")
        self._offset = 0
        self._resumes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                data = self._body.read(len(buffer))
            except (BotoCoreError, OSError) as exc:  # e.g. IncompleteReadError: the connection dropped
                self._resume(exc)
                continue
            n = len(data)
            buffer[:n] = data
            self._offset += n
            return n

    def _resume(self, exc: Exception) -> None:
        self._resumes += 1
        if self._resumes > RESUMES or self._etag is None or (self._size is not None and self._offset >= self._size):
            raise self._error(exc, "reading", self._key) from exc
        try:
            self._body.close()
        except Exception:  # noqa: BLE001 - the broken connection may fail to close; the new GET matters
            pass
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._full_key, Range=f"bytes={self._offset}-",
                                               IfMatch=self._etag)
        except (ClientError, BotoCoreError, OSError) as again:
            raise self._error(again, "reading", self._key) from exc
        self._body = response["Body"]

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()
