"""`python -m bench --rpo`: archive lag (the RPO a crash would cost) under a pgbench load, per way of archiving.

For each mode: a fresh bucket, the archiver started, one `pg_switch_wal()` that must reach the archive (so every
mode starts from an archive that is current), then `pgbench -c 4 -j 2 -T <duration>` against the throwaway
server while the server's WAL position is sampled every 0.2 s and the archive's restorable position
(bench.archives: only files whose checksum verifies count) about once a second. Each archive sample's lag is
how long ago the server's WAL was where the archive can restore to (bench.lag); the table shows p50/p99/max.

Modes: `stream` (`pgbackup wal-stream`, partialUploadInterval from --partial-interval), `wal_push`
(archive_command = `pgbackup wal-push %p`), `pgbackrest_async` (archive_command = pgBackRest `archive-push`
with archive-async=y). archive_command modes run with archive_timeout = --archive-timeout.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg

import pgbackup

from bench.archives import PgbackrestReader, PgbackupReader
from bench.candidates import runner
from bench.context import leave_workdir, new_workdir
from bench.install import say
from bench.lag import Sample, lags, percentile
from bench.postgres import Postgres, free_port, newest_bindir, server_account
from bench.s3 import CREDENTIALS, S3Server
from pgbackup.runner.common.log import set_stream

MODES = ("stream", "wal_push", "pgbackrest_async")
LABELS = {"stream": "pgbackup wal-stream", "wal_push": "archive_command = pgbackup wal-push",
          "pgbackrest_async": "archive_command = pgBackRest archive-push (async)"}
SERVER_EVERY_S = 0.2
ARCHIVE_EVERY_S = 1.0
CATCH_UP_S = 120.0


class Reader(Protocol):
    failures: int

    def restorable(self) -> tuple[float, int | None]: ...


@dataclass
class RpoRow:
    id: str
    label: str
    lags_s: list[float] = field(default_factory=list)
    wal_bytes: int = 0
    duration_s: float = 0.0
    failures: int = 0
    notes: str = ""
    error: str | None = None

    def stats(self) -> dict[str, float | None]:
        return {"p50_s": percentile(self.lags_s, 50), "p99_s": percentile(self.lags_s, 99),
                "max_s": max(self.lags_s, default=None), "samples": len(self.lags_s),
                "wal_mb_s": self.wal_bytes / 1e6 / self.duration_s if self.duration_s else None}


@dataclass
class RpoSetup:
    pg: Postgres
    s3: S3Server
    workdir: Path
    duration_s: float
    clients: int
    partial_interval: str
    archive_timeout: str


def lsn_int(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def _connect(pg: Postgres) -> psycopg.Connection[Any]:
    return psycopg.connect(host=str(pg.socket_dir), port=pg.port, user="postgres", dbname="postgres",
                           autocommit=True)


def _current_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return lsn_int(row[0])


def policy(setup: RpoSetup, bucket: str) -> dict[str, Any]:
    return {"name": "bench-rpo", "namespace": "bench", "spec": {
        "database": {"host": str(setup.pg.socket_dir), "port": setup.pg.port, "databases": ["bench"],
                     "credentialsSecret": {"name": "bench"}, "sslMode": "disable"},
        "schedule": "0 2 * * *", "retention": {"keepLast": 100}, "compression": {"algorithm": "zstd", "level": 3},
        "storage": {"s3": {"bucket": bucket, "endpoint": setup.s3.endpoint, "forcePathStyle": True,
                           "prefix": "pgbackup"}},
        "wal": {"enabled": True, "slotName": "bench_rpo", "partialUploadInterval": setup.partial_interval}}}


def wal_push_command(pg: Postgres) -> str:
    """`pgbackup wal-push` as the server's account can run it: the venv's console script, or (when the venv's
    interpreter lives where that account cannot reach, e.g. under /root) the same code on the system Python of
    the same minor version: `python -m pgbackup.runner`, the same entry as the console script."""
    installed = runner()
    account = pg.account
    as_account: dict[str, Any] = ({"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
                                  if os.geteuid() == 0 and account.pw_uid != 0 else {})
    try:
        if subprocess.run([installed, "--help"], capture_output=True, cwd="/", **as_account).returncode == 0:
            return installed
    except PermissionError:
        pass
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if system is None:
        raise RuntimeError(f"the server's account {account.pw_name!r} cannot run {installed} and there is no system "
                           f"{version} to run the runner's code with")
    code = Path(pgbackup.__file__).parent.parent
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    return f"env PYTHONPATH={code}:{site} {system} -m pgbackup.runner"


def _mode_dir(setup: RpoSetup, name: str) -> Path:
    path = setup.workdir / "rpo" / name
    path.mkdir(parents=True, mode=0o755)
    os.chown(path, setup.pg.account.pw_uid, setup.pg.account.pw_gid)
    return path


@contextmanager
def _stream(setup: RpoSetup, bucket: str, out: Path) -> Iterator[None]:
    env = {**setup.pg.client_env("postgres"), **CREDENTIALS, "PGBACKUP_POLICY": json.dumps(policy(setup, bucket)),
           "PGBACKUP_SCRATCH": str(out), "PGBACKUP_WAL_STATUS_PORT": str(free_port()),
           "PGBACKUP_SUMMARY_FILE": "/dev/null"}
    with (setup.workdir / "logs" / "rpo-stream.log").open("ab") as log:
        process = subprocess.Popen([runner(), "wal-stream"], env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        setup.pg.psql("SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots "
                      "WHERE NOT active", "postgres")


@contextmanager
def _archive_command(setup: RpoSetup, command: str) -> Iterator[None]:
    setup.pg.psql(f"ALTER SYSTEM SET archive_timeout = '{setup.archive_timeout}'", "postgres")
    setup.pg.set_archive_command(command)
    try:
        yield
    finally:
        setup.pg.psql("ALTER SYSTEM RESET archive_timeout", "postgres")
        setup.pg.set_archive_command("/bin/true")


def _pgbackrest_config(setup: RpoSetup, home: Path, bucket: str) -> Path:
    for sub in ("log", "lock", "spool"):
        (home / sub).mkdir()
        shutil.chown(home / sub, setup.pg.account.pw_uid, setup.pg.account.pw_gid)
    config = home / "pgbackrest.conf"
    config.write_text("\n".join([
        "[global]", "repo1-type=s3", "repo1-path=/pgbackrest", f"repo1-s3-bucket={bucket}",
        "repo1-s3-endpoint=127.0.0.1", f"repo1-storage-port={setup.s3.tls_port}", "repo1-s3-region=us-east-1",
        "repo1-s3-key=testing", "repo1-s3-key-secret=testing", "repo1-s3-uri-style=path", "repo1-storage-verify-tls=n",
        "compress-type=gz", "archive-async=y", "process-max=2", f"log-path={home}/log", f"lock-path={home}/lock",
        f"spool-path={home}/spool", "log-level-console=warn", "log-level-file=info", "",
        "[bench]", f"pg1-path={setup.pg.datadir}", f"pg1-port={setup.pg.port}",
        f"pg1-socket-path={setup.pg.socket_dir}", "pg1-user=postgres", ""]))
    config.chmod(0o644)
    return config


def start_mode(setup: RpoSetup, mode: str, stack: ExitStack) -> Reader:
    """Start `mode`'s archiver (its stop goes on `stack`) and return the reader of its archive."""
    bucket = setup.s3.new_bucket(f"rpo-{mode.replace('_', '-')}")
    out = _mode_dir(setup, mode)
    if mode == "pgbackrest_async":
        if not shutil.which("pgbackrest") or setup.s3.tls_port is None:
            raise RuntimeError("pgbackrest or the TLS endpoint it needs (stunnel4) is not installed")
        config = _pgbackrest_config(setup, out, bucket)
        base = ["pgbackrest", f"--config={config}", "--stanza=bench"]
        done = subprocess.run([*base, "stanza-create"], env={**setup.pg.server_env()}, capture_output=True,
                              text=True, user=setup.pg.account.pw_uid if os.geteuid() == 0 else None)
        if done.returncode != 0:
            raise RuntimeError(f"pgbackrest stanza-create failed: {done.stdout[-400:]}{done.stderr[-400:]}")
        context = _archive_command(setup, shlex.join([*base, "archive-push", "%p"]))
        reader: Reader = PgbackrestReader(setup.s3.client(), bucket, "pgbackrest/archive/")
    else:
        document = policy(setup, bucket)
        if mode == "stream":
            context = _stream(setup, bucket, out)
        else:
            policy_file = out / "policy.json"
            policy_file.write_text(json.dumps(document))
            policy_file.chmod(0o644)
            context = _archive_command(setup, f"{wal_push_command(setup.pg)} wal-push --policy {policy_file} %p")
        reader = PgbackupReader(document, {**os.environ, **CREDENTIALS}, out)
    stack.enter_context(context)
    return reader


