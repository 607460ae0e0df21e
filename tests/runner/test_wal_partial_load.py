"""The streamer's .partial ships while WAL is written continuously (rows inserted in a loop against a real
PostgreSQL 15): pg_receivewal writes into the .partial while it is being shipped, and every shipped copy must
still verify as wal-fetch --allow-partial verifies it (the SHA-256 in its sidecar is that of the bytes stored),
so that a point-in-time restore to the last committed row works."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from pgbackup.runner.backup.run import backup_command
from pgbackup.runner.catalog.catalog import Catalog
from pgbackup.runner.common.config import policy_from_document
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.tools import find_tools
from pgbackup.runner.storage.pipeline import IntegrityError
from pgbackup.runner.restore.pitr import PitrTarget, policy_server_env, restore_to_point
from pgbackup.runner.storage.fs import FilesystemStorage
from pgbackup.runner.wal.archive import WalArchive
from pgbackup.runner.wal.listing import PARTIAL_SUFFIX
from pgbackup.runner.wal.observer import StreamObserver
from pgbackup.runner.wal.stream import WalStreamer
from tests.fixtures.postgres import PgFactory, PgServer, backup_policy
from tests.runner.wal_support import Running, conn_params, wait_until, wal_server

SLOT = "pgbackup_test_partial_load"
SHIPS_UNDER_LOAD = 20
WRITERS = 4


@pytest.fixture(scope="module")
def load_server(pg_factory: PgFactory) -> Iterator[PgServer]:
    yield from wal_server(pg_factory, "walpartial")


class FetchEveryPartial(StreamObserver):
    """After each .partial ship, fetch it back as `wal-fetch --allow-partial` does. Called in the streamer's own
    thread, so nothing is shipped between the upload and the check."""

    def __init__(self, archive: WalArchive, scratch: Path) -> None:
        self.archive = archive
        self.scratch = scratch
        self.verified = 0
        self.refused: list[str] = []

    def partial_archived(self, name: str) -> None:
        segment = name.removesuffix(PARTIAL_SUFFIX)
        try:
            assert self.archive.fetch(segment, self.scratch / segment, allow_partial=True)
        except IntegrityError as exc:
            self.refused.append(f"{name}: {exc}")
        else:
            self.verified += 1

    def checked(self) -> int:
        return self.verified + len(self.refused)


class Inserting:
    """Threads (one connection each, like pgbench -c) inserting one row per transaction into `t`, as fast as
    they can, until stopped."""

    def __init__(self, server: PgServer, database: str, clients: int) -> None:
        self.server = server
        self.database = database
        self.committed = [0] * clients
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self, client: int) -> None:
        try:
            with self.server.connect(self.database) as conn:
                while not self.stop.is_set():
                    conn.execute("INSERT INTO t (pad) VALUES (repeat('x', 500))")
                    self.committed[client] += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised in finish()
            self.error = exc

    def finish(self) -> int:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "an inserting thread did not stop"
        if self.error is not None:
            raise self.error
        return sum(self.committed)


def test_partials_shipped_under_continuous_writes_verify_and_recover_to_the_last_row(
        load_server: PgServer, pg_factory: PgFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(tempfile.mkdtemp(prefix="pgbackup-test-partial-load-"))
    os.chmod(root, 0o755)
    volume = root / "volume"
    volume.mkdir()
    (root / "fetched").mkdir()
    policy = backup_policy(load_server, {"volume": {"claimName": "backups"}}, method="physical")
    for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGPASSFILE", "PGSERVICE", "PGBACKUP_PG_BINDIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"PGUSER": load_server.user, "PGPASSWORD": load_server.password,
                        "PGBACKUP_VOLUME_ROOT": str(volume), "PGBACKUP_SCRATCH": str(root),
                        "PGBACKUP_SUMMARY_FILE": str(root / "summary")}.items():
        monkeypatch.setenv(name, value)
    archive = WalArchive(FilesystemStorage(volume))
    checker = FetchEveryPartial(archive, root / "fetched")
    streamer = WalStreamer(conn_params(load_server), find_tools(15), archive, slot=SLOT, directory=root / "wal",
                           partial_interval=0.25, progress_interval=5.0, poll_interval=0.1, status_interval=1,
                           observer=checker)
    running = Running(streamer)
    try:
        load_server.query("DROP DATABASE IF EXISTS underload")
        load_server.query("CREATE DATABASE underload")
        with load_server.connect("underload") as conn:
            conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, pad text NOT NULL)")
        code, summary = backup_command(policy_from_document(policy, "partial-load"))
        assert code == 0, summary.error

        before = checker.checked()
        writer = Inserting(load_server, "underload", WRITERS)
        try:
            wait_until(lambda: checker.checked() >= before + SHIPS_UNDER_LOAD or writer.error is not None,
                       f"{SHIPS_UNDER_LOAD} .partial ships while rows are inserted", timeout=120)
        finally:
            committed = writer.finish()
        with load_server.connect("underload") as conn:
            (rows,) = conn.execute("SELECT count(*) FROM t").fetchone()  # type: ignore[misc]
            (last_commit,) = conn.execute("SELECT now()").fetchone()  # type: ignore[misc]
        assert rows == committed > 0
        shipped = checker.checked()

        def shipped_after_the_last_row() -> bool:  # two more ships: the second began after the last commit
            load_server.query("INSERT INTO filler (pad) VALUES ('a commit after the target time')")
            return checker.checked() >= shipped + 2

        wait_until(shipped_after_the_last_row, "the .partial holding the last row")
    finally:
        running.stop()
        load_server.query(f"SELECT pg_drop_replication_slot('{SLOT}')")

    try:
        assert checker.refused == [], f"{len(checker.refused)} of {checker.checked()} shipped partials fail " \
                                      f"their own check, e.g. {checker.refused[0]}"
        assert checker.verified >= SHIPS_UNDER_LOAD + 2
        for path in volume.rglob("*"):  # written by root here (0600); the recovered server's account fetches them
            path.chmod(0o755 if path.is_dir() else 0o644)
        target = pg_factory.get("15", "pitr-target")
        target_conn = ConnParams(host=target.host, port=target.port, user=target.user, password=target.password,
                                 sslmode="disable")
        assert isinstance(last_commit, datetime)
        report = restore_to_point(Catalog(archive.storage), archive, PitrTarget(time=last_commit),
                                  target_conn=target_conn, target_database="underload_last",
                                  server_env=policy_server_env(json.dumps(policy), os.environ),
                                  login_roles=[load_server.user])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    assert report.plan.uses_partial and report.plan.wal_to.endswith(PARTIAL_SUFFIX)
    assert report.row_counts == {"underload_last": {"public.t": rows}}


def test_a_segment_larger_than_the_in_memory_snapshot_round_trips(tmp_path: Path) -> None:
    """64 MiB segments (initdb --wal-segsize=64): the part of the snapshot beyond 16 MiB goes to a temp file."""
    (tmp_path / "volume").mkdir()
    archive = WalArchive(FilesystemStorage(tmp_path / "volume"))
    segment = tmp_path / "000000010000000000000004"
    content = b"".join(os.urandom(1 << 20) + bytes(3 << 20) for _ in range(16))
    segment.write_bytes(content)
    partial = tmp_path / "000000010000000000000005.partial"
    partial.write_bytes(content[::-1])

    assert archive.push(segment).uploaded and archive.push_partial(partial).uploaded
    assert archive.fetch(segment.name, tmp_path / "fetched")
    assert archive.fetch("000000010000000000000005", tmp_path / "fetched.partial", allow_partial=True)
    assert (tmp_path / "fetched").read_bytes() == content
    assert (tmp_path / "fetched.partial").read_bytes() == content[::-1]
    assert not archive.push(segment).uploaded  # the same bytes again: already archived
