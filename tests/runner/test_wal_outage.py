"""A killed WAL streamer loses nothing (issue 11, item 1), against a real PostgreSQL 15 and moto S3 behind a proxy
that can take the storage down: WAL written while storage is unreachable reaches the streamer's local spool, the
streamer pod is killed and its spool (an emptyDir) is gone, storage comes back and a new streamer starts: the
archive has no gap, and a point-in-time recovery to a moment of the outage restores the rows written then."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from pgbackup.api.wal import WalStreamState
from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import find_tools
from pgbackup.runner.restore.pitr import PitrTarget, policy_server_env, restore_to_point
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.storage.s3 import S3Storage
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.status import WalStateTracker
from pgbackup.runner.wal.stream import WalStreamer
from pgbackup.runner.wal.xlog import lsn_of_segment_start, parse_lsn, parse_segment_name
from tests.fixtures.postgres import PgFactory, PgServer, backup_policy, free_port
from tests.fixtures.s3 import MotoServer, RelayProxy, answer_s3_error, make_bucket, s3_env
from tests.runner.wal_support import Running, conn_params, drop_slots, switch_wal, wait_until, wal_server

SLOT = "pgbackup_test_outage"


@pytest.fixture(scope="module")
def outage_server(pg_factory: PgFactory) -> Iterator[PgServer]:
    yield from wal_server(pg_factory, "waloutage")


class Outage(RelayProxy):
    """moto S3 that can be taken down: while `down`, every request gets 503 ServiceUnavailable."""

    def __init__(self, upstream_port: int) -> None:
        self.down = False
        super().__init__(upstream_port)

    def intercept(self, request: Any) -> bool:
        return self.down and answer_s3_error(request, 503, "ServiceUnavailable", "storage outage (test)")


class Streamer:
    """`pgbackup wal-stream` as the Deployment runs it, with its scratch directory (the pod's emptyDir)."""

    def __init__(self, env: dict[str, str], scratch: Path) -> None:
        scratch.mkdir()
        self.scratch = scratch
        self.port = free_port()
        self.log: IO[str] = open(scratch.with_suffix(".log"), "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "pgbackup.runner", "wal-stream"],
                                     env={**env, "PGBACKUP_SCRATCH": str(scratch),
                                          "PGBACKUP_WAL_STATUS_PORT": str(self.port)},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, text=True)

    def spool(self) -> list[str]:
        directory = self.scratch / "wal"
        return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []

    def state(self) -> WalStreamState | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as answer:
                return WalStreamState.model_validate_json(answer.read())
        except OSError:
            return None

    def kill(self) -> None:
        """The pod is gone: no clean shutdown, and its emptyDir with it."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.scratch)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _receiving(server: PgServer) -> bool:
    return bool(server.query("SELECT 1 FROM pg_stat_replication"))


def test_a_streamer_killed_during_a_storage_outage_loses_no_wal(
        outage_server: PgServer, moto_server: MotoServer, pg_factory: PgFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = outage_server
    s3_env(monkeypatch)
    bucket = make_bucket(moto_server.endpoint)
    proxy = Outage(moto_server.port)
    root = Path(tempfile.mkdtemp(prefix="pgbackup-test-wal-outage-"))
    os.chmod(root, 0o755)
    policy = backup_policy(server, {"s3": bucket.wire(endpoint=proxy.endpoint)}, method="physical",
                           wal={"enabled": True, "slotName": SLOT, "partialUploadInterval": "1s"})
    policy_json = json.dumps(policy)
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGBACKUP_PG_BINDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"PGUSER": server.user, "PGPASSWORD": server.password, "PGBACKUP_SCRATCH": str(root),
                        "PGBACKUP_SUMMARY_FILE": str(root / "summary")}.items():
        monkeypatch.setenv(name, value)
    # Two attempts a request: the outage fails each upload and /status read at once, not after boto3's 8 retries.
    # pg_receivewal reports its flush position every second (not 10): the wait for it below is that short.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, "PGUSER": server.user,
           "PGPASSWORD": server.password, "PGBACKUP_POLICY": policy_json, "PGBACKUP_S3_MAX_ATTEMPTS": "2",
           "PGBACKUP_WAL_RECEIVER_STATUS_INTERVAL": "1"}
    storage = S3Storage(bucket.spec())  # straight to moto: what storage really holds, outage or not
    archive = WalArchive(storage)

    def archived() -> list[str]:
        return [s.name for s in archive.segments() if not s.partial]

    first = Streamer(env, root / "streamer-1")
    second: Streamer | None = None
    try:
        wait_until(lambda: _receiving(server), "pg_receivewal of the first streamer")
        server.query("DROP DATABASE IF EXISTS outage")
        server.query("CREATE DATABASE outage")
        with server.connect("outage") as conn:
            conn.execute("CREATE TABLE t (id serial PRIMARY KEY, batch int NOT NULL)")
        code, summary = backup_command(policy_from_document(policy, "outage"))
        assert code == 0, summary.error
        with server.connect("outage") as conn:
            conn.execute("INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 5)")
        before = switch_wal(server)
        wait_until(lambda: before in archived(), f"segment {before} in storage before the outage")

        proxy.down = True  # storage unreachable
        with server.connect("outage") as conn:
            conn.execute("INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 7)")
            conn.execute("SELECT pg_sleep(0.3)")
            (during,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]
            conn.execute("SELECT pg_sleep(0.3)")
            conn.execute("INSERT INTO t (batch) SELECT 3 FROM generate_series(1, 11)")
        outage = [switch_wal(server) for _ in range(3)]
        (end,) = server.query("SELECT pg_current_wal_lsn()::text")[0]
        # The first streamer has received all of it (pg_receivewal reported its flush position), and the server
        # has checkpointed since: whatever no slot holds back is gone from pg_wal.
        wait_until(lambda: all(name in first.spool() for name in outage[:-1]), "the outage's WAL in the spool")
        wait_until(lambda: bool(server.query(
            f"SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE '{SLOT}%' AND restart_lsn >= '{end}'")),
            "pg_receivewal to report its flush position")
        # /status shows the spool filling up (status.wal.spoolBytes, the PgBackupWALSpoolFilling alert)
        wait_until(lambda: ((first.state() or WalStreamState()).spool_bytes or 0) >= 3 * 16 * 1024**2,
                   "the outage's WAL in /status spoolBytes")
        server.query("CHECKPOINT")
        server.query("CHECKPOINT")
        assert not any(name in archived() for name in outage)

        first.kill()  # the pod is deleted (eviction, node drain, spec change): its spool is gone
        proxy.down = False  # storage is back
        second = Streamer(env, root / "streamer-2")
        after = switch_wal(server)
        wait_until(lambda: after in archived(), f"segment {after} from the second streamer", timeout=120)
    finally:
        if first.proc.poll() is None:
            first.stop()
        if second is not None:
            second.stop()
        proxy.close()

    names = archived()
    numbers = [int(n[8:16], 16) * 256 + int(n[16:], 16) for n in names]
    assert all(name in names for name in [before, *outage, after]), names
    assert archive.gaps() == [] and numbers == list(range(numbers[0], numbers[0] + len(numbers))), names

    direct = json.dumps(backup_policy(server, {"s3": bucket.wire()}, method="physical"))  # the proxy is closed
    target = pg_factory.get("15", "outage-target")
    target_conn = ConnParams(host=target.host, port=target.port, user=target.user, password=target.password,
                             sslmode="disable")
    try:
        report = restore_to_point(Catalog(storage), archive, PitrTarget(time=during), target_conn=target_conn,
                                  target_database="outage_during", server_env=policy_server_env(direct, os.environ),
                                  login_roles=[server.user])
    finally:
        server.query(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     f"WHERE slot_name LIKE '{SLOT}%' AND NOT active")
        shutil.rmtree(root, ignore_errors=True)
    assert report.row_counts == {"outage_during": {"public.t": 12}}


class NeverAdvances(WalStreamer):
    """Killed right after each upload, before the archive slot moved."""

    def advance_archive_slot(self) -> None:
        pass


def test_wal_received_again_after_a_kill_between_upload_and_slot_advance_is_archived_once(
        outage_server: PgServer, tmp_path: Path) -> None:
    server = outage_server
    slot = "pgbackup_test_readvance"
    volume = tmp_path / "volume"
    volume.mkdir()
    archive = WalArchive(FilesystemStorage(volume))

    def streamer(kind: type[WalStreamer], directory: str) -> Running:
        return Running(kind(conn_params(server), find_tools(15), archive, slot=slot, directory=tmp_path / directory,
                            partial_interval=0.5, poll_interval=0.1, status_interval=1))

    def archived() -> list[str]:
        return [s.name for s in archive.segments() if not s.partial]

    def slot_position() -> int:
        return parse_lsn(server.query(f"SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'")[0][0])

    first = streamer(NeverAdvances, "spool-1")
    try:
        wait_until(lambda: first.streamer.receiver is not None, "pg_receivewal")
        shipped = [switch_wal(server) for _ in range(3)]
        wait_until(lambda: shipped[-1] in archived(), f"segment {shipped[-1]}")
    finally:
        first.stop()
    held = slot_position()
    assert held < lsn_of_segment_start(parse_segment_name(shipped[1]), 16 * 1024**2)  # the server still has them

    second = streamer(WalStreamer, "spool-2")  # a new pod: empty spool, receives those segments again
    try:
        after = switch_wal(server)
        wait_until(lambda: after in archived(), f"segment {after} from the second streamer")
    finally:
        second.stop()
        drop_slots(server, slot)
    assert second.streamer.state.ship_failures == 0  # the same bytes again: no WalConflict, nothing uploaded twice
    names = archived()
    assert all(name in names for name in [*shipped, after]) and archive.gaps() == [], names
    assert second.streamer.state.segments_shipped >= len(shipped) + 1


def test_a_full_spool_pauses_receiving_and_resumes_when_storage_is_back(
        outage_server: PgServer, moto_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long outage must not fill the spool (the pod would be evicted, again and again): receiving pauses at the
    limit, the slot keeps the rest on the server, and it all reaches storage once storage is back."""
    server = outage_server
    s3_env(monkeypatch)
    bucket = make_bucket(moto_server.endpoint)
    proxy = Outage(moto_server.port)
    # an upload fails at once in the outage (not after boto3's 8 attempts), and is retried at most 2 s apart, so
    # the wait for the outage's end is short
    archive = WalArchive(S3Storage(bucket.spec(endpoint=proxy.endpoint), max_attempts=2))
    direct = WalArchive(S3Storage(bucket.spec()))
    slot = "pgbackup_test_spool_full"
    server.query("CHECKPOINT")  # the new slot starts here: little to catch up on
    segment = 16 * 1024**2
    limit = 5 * segment
    tracker = WalStateTracker(conn_params(server), direct, slot=slot)
    running = Running(WalStreamer(conn_params(server), find_tools(15), archive, slot=slot, directory=tmp_path / "wal",
                                  partial_interval=0.5, poll_interval=0.1, status_interval=1, spool_limit=limit,
                                  observer=tracker, backoff_max=2))
    streamer = running.streamer

    def archived() -> list[str]:
        return [s.name for s in direct.segments() if not s.partial]

    try:
        wait_until(lambda: streamer.receiver is not None, "pg_receivewal")
        before = switch_wal(server)
        wait_until(lambda: before in archived(), f"segment {before}")
        # a new slot starts at the last checkpoint: catching up on that may have filled the spool for a moment
        wait_until(lambda: streamer.receiver is not None and "spool" not in (tracker.snapshot().error or ""),
                   "the streamer to have caught up")
        proxy.down = True
        outage: list[str] = []
        while streamer.receiver is not None:  # WAL written at a pace the loop sees (it polls, it cannot prevent)
            assert len(outage) < 8, "receiving did not pause"
            outage.append(switch_wal(server))
            # a record in the next segment: its .partial starts now, not with the server's next routine record
            # (up to 15 s later), and the loop below sees it
            server.query("INSERT INTO filler (pad) VALUES ('next segment')")
            wait_until(lambda: streamer.receiver is None or outage[-1] in os.listdir(tmp_path / "wal"),
                       f"{outage[-1]} in the spool")
            # the marker, the outage's segments and the new .partial: the loop has seen the newest segment
            wait_until(lambda: streamer.receiver is None or streamer.state.spool_bytes >= (len(outage) + 2) * segment,
                       "the loop to measure the spool")
        assert "spool" in (tracker.snapshot().error or "")
        peak = sum(p.stat().st_size for p in (tmp_path / "wal").iterdir())
        outage += [switch_wal(server) for _ in range(3)]  # written while paused: only on the server
        server.query("SELECT pg_sleep(1)")
        assert streamer.receiver is None  # the spool stopped growing
        assert sum(p.stat().st_size for p in (tmp_path / "wal").iterdir()) == peak
        server.query("CHECKPOINT")
        proxy.down = False
        after = switch_wal(server)
        wait_until(lambda: after in archived(), f"segment {after} after the outage", timeout=120)
        # catching up may fill the spool again for a moment: it drains as storage takes the WAL
        wait_until(lambda: "spool" not in (tracker.snapshot().error or ""), "receiving to resume")
    finally:
        proxy.down = False  # lets the loop ship on its way out, whatever failed above
        running.stop()
        proxy.close()
        drop_slots(server, slot)
    assert peak < 8 * segment  # paused before the outage's WAL filled it
    names = archived()
    assert all(name in names for name in [before, *outage, after]) and direct.gaps() == [], names
