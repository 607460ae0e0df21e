"""Helpers the WAL streaming tests share: connection parameters, forcing a segment switch, waiting, and a
WalStreamer looping in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pgbackup.runner.pg import ConnParams
from pgbackup.runner.wal.stream import WalStreamer
from tests.fixtures.postgres import PgServer


def conn_params(server: PgServer, port: int | None = None) -> ConnParams:
    return ConnParams(host=server.host, port=port or server.port, user=server.user, password=server.password,
                      sslmode="disable")


def switch_wal(server: PgServer) -> str:
    """Write a little WAL and end the segment; returns the name of the segment just completed."""
    server.query("INSERT INTO filler (pad) SELECT repeat('x', 100) FROM generate_series(1, 200)")
    return str(server.query("SELECT pg_walfile_name(pg_switch_wal())")[0][0])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Running:
    """A WalStreamer looping in a thread until stopped."""

    def __init__(self, streamer: WalStreamer) -> None:
        self.streamer = streamer
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.streamer.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in stop()
            self.error = exc

    def stop(self) -> None:
        self.streamer.stop.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "the streamer did not stop"
        if self.error is not None:
            raise self.error
