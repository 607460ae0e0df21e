"""The streaming pipeline: source -> compress (zstd/gzip/none) -> age encryption -> SHA-256 -> storage, and back.

Memory stays bounded whatever the size: bytes flow in chunks, the only large buffer is the S3 part being
uploaded. Encryption uses pyrage (the Rust `age` crate), whose encrypt_io/decrypt_io stream in 64 KiB
chunks; the output is the standard age format, so `age -d -i key.txt x.zst.age | zstd -d` restores a
backup in an emergency without any code of ours.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, Protocol

import pyrage
import zstandard

from pgbackup.api import jobenv
from pgbackup.api.policy import Compression
from pgbackup.runner.log import Progress
from pgbackup.runner.storage.base import ObjectWriter, Storage, StorageError

CHUNK = 1024 * 1024
ZSTD_JOB_SIZE = 4 * 1024 * 1024
_DECRYPT_QUEUE_CHUNKS = 16
_DECRYPT_COALESCE = 256 * 1024
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
                pyrage.encrypt_io(reader, sink, age_recipients)
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


def load_identity(path_or_env: str | Path | None = None) -> str:
    """The age identity (AGE-SECRET-KEY-1... lines) from a file: the given path, or the file named by
    $PGBACKUP_AGE_IDENTITY_FILE (mounted from the identity Secret in restore and verification Jobs)."""
    source = path_or_env
    if source is None or (isinstance(source, str) and source == jobenv.ENV_AGE_IDENTITY_FILE):
        source = os.environ.get(jobenv.ENV_AGE_IDENTITY_FILE)
        if not source:
            raise IdentityError(
                f"no age identity: ${jobenv.ENV_AGE_IDENTITY_FILE} is not set; set encryption.identitySecret "
                f"so restore and verification Jobs mount the private key"
            )
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise IdentityError(
            f"cannot read the age identity file {path}: {exc.strerror}; check the identity Secret is mounted"
        ) from exc
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines or not all(line.upper().startswith("AGE-SECRET-KEY-1") for line in lines):
        raise IdentityError(
            f"{path} holds no age identity (expected lines AGE-SECRET-KEY-1..., as written by `age-keygen`)"
        )
    return "\n".join(lines)


def _parse_identities(identity: str) -> list[Any]:
    identities = []
    for line in identity.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except Exception as exc:
            raise IdentityError("the age identity is malformed (expected AGE-SECRET-KEY-1... from `age-keygen`)") from exc
    if not identities:
        raise IdentityError("the age identity is empty (expected AGE-SECRET-KEY-1... from `age-keygen`)")
    return identities


class _VerifyingReader(io.RawIOBase):
    """Reads the stored bytes, counting and hashing them; verify() compares with what the manifest says."""

    def __init__(self, raw: BinaryIO, obj: StoredObjectLike, location: str) -> None:
        self._raw = raw
        self._obj = obj
        self._location = location
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.eof:
            return 0
        data = self._raw.read(len(buffer))
        if not data:
            self.eof = True
            return 0
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        self.size += n
        return n

    def drain(self) -> None:
        buffer = bytearray(CHUNK)
        while self.readinto(buffer):
            pass

    def mismatch(self) -> str | None:
        if self.size != self._obj.size:
            kind = "truncated" if self.size < self._obj.size else "longer than recorded"
            return f"{kind}: {self.size} bytes stored, {self._obj.size} recorded"
        if self.sha256.hexdigest() != self._obj.sha256:
            return f"corrupted: SHA-256 {self.sha256.hexdigest()} != recorded {self._obj.sha256}"
        return None

    def verify(self) -> None:
        self.drain()
        problem = self.mismatch()
        if problem:
            raise IntegrityError(
                f"object {self._location} is {problem}; this backup cannot be restored from this object: "
                f"use another backup and run `pgbackup check` on the rest"
            )

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


class _DecryptingReader(io.RawIOBase):
    """Decrypts in a thread (pyrage.decrypt_io pushes to a writer) and hands chunks over a bounded queue."""

    _END = object()

    def __init__(self, source: io.RawIOBase, identities: list[Any], on_error: Callable[[BaseException], BaseException]) -> None:
        self._source = source
        self._identities = identities
        self._on_error = on_error
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=_DECRYPT_QUEUE_CHUNKS)
        self._pending = memoryview(b"")
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="age-decrypt", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def _run(self) -> None:
        outer = self
        buffered = bytearray()

        class Sink:
            def write(self, data: Any) -> int:
                buffered.extend(data)
                if len(buffered) >= _DECRYPT_COALESCE:
                    outer._put(bytes(buffered))
                    buffered.clear()
                return len(data)

            def flush(self) -> None:
                pass

            def writable(self) -> bool:
                return True

        try:
            pyrage.decrypt_io(self._source, Sink(), self._identities)
            if buffered:
                self._put(bytes(buffered))
            self._put(self._END)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the reading thread
            try:
                self._put(exc)
            except _Stopped:
                return

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if self._finished:
                return 0
            item = self._queue.get()
            if item is self._END:
                self._finished = True
                return 0
            if isinstance(item, BaseException):
                self._finished = True
                raise self._on_error(item)
            self._pending = memoryview(item)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def peek_first(self) -> None:
        """Wait for the first decrypted bytes (or the end) so a wrong identity fails at open time."""
        if self._pending or self._finished:
            return
        item = self._queue.get()
        if item is self._END:
            self._finished = True
        elif isinstance(item, BaseException):
            self._finished = True
            raise self._on_error(item)
        else:
            self._pending = memoryview(item)

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._thread.join(timeout=5)
            super().close()


class _Stopped(Exception):
    pass


class _CheckedStream(io.RawIOBase):
    """The original bytes; at their end (or on a decoding error) the stored bytes are verified, so a
    corrupted or truncated object raises IntegrityError instead of yielding wrong data silently."""

    def __init__(
        self, inner: Any, verifier: _VerifyingReader, location: str, quiesce: Callable[[], None] = lambda: None
    ) -> None:
        self._inner = inner
        self._verifier = verifier
        self._location = location
        self._quiesce = quiesce  # stops the decryption thread before the verifier is drained here
        self._verified = False

    def readable(self) -> bool:
        return True

    def _damaged(self, exc: Exception) -> NoReturn:
        # A decoding error is almost always damage: prefer the integrity verdict when there is one.
        self._quiesce()
        self._verifier.verify()
        if isinstance(exc, StorageError):
            raise exc
        raise DecryptionError(f"reading {self._location} failed: {type(exc).__name__}: {exc}") from exc

    def readinto(self, buffer: Any) -> int:
        if self._verified:
            return 0
        try:
            data = self._inner.read(len(buffer))
        except (IntegrityError, IdentityError):
            raise
        except StorageError as exc:
            if not isinstance(exc, DecryptionError):
                raise  # the storage itself failed (network, permissions): nothing to verify
            self._damaged(exc)
        except Exception as exc:
            self._damaged(exc)
        if not data:
            self._verifier.verify()
            self._verified = True
            return 0
        n = len(data)
        buffer[:n] = data
        return n


def _decrypt_error(location: str, recipients: Sequence[str], identities: list[Any]) -> Callable[[BaseException], BaseException]:
    def convert(exc: BaseException) -> BaseException:
        if isinstance(exc, StorageError):
            return exc
        text = str(exc)
        if "no matching" in text.lower() or "NoMatchingKeys" in text:
            public = ", ".join(str(identity.to_public()) for identity in identities)
            wanted = f" for recipients {', '.join(recipients)}" if recipients else ""
            return IdentityError(
                f"object {location} is encrypted{wanted}, but the identity given (public key {public}) is not one "
                f"of them; mount the identity Secret (encryption.identitySecret) that holds the matching private key"
            )
        return DecryptionError(f"decrypting {location} failed: {type(exc).__name__}: {text}")

    return convert


@contextmanager
def open_stored(
    storage: Storage,
    obj: StoredObjectLike,
    *,
    identity: str | None = None,
    recipients: Sequence[str] = (),
) -> Iterator[BinaryIO]:
    """A readable stream of the ORIGINAL bytes of a stored object (decrypted, decompressed).

    Size and SHA-256 of the stored bytes are verified when the stream is read to its end: a damaged
    object raises IntegrityError naming it. `recipients` only improve the wrong-identity error message.
    """
    location = storage.location(obj.key)
    identities: list[Any] = []
    if obj.encrypted:
        if not identity:
            wanted = f" for recipients {', '.join(recipients)}" if recipients else ""
            raise IdentityError(
                f"object {location} is encrypted{wanted}; mount the identity Secret (encryption.identitySecret, "
                f"file in ${jobenv.ENV_AGE_IDENTITY_FILE}) holding the matching AGE-SECRET-KEY to read it"
            )
        identities = _parse_identities(identity)
    verifier = _VerifyingReader(storage.open_reader(obj.key), obj, location)
    layers: list[Any] = [verifier]
    try:
        layer: Any = verifier
        quiesce: Callable[[], None] = lambda: None
        if obj.encrypted:
            decrypting = _DecryptingReader(verifier, identities, _decrypt_error(location, recipients, identities))
            layers.append(decrypting)
            decrypting.peek_first()
            layer = decrypting
            quiesce = decrypting.close
        if obj.compression == "zstd":
            layer = zstandard.ZstdDecompressor().stream_reader(layer, read_size=CHUNK, read_across_frames=True)
            layers.append(layer)
        elif obj.compression == "gzip":
            layer = gzip.GzipFile(fileobj=layer, mode="rb")
            layers.append(layer)
        elif obj.compression != "none":
            raise StorageError(f"object {location}: unknown compression {obj.compression!r}")
        stream = io.BufferedReader(_CheckedStream(layer, verifier, location, quiesce), buffer_size=CHUNK)
        layers.append(stream)
        yield stream
    finally:
        for opened in reversed(layers):
            try:
                opened.close()
            except Exception:  # noqa: BLE001 - closing after a failure must not hide it
                pass
