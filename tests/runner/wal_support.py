"""Helpers the WAL streaming tests share: connection parameters, forcing a segment switch, waiting, and a
WalStreamer looping in a thread."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator

from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.wal.slots import receiver_slot_name
from pgbackup.runner.wal.stream import WalStreamer
from tests.fixtures.postgres import PgFactory, PgServer


def wal_server(pg_factory: PgFactory, name: str) -> Iterator[PgServer]:
    """A PostgreSQL 15 server of its own for a WAL test module, with a table to write WAL into; replication slots
    left inactive by the tests are dropped afterwards."""
    server = pg_factory.get("15", name)
    server.query("CREATE TABLE IF NOT EXISTS filler (id serial PRIMARY KEY, pad text)")
    yield server
    server.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active")


def clean_up_stream_command(proc: subprocess.Popen[str], server: PgServer, slot: str) -> None:
    """After a `pgbackup wal-stream` subprocess test: kill it if it still runs, drop its slots if they are idle."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    drop_slots(server, slot)


def drop_slots(server: PgServer, slot: str) -> None:
    """Drop a streamer's archive slot and its receiver slot (those not in use): servers have few slots."""
    server.query(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                 f"WHERE slot_name IN ('{slot}', '{receiver_slot_name(slot)}') AND NOT active")


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
