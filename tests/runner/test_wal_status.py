"""The WAL streamer's status server (pgbackup.api.wal) against a real PostgreSQL 15 and a real volume: GET /status
answers a WalStreamState the operator can parse (streaming, last archived segment, slot, LSNs, gaps, the
recoverability window), /healthz follows the loop's liveness, failures land in `error` while the server keeps
answering, and no answer ever holds the password."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgbackup.api.wal import WalStreamState
from pgbackup.builders.wal_state import evaluate_wal
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import find_tools
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.status import WalStateTracker, _age_of, _Sample
from pgbackup.runner.wal.status_server import StatusServer, status_port
from pgbackup.runner.wal.slots import default_slot_name, receiver_slot_name
from pgbackup.runner.wal.stream import WalStreamer
from pgbackup.runner.wal.xlog import parse_lsn
from tests.fixtures.postgres import SUPERUSER_PASSWORD, PgFactory, PgServer, backup_policy, free_port
from tests.runner.wal_support import Running, clean_up_stream_command, conn_params, switch_wal, wait_until, wal_server

SLOT = "pgbackup_test_status"


@pytest.fixture(scope="module")
def status_server(pg_factory: PgFactory) -> Iterator[PgServer]:
    yield from wal_server(pg_factory, "walstatus")


class Client:
    """GETs against a status server; remembers every body so the test can look for secrets in all of them."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.bodies: list[str] = []

    def get(self, path: str) -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as answer:
                code, kind, body = answer.status, answer.headers["Content-Type"], answer.read().decode()
        except urllib.error.HTTPError as error:
            code, kind, body = error.code, error.headers["Content-Type"], error.read().decode()
        self.bodies.append(body)
        return code, kind, body

    def state(self) -> WalStreamState:
        code, kind, body = self.get("/status")
        assert (code, kind) == (200, "application/json")
        return WalStreamState.model_validate_json(body)


