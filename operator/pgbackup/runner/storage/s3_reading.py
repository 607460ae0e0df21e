"""Reading an S3 object as a stream, with parallel ranged GETs for big objects: the first request asks for the first
part only (its Content-Range gives the size); a bigger object is fetched a part at a time by a few threads ahead of
the reader, each part pinned to the first response's ETag (If-Match), so the bytes all come from one version.
Memory is bounded: at most READ_AHEAD parts in flight plus the one being read.
"""

from __future__ import annotations

import io
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

MIB = 1024 * 1024
READ_PART = 8 * MIB
"""Bytes per ranged GET."""
READ_AHEAD = 4
"""Ranged GETs in flight ahead of the reader (threads)."""
BODY_ATTEMPTS = 3
"""Attempts per part when its body breaks off mid-transfer (botocore retries only until the response starts)."""

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")

ErrorFor = Callable[[Exception, str, str], Exception]
"""S3Storage.error: (exception, action, key) -> the StorageError to raise."""


class BodyReader(io.RawIOBase):
    """A botocore StreamingBody as a raw stream, with errors turned into StorageError."""

    def __init__(self, body: Any, key: str, error: ErrorFor) -> None:
        self._body = body
        self._key = key
        self._error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._body.read(len(buffer))
        except (BotoCoreError, OSError) as exc:
            raise self._error(exc, "reading", self._key) from exc
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


def open_object(client: Any, bucket: str, full_key: str, key: str, error: ErrorFor) -> BinaryIO:
    """A buffered stream of the object `full_key`; raises what `error` makes of a failure (ObjectNotFound...)."""
    try:
        try:
            response = client.get_object(Bucket=bucket, Key=full_key, Range=f"bytes=0-{READ_PART - 1}")
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) != "InvalidRange":
                raise
            response = client.get_object(Bucket=bucket, Key=full_key)  # an empty object has no byte 0
    except (ClientError, BotoCoreError, OSError) as exc:
        raise error(exc, "reading", key) from exc
    match = _CONTENT_RANGE.match(str(response.get("ContentRange") or ""))
    first = BodyReader(response["Body"], key, error)
    if match is None or int(match[3]) <= READ_PART:  # the whole object (or a store that ignores Range)
        return io.BufferedReader(first, buffer_size=MIB)
    ranged = _RangedReader(client, bucket, full_key, key, error, first, int(match[3]), str(response["ETag"]))
    return io.BufferedReader(ranged, buffer_size=MIB)


class _RangedReader(io.RawIOBase):
    def __init__(self, client: Any, bucket: str, full_key: str, key: str, error: ErrorFor, first: BodyReader,
                 size: int, etag: str) -> None:
        self._client = client
        self._bucket = bucket
        self._full_key = full_key
        self._key = key
        self._error = error
        self._etag = etag
        self._size = size
        self._pool = ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="s3-get")
        self._parts: deque[Future[bytes]] = deque()
        self._next = READ_PART  # the first byte not yet asked for
        self._pending = memoryview(b"")
        self._parts.append(self._pool.submit(self._first, first))
        self._fill()

    def _fill(self) -> None:
        while len(self._parts) <= READ_AHEAD and self._next < self._size:
            end = min(self._next + READ_PART, self._size) - 1
            self._parts.append(self._pool.submit(self._fetch, self._next, end))
            self._next = end + 1

    def _first(self, first: BodyReader) -> bytes:
        try:
            data = _read_all(first)
        except Exception:  # noqa: BLE001 - the body broke off: ask for the part again, as for every other part
            return self._fetch(0, READ_PART - 1)
        return data if len(data) == READ_PART else self._fetch(0, READ_PART - 1)

    def _fetch(self, start: int, end: int) -> bytes:
        for attempt in range(1, BODY_ATTEMPTS + 1):
            try:
                response = self._client.get_object(Bucket=self._bucket, Key=self._full_key,
                                                   Range=f"bytes={start}-{end}", IfMatch=self._etag)
                data: bytes = response["Body"].read()
            except (BotoCoreError, OSError) as exc:  # the body broke off: ask for the part again
                if attempt == BODY_ATTEMPTS:
                    raise self._error(exc, "reading", self._key) from exc
                continue
            except ClientError as exc:
                raise self._error(exc, "reading", self._key) from exc
            if len(data) != end - start + 1:
                if attempt == BODY_ATTEMPTS:
                    raise self._error(OSError(f"bytes {start}-{end}: {len(data)} bytes received"), "reading",
                                      self._key)
                continue
            return data
        raise AssertionError("unreachable")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if not self._parts:
                return 0
            data = self._parts.popleft().result()
            self._fill()
            self._pending = memoryview(data)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            for part in self._parts:
                part.cancel()
            self._parts.clear()
            self._pending = memoryview(b"")
            self._pool.shutdown(wait=False, cancel_futures=True)
            super().close()


def _read_all(reader: BodyReader) -> bytes:
    chunks = []
    try:
        while chunk := reader.read(MIB):
            chunks.append(chunk)
    finally:
        reader.close()
    return b"".join(chunks)
