"""PartUploads (the queue between the backup stream and S3): parts go out concurrently, memory stays bounded,
a failure stops the stream and the ETags come back in part order."""

from __future__ import annotations

import threading
import time

import pytest

from pgbackup.runner.storage.parts import MIB, PART_MEMORY, PartUploads


class Recorder:
    """An upload that takes a moment and records how many parts (and bytes) were on the wire at once."""

    def __init__(self, fail_part: int | None = None) -> None:
        self.lock = threading.Lock()
        self.on_wire: dict[int, int] = {}
        self.most_parts = 0
        self.most_bytes = 0
        self.fail_part = fail_part

    def __call__(self, number: int, body: bytes) -> str:
        with self.lock:
            self.on_wire[number] = len(body)
            self.most_parts = max(self.most_parts, len(self.on_wire))
            self.most_bytes = max(self.most_bytes, sum(self.on_wire.values()))
        time.sleep(0.05)  # the network (not an assertion)
        with self.lock:
            del self.on_wire[number]
        if number == self.fail_part:
            raise OSError(f"part {number} refused")
        return f"etag-{number}"


def test_small_parts_go_out_concurrently_within_the_memory_budget() -> None:
    upload = Recorder()
    parts = PartUploads(upload, budget=64)
    for number in range(1, 13):
        parts.submit(number, b"x" * 16)
    assert parts.results() == [(n, f"etag-{n}") for n in range(1, 13)]
    assert upload.most_parts == 3, "3 parts on the wire, the 4th filling: 64 bytes"
    assert upload.most_bytes + 16 <= 64


def test_parts_larger_than_half_the_budget_go_one_at_a_time() -> None:
    upload = Recorder()
    parts = PartUploads(upload, budget=64)
    for number in range(1, 5):
        parts.submit(number, b"x" * 40)
    assert parts.results() == [(n, f"etag-{n}") for n in range(1, 5)]
    assert upload.most_parts == 1, "memory stays at one part, as without the queue"


def test_a_failed_part_stops_the_stream_at_the_next_part() -> None:
    upload = Recorder(fail_part=1)
    parts = PartUploads(upload, budget=64)
    parts.submit(1, b"x" * 16)
    with pytest.raises(OSError, match="part 1 refused"):
        for number in range(2, 100):
            parts.submit(number, b"x" * 16)
    parts.cancel()
    assert upload.on_wire == {}, "cancel() returns after the parts on the wire"


def test_benchmark_sized_parts_keep_two_on_the_wire_within_the_default_budget() -> None:
    # 16 MiB parts (the benchmark's partSizeMib): 2 uploading + 1 filling = 48 MiB, whatever the object's size;
    # with pg_basebackup's own ~70 MiB beside it, a physical backup to S3 stays under 200 MiB
    upload = Recorder()
    parts = PartUploads(upload)
    body = b"x" * (16 * MIB)
    for number in range(1, 9):
        parts.submit(number, body)
    parts.results()
    assert upload.most_parts == 2
    assert upload.most_bytes + len(body) <= PART_MEMORY == 48 * MIB
