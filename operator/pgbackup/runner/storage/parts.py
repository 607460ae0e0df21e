"""Uploading the parts of one multipart upload concurrently, with the bytes held in memory bounded.

The stream that fills a part keeps going while earlier parts are still on the wire: a bounded queue between
the compress/encrypt/hash stage and the network. `submit` blocks until the parts in flight plus the part just
finished plus the next one filling fit in `budget`; a part too large for that (two of them do not fit) is
uploaded alone, as before, while the stream waits. Parts held in memory: at most max(`budget`, one part),
whatever the size of the object.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

MIB = 1024 * 1024
PART_MEMORY = 48 * MIB
"""Bytes of parts held at once: the ones uploading and the one filling (one part, when a part is larger). With
16 MiB parts, 2 on the wire and 1 filling: a physical backup to S3 (pg_basebackup compressing with 2 workers, ~70
MiB, beside the runner) then stays under 200 MiB."""
MAX_IN_FLIGHT = 4
"""Parts uploading at once, at most."""


class PartUploads:
    """Runs `upload(number, body)` calls on worker threads; `results()` gives the ETags in part order.

    A failed upload is raised by the next `submit` (so a failing upload stops the stream early) or by
    `results()`; `cancel()` drops the parts not started and waits for the ones on the wire, so that an abort
    of the multipart upload comes after them and leaves nothing behind.
    """

    def __init__(self, upload: Callable[[int, bytes], str], *, budget: int = PART_MEMORY,
                 workers: int = MAX_IN_FLIGHT) -> None:
        self._upload = upload
        self._budget = budget
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgbackup-upload")
        self._workers = workers
        self._in_flight: deque[tuple[Future[str], int]] = deque()
        self._in_flight_bytes = 0
        self._etags: dict[int, str] = {}
        self._futures: dict[Future[str], int] = {}

    def submit(self, number: int, body: bytes) -> None:
        """Queue part `number`; blocks until it and the next part fit beside the parts in flight (until it is
        uploaded, when two such parts do not fit in the budget); raises an earlier failure."""
        self._collect(block=False)
        while self._in_flight and (len(self._in_flight) >= self._workers
                                   or self._in_flight_bytes + 2 * len(body) > self._budget):
            self._collect(block=True)
        future = self._pool.submit(self._upload, number, body)
        self._futures[future] = number
        self._in_flight.append((future, len(body)))
        self._in_flight_bytes += len(body)
        if 2 * len(body) > self._budget:  # no room for the next part beside this one
            while self._in_flight:
                self._collect(block=True)

    def _collect(self, *, block: bool) -> None:
        """Take the finished uploads (waiting for one if `block`); raise the first failure."""
        if block and self._in_flight:
            wait([future for future, _ in self._in_flight], return_when=FIRST_COMPLETED)
        still: deque[tuple[Future[str], int]] = deque()
        for future, size in self._in_flight:
            if future.done():
                self._in_flight_bytes -= size
                self._etags[self._futures.pop(future)] = future.result()  # raises the upload's error
            else:
                still.append((future, size))
        self._in_flight = still

    def results(self) -> list[tuple[int, str]]:
        """Wait for every part; (PartNumber, ETag) in part order. Raises the first failure."""
        while self._in_flight:
            self._collect(block=True)
        self._pool.shutdown(wait=True)
        return sorted(self._etags.items())

    @property
    def count(self) -> int:
        """Parts submitted so far."""
        return len(self._etags) + len(self._in_flight)

    def cancel(self) -> None:
        """Drop the parts not started yet and wait for the ones being sent (their errors are not raised)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._in_flight.clear()
        self._in_flight_bytes = 0
