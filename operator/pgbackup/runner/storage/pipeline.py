"""The streaming pipeline: source -> compress (zstd/gzip/none) -> age encryption -> SHA-256 -> storage, and back
(storage.readback; the age identity it needs: storage.identity).

Memory stays bounded whatever the size: bytes flow in chunks, the only large buffer is the S3 part being
uploaded. Encryption uses pyrage (the Rust `age` crate), whose encrypt_io/decrypt_io stream in 64 KiB
chunks; the output is the standard age format, so `age -d -i key.txt x.zst.age | zstd -d` restores a
backup in an emergency without any code of ours.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import pyrage
import zstandard

from pgbackup.api.policy import Compression
from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.common.log import Progress
from pgbackup.runner.storage.base import ObjectWriter, Storage, StorageError

ZSTD_JOB_SIZE = 4 * 1024 * 1024
SUFFIXES = {"zstd": ".zst", "gzip": ".gz", "none": ""}
AGE_SUFFIX = ".age"


class IntegrityError(StorageError):
    """A stored object does not match its recorded size or SHA-256 (corrupted or truncated)."""


class IdentityError(StorageError):
    """An encrypted object cannot be decrypted: no identity, or not one of its recipients."""


class DecryptionError(StorageError):
    """Decrypting or decompressing a stored object failed although its size and SHA-256 match."""


@dataclass(frozen=True)
class StoredObject:
    """What store_stream wrote: the final key and the facts a manifest records about it."""

    key: str
    size: int  # stored bytes (compressed, encrypted)
    raw_size: int  # bytes read from the source
    sha256: str  # of the stored bytes
    compression: str  # zstd | gzip | none
    encrypted: bool


class StoredObjectLike(Protocol):
    """StoredObject or a manifest's object entry (with a storage key)."""

    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def compression(self) -> str: ...
    @property
    def encrypted(self) -> bool: ...


def stored_key(key: str, compression: str, encrypted: bool) -> str:
    """The key an object is stored under: suffixes .zst/.gz and .age appended."""
    return key + SUFFIXES[compression] + (AGE_SUFFIX if encrypted else "")


# --- storing ------------------------------------------------------------------------------------


def _source_chunks(source: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
    read = getattr(source, "read", None)
    if read is None:
        for chunk in source:
            if chunk:
                yield bytes(chunk)
        return
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return
        yield chunk


def _zstd_threads(compression: Compression) -> int:
    if compression.threads:
        return compression.threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _compressed(chunks: Iterable[bytes], compression: Compression) -> Iterator[bytes]:
    if compression.algorithm == "none":
        yield from chunks
        return
    if compression.algorithm == "zstd":
        yield from _zstd_compressed(chunks, compression)
        return
    compressor = zlib.compressobj(compression.effective_level(), zlib.DEFLATED, 31)  # 31 = gzip container
    for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    tail = compressor.flush()
    if tail:
        yield tail


def _zstd_compressed(chunks: Iterable[bytes], compression: Compression) -> Iterator[bytes]:
    threads = _zstd_threads(compression)
    # Multi-threaded zstd buffers whole jobs per worker; 4 MiB jobs keep that near 30 MiB at level 3
    # (the default job size grows with the level and, with compressobj(), memory grows without bound).
    params = zstandard.ZstdCompressionParameters.from_level(
        compression.effective_level(),
        threads=threads if threads > 1 else 0,
        job_size=ZSTD_JOB_SIZE if threads > 1 else 0,
        write_checksum=True,
    )
    chunker = zstandard.ZstdCompressor(compression_params=params).chunker(chunk_size=CHUNK)
    for chunk in chunks:
        yield from chunker.compress(chunk)
    yield from chunker.finish()  # type: ignore[no-untyped-call]


class _HashingSink:
    """Counts and hashes the stored bytes on their way to the storage writer."""

    def __init__(self, writer: ObjectWriter) -> None:
        self.writer = writer
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def write(self, data: Any) -> int:
        data = bytes(data)
        try:
            self.writer.write(data)
        except BaseException as exc:  # kept: pyrage turns it into a generic error
            self.error = exc
            raise
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True


class _IterReader(io.RawIOBase):
    """A pull stream over an iterator of chunks (what pyrage.encrypt_io reads from)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                chunk = next(self._chunks, None)
            except BaseException as exc:  # kept: pyrage turns it into a generic error
                self.error = exc
                raise
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def parse_recipients(recipients: Sequence[str]) -> list[Any]:
    parsed = []
    for recipient in recipients:
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(recipient.strip()))
        except Exception as exc:
            raise StorageError(
                f"encryption recipient {recipient[:16]!r}... is not a valid age public key (age1...): "
                f"generate one with `age-keygen` and put its public key in encryption.recipients"
            ) from exc
    return parsed


def store_stream(
    source: BinaryIO | Iterable[bytes],
    storage: Storage,
    key: str,
    *,
    compression: Compression,
    recipients: Sequence[str] = (),
    progress: Progress | None = None,
) -> StoredObject:
    """Compress, optionally encrypt, hash and upload `source` under `key` + suffixes; return what was stored.

    On any exception (from the source, the compressor, the encryption or the storage) the upload is
    aborted, so nothing appears under the key, and the exception propagates.
    """
    encrypted = bool(recipients)
    age_recipients = parse_recipients(recipients) if encrypted else []
    final_key = stored_key(key, compression.algorithm, encrypted)
    own_progress = progress is None
    tracker = progress or Progress("store", key=final_key)
    raw_size = 0

    def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal raw_size
        for chunk in chunks:
            raw_size += len(chunk)
            tracker.add(len(chunk))
            yield chunk

    writer = storage.open_writer(final_key)
    sink = _HashingSink(writer)
    try:
        compressed = _compressed(counted(_source_chunks(source)), compression)
        if encrypted:
            reader = _IterReader(compressed)
            try:
                # pyrage reads and writes any object with read()/write(); its stubs ask for BufferedIOBase
                pyrage.encrypt_io(reader, sink, age_recipients)  # type: ignore[arg-type]
            except BaseException as exc:
                original = reader.error or sink.error
                if original is not None and original is not exc:
                    raise original from None
                raise
        else:
            for chunk in compressed:
                sink.write(chunk)
        writer.commit()
    except BaseException:
        try:
            writer.abort()
        except Exception:  # noqa: BLE001 - the original failure is the one to report
            pass
        raise
    finally:
        if own_progress:
            tracker.done()
    return StoredObject(
        key=final_key,
        size=sink.size,
        raw_size=raw_size,
        sha256=sink.sha256.hexdigest(),
        compression=compression.algorithm,
        encrypted=encrypted,
    )


# --- reading back ------------------------------------------------------------------------------