def _catch_up(reader: Reader, target: int, what: str) -> None:
    deadline = time.monotonic() + CATCH_UP_S
    while time.monotonic() < deadline:
        _, end = reader.restorable()
        if end is not None and end >= target:
            return
        time.sleep(ARCHIVE_EVERY_S)
    raise RuntimeError(f"{what} did not archive the switched WAL segment within {CATCH_UP_S:.0f}s")


def measure(setup: RpoSetup, mode: str) -> RpoRow:
    row = RpoRow(mode, LABELS[mode])
    stack = ExitStack()
    try:
        reader = start_mode(setup, mode, stack)
        with _connect(setup.pg) as conn:
            switched = conn.execute("SELECT pg_switch_wal()::text").fetchone()
            assert switched is not None
            _catch_up(reader, lsn_int(switched[0]), LABELS[mode])
            row.lags_s, row.wal_bytes, row.duration_s = _under_load(setup, conn, reader)
        row.failures = reader.failures
        row.notes = (f"partialUploadInterval {setup.partial_interval}" if mode == "stream"
                     else f"archive_timeout {setup.archive_timeout}")
    except Exception as exc:  # a mode's failure is its row
        row.error = f"{type(exc).__name__}: {exc}"
    finally:
        stack.close()
    return row


def _under_load(setup: RpoSetup, conn: psycopg.Connection[Any], reader: Reader) -> tuple[list[float], int, float]:
    server: list[Sample] = []
    archive: list[Sample] = []
    stop = threading.Event()

    def sample_server() -> None:
        with _connect(setup.pg) as own:
            while not stop.is_set():
                server.append(Sample(time.monotonic(), _current_lsn(own)))
                stop.wait(SERVER_EVERY_S)

    server.append(Sample(time.monotonic(), _current_lsn(conn)))
    sampler = threading.Thread(target=sample_server, daemon=True)
    sampler.start()
    with (setup.workdir / "logs" / "rpo-pgbench.log").open("ab") as log:
        load = subprocess.Popen([setup.pg.bin("pgbench"), "-n", "-c", str(setup.clients), "-j", "2",
                                 "-T", str(int(setup.duration_s)), "bench"], env=setup.pg.client_env(),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        while load.poll() is None:
            listed_at, end = reader.restorable()
            if end is not None:
                archive.append(Sample(listed_at, end))
            time.sleep(max(0.0, ARCHIVE_EVERY_S - (time.monotonic() - listed_at)))
    finally:
        if load.poll() is None:
            load.kill()
        load.wait()
        stop.set()
        sampler.join()
    elapsed = time.monotonic() - started
    return lags(archive, server), server[-1].lsn - server[0].lsn, elapsed


def render(meta: dict[str, Any], rows: list[RpoRow]) -> str:
    lines = [f"RPO under load: pgbench -c {meta.get('clients')} for {meta.get('duration_s')}s on scale "
             f"{meta.get('scale')}, PostgreSQL {meta.get('postgres', '?')}, {meta.get('cpus', '?')} CPUs, load "
             f"average {meta.get('load_average', '?')} at start, {meta.get('load_average_end', '?')} at the end.",
             "", "| archiving | lag p50 s | lag p99 s | lag max s | samples | WAL MB/s | failed checks | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]

    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    for row in rows:
        if row.error is not None:
            lines.append(f"| {row.label} | – | – | – | – | – | – | NOT RUN: {row.error[:200]} |")
            continue
        s = row.stats()
        lines.append(f"| {row.label} | {cell(s['p50_s'])} | {cell(s['p99_s'])} | {cell(s['max_s'])} | "
                     f"{s['samples']:.0f} | {cell(s['wal_mb_s'])} | {row.failures} | {row.notes} |")
    return "\n".join(lines) + "\n"


def to_json(meta: dict[str, Any], rows: list[RpoRow]) -> dict[str, Any]:
    return {"meta": meta, "rows": [{"id": r.id, "label": r.label, "error": r.error, "failures": r.failures,
                                    "notes": r.notes, **r.stats()} for r in rows]}


def run(args: Any, meta: dict[str, Any], rows: list[RpoRow]) -> None:
    """Set up the server (pgbench tables at --scale) and moto, measure every selected mode into `rows`."""
    workdir = new_workdir("pgbackup-rpo-", args.workdir)
    pg: Postgres | None = None
    s3 = S3Server(workdir)
    os.environ.update(CREDENTIALS)  # the archive readers (the runner's S3 storage) take moto's from the environment
    stack = ExitStack()
    try:
        pg = Postgres(args.pg_bindir or newest_bindir(), workdir, server_account(), server_extra_env=CREDENTIALS)
        s3.start()
        pg.start()
        readers_log = stack.enter_context((workdir / "logs" / "rpo-readers.log").open("a"))
        set_stream(readers_log)  # the runner's JSON lines from reading the archive back, not on the terminal
        stack.callback(set_stream, None)
        meta.update(postgres=pg.psql("SHOW server_version", "postgres"), clients=args.clients,
                    duration_s=args.duration)
        pg.psql("CREATE DATABASE bench", "postgres")
        say(f"pgbench -i -s {args.scale} ...")
        subprocess.run([pg.bin("pgbench"), "-i", "-q", "-s", str(args.scale), "bench"], env=pg.client_env(),
                       check=True, capture_output=True)
        setup = RpoSetup(pg, s3, workdir, args.duration, args.clients, args.partial_interval, args.archive_timeout)
        for mode in args.rpo_modes:
            say(f"RPO: {LABELS[mode]} under pgbench -c {args.clients} for {args.duration:.0f}s ...")
            rows.append(measure(setup, mode))
            stats = rows[-1].stats()
            say(f"  -> lag p50 {stats['p50_s'] or 0:.1f} s, p99 {stats['p99_s'] or 0:.1f} s" if rows[-1].error is None
                else f"  -> not run: {rows[-1].error}")
    finally:
        stack.close()
        if pg is not None:
            pg.stop()
        s3.stop()
        leave_workdir(workdir, args.keep)
