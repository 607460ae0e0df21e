"""Following a zstd stream as it passes: the compressed chunks go on unchanged while their decompressed bytes are
handed to a callback in pieces of at most `piece` bytes, so memory stays bounded however well the data
compresses (16 MiB of zeros, e.g. a WAL segment's unused tail, are a few bytes of zstd: decompressing a whole
chunk at once made one 100 MiB bytes object out of a 64 KiB read).

A stream must be exactly one complete frame: one cut short (the decompressor asked for more input after the
source ended) or with bytes after its end fails with ZstdFollowError.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO, cast

import zstandard

RAW_PIECE = 1 << 20
"""Decompressed bytes handed to the callback at once, at most."""


class ZstdFollowError(Exception):
    """The stream is not one complete zstd frame: it does not decode, ends early, or goes on after its end."""


class _Tee:
    """The reader the decompressor pulls from: it hands out the source's chunks and keeps them to be passed on."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = memoryview(b"")
        self.passed: deque[bytes] = deque()
        self.ran_dry = False  # the decompressor asked for more after the source ended: the frame is cut short

    def read(self, size: int) -> bytes:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.ran_dry = True
                return b""
            self.passed.append(chunk)
            self._rest = memoryview(chunk)
        piece, self._rest = self._rest[:size], self._rest[size:]
        return piece.tobytes()


def follow_zstd(chunks: Iterable[bytes], on_raw: Callable[[bytes], None], *, piece: int = RAW_PIECE,
                read_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield `chunks` unchanged while calling `on_raw` with their decompressed bytes (`piece` bytes at most each).

    Raises ZstdFollowError when the stream does not decode, is not one complete frame, or has bytes after it;
    errors of the source (e.g. its program failing) propagate as they are.
    """
    source = iter(chunks)
    tee = _Tee(source)
    # read_to_iter only calls read(size): any object with that will do
    decompressed = zstandard.ZstdDecompressor().read_to_iter(cast(IO[bytes], tee), read_size=read_size, write_size=piece)
    try:
        for raw in decompressed:
            on_raw(raw)
            while tee.passed:
                yield tee.passed.popleft()
    except zstandard.ZstdError as exc:
        raise ZstdFollowError(f"the zstd stream does not decode ({exc})") from exc
    while tee.passed:
        yield tee.passed.popleft()
    if tee.ran_dry:
        raise ZstdFollowError("the zstd stream ended in the middle of a frame")
    for extra in source:  # read to its end, so that a program behind it is waited for and checked
        if extra:
            raise ZstdFollowError("the zstd stream goes on after the end of its frame")
