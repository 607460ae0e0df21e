"""Reading a stored object back: storage -> verify size and SHA-256 -> age decryption -> decompress -> the
original bytes, as one stream. A damaged object raises IntegrityError naming it when the stream is read to its
end; a wrong or missing identity raises IdentityError before the first byte."""

from __future__ import annotations

import gzip
import hashlib
import io
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO, NoReturn

import pyrage
import zstandard

from pgbackup.api import jobenv
from pgbackup.runner.common.config import CHUNK
from pgbackup.runner.storage.base import Storage, StorageError
from pgbackup.runner.storage.identity import parse_identities
from pgbackup.runner.storage.pipeline import DecryptionError, IdentityError, IntegrityError, StoredObjectLike

_DECRYPT_QUEUE_CHUNKS = 16
_DECRYPT_COALESCE = 256 * 1024


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
            # pyrage reads and writes any object with read()/write(); its stubs ask for BufferedIOBase
            pyrage.decrypt_io(self._source, Sink(), self._identities)  # type: ignore[arg-type]
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
        identities = parse_identities(identity)
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
