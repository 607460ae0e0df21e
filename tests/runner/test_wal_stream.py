"""`pgbackup wal-stream` against a real PostgreSQL 15 (wal_level replica): pg_receivewal through a replication
slot, every completed segment shipped to real storage (a volume, and moto S3), no gap when pg_receivewal is
killed or PostgreSQL restarts, SIGTERM ships what is complete and exits cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import find_tools
from pgbackup.runner.restore.pitr import PitrTarget, policy_server_env, restore_to_point
from pgbackup.runner.storage.base import Storage
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.slots import default_slot_name, receiver_slot_name
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.wal.stream import WalStreamer, receiver_status_interval
from tests.fixtures.postgres import PgFactory, PgServer, backup_policy
from tests.fixtures.s3 import S3Bucket
from tests.runner.wal_support import (
    Running,
    clean_up_stream_command,
    conn_params,
    drop_slots,
    switch_wal,
    wait_until,
    wal_server,
)

SLOT = "pgbackup_test_stream"


@pytest.fixture(scope="module")
def stream_server(pg_factory: PgFactory) -> Iterator[PgServer]:
    """A server of its own: these tests restart it."""
    yield from wal_server(pg_factory, "walstream")


def _full(archive: WalArchive) -> list[str]:
    return [s.name for s in archive.segments() if not s.partial]


def _archived(archive: WalArchive, segment: str) -> Callable[[], bool]:
    return lambda: segment in _full(archive)


def _streamer(server: PgServer, storage: Storage, directory: Path, slot: str = SLOT) -> WalStreamer:
    return WalStreamer(conn_params(server), find_tools(15), WalArchive(storage), slot=slot, directory=directory,
                       partial_interval=0.5, progress_interval=1.0, poll_interval=0.1, status_interval=1)


def _assert_contiguous(archive: WalArchive, first: str, last: str) -> None:
    names = _full(archive)
    assert archive.gaps() == []
    assert names[0] <= first and names[-1] >= last
    numbers = [int(n[8:16], 16) * 256 + int(n[16:], 16) for n in names]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), names


def test_streaming_survives_a_killed_receiver_and_a_postgres_restart(stream_server: PgServer, tmp_path: Path) -> None:
    (tmp_path / "volume").mkdir()
    archive = WalArchive(FilesystemStorage(tmp_path / "volume"))
    running = Running(_streamer(stream_server, archive.storage, tmp_path / "wal"))
    streamer = running.streamer
    try:
        wait_until(lambda: streamer.receiver is not None and streamer.state.receiver_starts == 1, "pg_receivewal")
        first = switch_wal(stream_server)
        wait_until(_archived(archive, first), f"segment {first}")

        assert streamer.receiver is not None
        os.kill(streamer.receiver.pid, signal.SIGKILL)  # pg_receivewal dies mid-stream
        after_kill = [switch_wal(stream_server) for _ in range(2)][-1]
        wait_until(_archived(archive, after_kill), f"segment {after_kill} after the kill")
        assert streamer.state.receiver_starts >= 2
        assert streamer.state.receiver_exits[0] == -signal.SIGKILL

        stream_server.stop()  # PostgreSQL restarts under the streamer
        stream_server.start()
        after_restart = [switch_wal(stream_server) for _ in range(2)][-1]
        wait_until(_archived(archive, after_restart), f"segment {after_restart} after the PostgreSQL restart")
    finally:
        running.stop()

    _assert_contiguous(archive, first, after_restart)
    assert streamer.receiver is None  # stopped with the loop
    assert streamer.state.lag_bytes is not None
    leftovers = sorted(p.name for p in (tmp_path / "wal").iterdir() if not p.name.endswith(".partial"))
    assert len(leftovers) <= 1  # shipped segments are deleted locally (the newest stays as the resume marker)


def test_streaming_to_s3_ships_segments_and_the_partial(stream_server: PgServer, s3_bucket: S3Bucket,
                                                        tmp_path: Path) -> None:
    storage = S3Storage(s3_bucket.spec())
    archive = WalArchive(storage)
    slot = "pgbackup_test_stream_s3"
    running = Running(_streamer(stream_server, storage, tmp_path / "wal", slot=slot))
    try:
        segment = switch_wal(stream_server)
        wait_until(_archived(archive, segment), f"segment {segment} in S3")
        stream_server.query("INSERT INTO filler (pad) VALUES ('in the partial segment')")
        wait_until(lambda: any(s.partial for s in archive.segments()), "the .partial in S3")
    finally:
        running.stop()
        drop_slots(stream_server, slot)

    keys = s3_bucket.keys()
    assert any(k.startswith(f"{s3_bucket.prefix}/wal/00000001/{segment}") for k in keys), keys
    assert archive.gaps() == []
    assert running.streamer.state.partials_shipped >= 1


def test_wal_stream_command_stops_cleanly_on_sigterm(stream_server: PgServer, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    policy = backup_policy(stream_server, {"volume": {"claimName": "backups"}},
                           wal={"enabled": True, "partialUploadInterval": "1s"})
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "PGUSER": stream_server.user,
           "PGPASSWORD": stream_server.password, "PGBACKUP_POLICY": json.dumps(policy),
           "PGBACKUP_VOLUME_ROOT": str(volume), "PGBACKUP_SCRATCH": str(tmp_path / "scratch")}
    slot = default_slot_name("orders-db")
    proc = subprocess.Popen([sys.executable, "-m", "pgbackup.runner", "wal-stream"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    archive = WalArchive(FilesystemStorage(volume))
    try:
        wait_until(lambda: bool(stream_server.query(
            f"SELECT 1 FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid "
            f"WHERE s.slot_name = '{receiver_slot_name(slot)}'")), "pg_receivewal to connect")
        segment = switch_wal(stream_server)
        wait_until(_archived(archive, segment), f"segment {segment}")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        clean_up_stream_command(proc, stream_server, slot)

    assert proc.returncode == 0, stderr[-2000:]
    events = [json.loads(line)["event"] for line in stderr.splitlines() if line.startswith("{")]
    assert "wal.stream.slot_created" in events and "wal.stream.progress" in events
    assert events[-1] == "wal.stream.stopped"
    assert stream_server.password not in stderr
    assert stream_server.query(f"SELECT bool_or(active) FROM pg_replication_slots "
                               f"WHERE slot_name IN ('{slot}', '{receiver_slot_name(slot)}')") in ([(None,)], [(False,)])


def test_default_slot_name_is_a_valid_slot_name() -> None:
    assert default_slot_name("orders-db") == "pgbackup_orders_db"
    assert default_slot_name("a.b-c") == "pgbackup_a_b_c"
    assert len(default_slot_name("x" * 253)) == 63


def test_pitr_from_the_streamed_archive_reaches_into_the_shipped_partial(
        stream_server: PgServer, pg_factory: PgFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streaming started before the base backup; T1 lies in the segment still being written: its shipped
    .partial (wal-fetch --allow-partial) brings the recovery there, with no pg_switch_wal."""
    root = Path(tempfile.mkdtemp(prefix="pgbackup-test-stream-pitr-"))
    os.chmod(root, 0o755)
    volume = root / "volume"
    volume.mkdir()
    policy = backup_policy(stream_server, {"volume": {"claimName": "backups"}}, method="physical")
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGBACKUP_PG_BINDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"PGUSER": stream_server.user, "PGPASSWORD": stream_server.password,
                        "PGBACKUP_VOLUME_ROOT": str(volume), "PGBACKUP_SCRATCH": str(root),
                        "PGBACKUP_SUMMARY_FILE": str(root / "summary")}.items():
        monkeypatch.setenv(name, value)
    slot = "pgbackup_test_stream_pitr"
    archive = WalArchive(FilesystemStorage(volume))
    running = Running(_streamer(stream_server, archive.storage, root / "wal", slot=slot))
    streamer = running.streamer
    try:
        stream_server.query("DROP DATABASE IF EXISTS streamed")
        stream_server.query("CREATE DATABASE streamed")
        with stream_server.connect("streamed") as conn:
            conn.execute("CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL)")
        code, summary = backup_command(policy_from_document(policy, "stream-pitr"))
        assert code == 0, summary.error
        with stream_server.connect("streamed") as conn:
            conn.execute("INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 4)")
            conn.execute("SELECT pg_sleep(0.3)")
            (t1,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]
            conn.execute("SELECT pg_sleep(0.3)")
            conn.execute("INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 6)")
        shipped = streamer.state.partials_shipped

        def shipped_after_batch_2() -> bool:  # two more ships: the second one started after the commit
            stream_server.query("INSERT INTO filler (pad) VALUES ('keeps the partial changing')")
            return streamer.state.partials_shipped >= shipped + 2

        wait_until(shipped_after_batch_2, "the .partial holding batch 2")
    finally:
        running.stop()
        drop_slots(stream_server, slot)
    for path in volume.rglob("*"):  # written by root here (0600); the recovered server's account fetches them
        path.chmod(0o755 if path.is_dir() else 0o644)
    target = pg_factory.get("15", "pitr-target")
    conn_params = ConnParams(host=target.host, port=target.port, user=target.user, password=target.password,
                             sslmode="disable")
    try:
        report = restore_to_point(Catalog(archive.storage), archive, PitrTarget(time=t1), target_conn=conn_params,
                                  target_database="streamed_t1",
                                  server_env=policy_server_env(json.dumps(policy), os.environ),
                                  login_roles=[stream_server.user])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    assert report.plan.uses_partial and report.plan.wal_to.endswith(".partial")
    assert report.row_counts == {"streamed_t1": {"public.t": 4}}


def test_the_receivers_status_interval_is_ten_seconds_unless_set_and_a_bad_value_says_what_to_do() -> None:
    assert receiver_status_interval({}) == 10
    assert receiver_status_interval({"PGBACKUP_WAL_RECEIVER_STATUS_INTERVAL": "1"}) == 1
    for bad in ("0", "1.5", "soon"):
        with pytest.raises(UsageError, match=f"PGBACKUP_WAL_RECEIVER_STATUS_INTERVAL={bad!r} is not a positive"):
            receiver_status_interval({"PGBACKUP_WAL_RECEIVER_STATUS_INTERVAL": bad})