def test_status_follows_streaming_gaps_and_a_dropped_slot(status_server: PgServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    archive = WalArchive(FilesystemStorage(volume))
    tracker = WalStateTracker(conn_params(status_server), archive, slot=SLOT, refresh_interval=0.2, catalog_interval=0,
                              stall_after=60)
    http = StatusServer(tracker, host="127.0.0.1", port=0).start()
    client = Client(http.port)
    tracker.start()
    streamer = WalStreamer(conn_params(status_server), find_tools(15), archive, slot=SLOT, directory=tmp_path / "wal",
                           partial_interval=0.3, progress_interval=5, poll_interval=0.1, status_interval=1,
                           observer=tracker)
    running = Running(streamer)
    try:
        wait_until(lambda: client.state().streaming and bool(status_server.query(
            f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{receiver_slot_name(SLOT)}' AND active")),
            "pg_receivewal")
        for name, value in {"PGUSER": status_server.user, "PGPASSWORD": status_server.password,
                            "PGBACKUP_VOLUME_ROOT": str(volume), "PGBACKUP_SCRATCH": str(tmp_path),
                            "PGBACKUP_SUMMARY_FILE": str(tmp_path / "summary")}.items():
            monkeypatch.setenv(name, value)
        policy = backup_policy(status_server, {"volume": {"claimName": "backups"}}, method="physical")
        code, summary = backup_command(policy_from_document(policy, "status"))
        assert code == 0, summary.error
        segments = [switch_wal(status_server) for _ in range(3)]

        def caught_up() -> bool:
            state = client.state()
            return state.last_archived_segment == segments[-1] and state.first_recoverable_point is not None

        wait_until(caught_up, f"{segments[-1]} and the base backup in /status")
        state = client.state()
        assert state.streaming and state.error is None
        assert state.slot_name == SLOT and state.slot_exists
        assert state.slot_retained_bytes is not None and state.slot_retained_bytes >= 0
        assert state.gaps == []
        assert state.server_lsn and state.archived_lsn and state.timeline == 1
        assert state.lag_bytes is not None and state.lag_bytes >= 0
        assert state.lag_seconds is not None and state.lag_seconds >= 0
        assert state.last_archived_at is not None and state.updated_at is not None
        assert state.last_recoverable_point is not None
        assert state.first_recoverable_point <= state.last_recoverable_point  # type: ignore[operator]
        assert client.get("/healthz")[0] == 200
        assert client.get("/nothing-here")[0] == 404

        full_end = parse_lsn(state.archived_lsn)
        status_server.query("INSERT INTO filler (pad) VALUES ('only in the .partial')")  # no segment switch

        def partial_caught_up() -> bool:
            state = client.state()
            return (state.lag_bytes == 0 and parse_lsn(state.archived_lsn or "0/0") > full_end
                    and state.last_partial_at is not None)  # one state can show the LSN before the time of the ship

        wait_until(partial_caught_up, "archivedLsn to move into the shipped .partial, with the time it was shipped")
    finally:
        running.stop()

    tracker.refresh()
    stopped = client.state()
    assert not stopped.streaming and "stopped" in (stopped.error or "")

    archive.delete([segments[1]])  # a segment lost in storage
    status_server.query(f"SELECT pg_drop_replication_slot('{SLOT}')")  # and the slot dropped by someone
    wait_until(lambda: not client.state().slot_exists, "the missing slot in /status")
    broken = client.state()
    assert broken.gaps == [segments[1]]
    assert broken.slot_retained_bytes is None
    assert f"replication slot {SLOT!r} is missing" in (broken.error or "")
    assert segments[1] in (broken.error or "")
    tracker.stop()
    http.stop()
    assert all(status_server.password not in body for body in client.bodies)
    assert status_server.password == SUPERUSER_PASSWORD


def test_a_streamer_that_has_not_created_its_slot_yet_reports_starting_not_slot_missing(
        status_server: PgServer, tmp_path: Path) -> None:
    """/status answers before the loop has created the slot: until then the operator must see Starting, not a
    SlotMissing alarm (issue 11, item 4)."""
    slot = "pgbackup_test_status_starting"
    status_server.query(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        f"WHERE slot_name LIKE '{slot}%' AND NOT active")
    archive = WalArchive(FilesystemStorage(tmp_path))
    tracker = WalStateTracker(conn_params(status_server), archive, slot=slot)
    http = StatusServer(tracker, host="127.0.0.1", port=0).start()
    client = Client(http.port)
    policy = {"wal": {"enabled": True}}
    try:
        tracker.refresh()
        early = client.state()
        condition = evaluate_wal("orders-db", "team", policy, {}, early, None, datetime.now(UTC))
        assert early.starting and early.error is None, early.error
        assert early.slot_exists and early.slot_retained_bytes is None
        assert (condition.status, condition.reason) == ("Unknown", "Starting"), condition.message

        streamer = WalStreamer(conn_params(status_server), find_tools(15), archive, slot=slot,
                               directory=tmp_path / "wal", poll_interval=0.1, status_interval=1, observer=tracker)
        running = Running(streamer)
        try:
            wait_until(lambda: tracker.refresh().streaming, "the streamer to start")
            started = client.state()
        finally:
            running.stop()
    finally:
        http.stop()
        status_server.query(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                            f"WHERE slot_name LIKE '{slot}%' AND NOT active")
    assert not started.starting and started.slot_exists and started.error is None
    assert started.slot_retained_bytes is not None


def test_a_slot_that_cannot_be_created_is_reported_while_the_streamer_keeps_trying(status_server: PgServer,
                                                                                 tmp_path: Path) -> None:
    """A user without REPLICATION: the loop does not exit (a crash loop says nothing); /status says why."""
    status_server.query("DROP ROLE IF EXISTS walnorepl")
    status_server.query("CREATE ROLE walnorepl LOGIN PASSWORD 'walnorepl-pw'")
    params = ConnParams(host=status_server.host, port=status_server.port, user="walnorepl", password="walnorepl-pw",
                        sslmode="disable")
    archive = WalArchive(FilesystemStorage(tmp_path))
    tracker = WalStateTracker(params, archive, slot="pgbackup_test_norepl")
    streamer = WalStreamer(params, find_tools(15), archive, slot="pgbackup_test_norepl", directory=tmp_path / "wal",
                           poll_interval=0.1, observer=tracker)
    running = Running(streamer)
    try:
        wait_until(lambda: "pgbackup_test_norepl" in (tracker.refresh().error or ""), "the slot error in /status")
        state = tracker.snapshot()
        assert running.thread.is_alive() and running.error is None
    finally:
        running.stop()
        status_server.query("DROP ROLE IF EXISTS walnorepl")
    assert state.starting and not state.streaming
    assert "REPLICATION attribute" in (state.error or "") and "walnorepl-pw" not in (state.error or "")


def test_a_failing_refresh_is_reported_and_the_server_keeps_answering(status_server: PgServer,
                                                                      tmp_path: Path) -> None:
    nobody_listens = free_port()
    tracker = WalStateTracker(conn_params(status_server, nobody_listens), WalArchive(FilesystemStorage(tmp_path)),
                              slot=SLOT)
    http = StatusServer(tracker, host="127.0.0.1", port=0).start()
    client = Client(http.port)
    try:
        tracker.refresh()
        state = client.state()
    finally:
        http.stop()
    assert state.error is not None
    assert f"PostgreSQL at host 127.0.0.1 port {nobody_listens}" in state.error
    assert "Check that the server is up" in state.error
    assert state.server_lsn is None and state.updated_at is not None
    assert all(status_server.password not in body for body in client.bodies)


def test_healthz_fails_when_the_loop_stops_ticking(status_server: PgServer, tmp_path: Path) -> None:
    now = [1000.0]
    tracker = WalStateTracker(conn_params(status_server), WalArchive(FilesystemStorage(tmp_path)), slot=SLOT,
                              refresh_interval=15, clock=lambda: now[0])
    http = StatusServer(tracker, host="127.0.0.1", port=0).start()
    client = Client(http.port)
    try:
        tracker.tick()
        assert client.get("/healthz")[0] == 200
        now[0] += 46  # more than 3 x 15 s without a tick: the loop is stuck
        code, _, body = client.get("/healthz")
        assert code == 503 and "has not made progress" in body
        assert client.get("/status")[0] == 200  # readiness still answers
        tracker.tick()
        assert client.get("/healthz")[0] == 200
    finally:
        http.stop()


def test_lag_seconds_is_interpolated_between_lsn_samples() -> None:
    wall = datetime.now(UTC)
    samples = [_Sample(at=10.0, wall=wall, server_lsn=1000, flushed_lsn=None),
               _Sample(at=20.0, wall=wall, server_lsn=2000, flushed_lsn=None),
               _Sample(at=30.0, wall=wall, server_lsn=2000, flushed_lsn=None)]
    assert _age_of(2000, samples, now=31.0) == 0.0  # everything written is stored
    assert _age_of(1500, samples, now=31.0) == pytest.approx(16.0)  # written halfway between 10 s and 20 s
    assert _age_of(500, samples, now=31.0) == pytest.approx(21.0)  # older than every sample: at least this old


def test_status_port_comes_from_the_environment() -> None:
    assert status_port({}) == 8081
    assert status_port({"PGBACKUP_WAL_STATUS_PORT": "9090"}) == 9090
    with pytest.raises(UsageError, match="PGBACKUP_WAL_STATUS_PORT"):
        status_port({"PGBACKUP_WAL_STATUS_PORT": "http"})


def test_wal_stream_command_serves_its_status_until_sigterm(status_server: PgServer, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    port = free_port()
    policy = backup_policy(status_server, {"volume": {"claimName": "backups"}},
                           wal={"enabled": True, "partialUploadInterval": "1s"})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "PGUSER": status_server.user,
           "PGPASSWORD": status_server.password, "PGBACKUP_POLICY": json.dumps(policy),
           "PGBACKUP_VOLUME_ROOT": str(volume), "PGBACKUP_SCRATCH": str(tmp_path / "scratch"),
           "PGBACKUP_WAL_STATUS_PORT": str(port)}
    slot = default_slot_name("orders-db")
    proc = subprocess.Popen([sys.executable, "-m", "pgbackup.runner", "wal-stream"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = Client(port)

    def streaming() -> bool:
        try:
            return client.state().streaming
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, "pgbackup wal-stream exited"
            return False

    try:
        wait_until(streaming, "/status of pgbackup wal-stream")
        assert client.get("/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        clean_up_stream_command(proc, status_server, slot)
    assert proc.returncode == 0, stderr[-2000:]
    assert "wal.status.serving" in stderr
    with pytest.raises(urllib.error.URLError):  # stopped with the streamer
        client.get("/status")
    assert all(status_server.password not in body for body in client.bodies)
