"""Following pg_basebackup's zstd stream: bytes pass unchanged, the decompressed side comes in bounded pieces
(however well the data compresses), and a stream that is not one complete frame fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import zstandard

from pgbackup.runner.storage.zstd_follow import ZstdFollowError, follow_zstd

MIB = 1024 * 1024


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def frame(raw: bytes, **params: int) -> bytes:
    compressor = zstandard.ZstdCompressor(level=3, **params)
    chunker = compressor.chunker(chunk_size=64 * 1024)  # streamed, as pg_basebackup writes it: no content size
    return b"".join([*chunker.compress(raw), *chunker.finish()])


@pytest.mark.parametrize("chunk", [7, 64 * 1024, MIB])
def test_compressed_bytes_pass_unchanged_and_raw_bytes_come_in_bounded_pieces(chunk: int) -> None:
    # 48 MiB of zeros (a WAL segment's unused tail) are a few hundred bytes of zstd: one read used to
    # decompress into a single 48 MiB object
    raw = os.urandom(MIB) + bytes(48 * MIB) + os.urandom(MIB)
    compressed = frame(raw, threads=2)
    pieces: list[int] = []
    seen = bytearray()

    def on_raw(piece: bytes) -> None:
        pieces.append(len(piece))
        seen.extend(piece)

    passed = b"".join(follow_zstd(chunked(compressed, chunk), on_raw, piece=256 * 1024))
    assert passed == compressed
    assert bytes(seen) == raw
    assert max(pieces) <= 256 * 1024


def test_a_frame_cut_short_fails() -> None:
    compressed = frame(os.urandom(3 * MIB))
    with pytest.raises(ZstdFollowError, match="ended in the middle of a frame"):
        list(follow_zstd(chunked(compressed[:-5], 4096), lambda piece: None))


def test_bytes_after_the_frame_fail() -> None:
    compressed = frame(os.urandom(MIB))
    with pytest.raises(ZstdFollowError, match="goes on after the end of its frame"):
        list(follow_zstd([compressed, b"more"], lambda piece: None))


def test_what_is_not_zstd_fails() -> None:
    with pytest.raises(ZstdFollowError, match="does not decode"):
        list(follow_zstd([b"this is a plain tar, not zstd" * 100], lambda piece: None))


def test_the_source_is_read_to_its_end_so_its_own_errors_surface() -> None:
    compressed = frame(os.urandom(MIB))

    def program_output() -> Iterator[bytes]:
        yield compressed
        raise RuntimeError("pg_basebackup exited 1")  # what ChildOutput raises once the program's stdout ends

    with pytest.raises(RuntimeError, match="exited 1"):
        list(follow_zstd(program_output(), lambda piece: None))
