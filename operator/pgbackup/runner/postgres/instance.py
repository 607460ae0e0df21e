"""A throwaway PostgreSQL server: initdb into a scratch directory (or start on a restored data directory),
listen on 127.0.0.1 and a unix socket with trust authentication, stop and remove everything afterwards.

Verification Jobs restore backups into one (the image carries the server binaries, the pod's emptyDir holds
the data); the demo and the test fixtures can use it too. The account it runs as: pgbackup.runner.postgres.account;
its settings: server_settings.
Nothing here needs a password: the server only ever listens on loopback and a private socket directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psycopg

from pgbackup.runner.common.errors import RunnerError, program_ended
from pgbackup.runner.common.log import log, log_warning
from pgbackup.runner.postgres.account import chown_tree, make_workspace, passwd_wrapper_env, reachable, server_account
from pgbackup.runner.postgres.pg import ConnParams, environ_without_libpq
from pgbackup.runner.postgres.server_settings import (
    BASE_SETTINGS,
    REPLICATION_SETTINGS,
    RESTORED_SETTINGS,
    TRUST_HBA,
    conf_lines,
)
from pgbackup.runner.postgres.tools import PgTools, major_of, server_tools

DEFAULT_SUPERUSER = "pgbackup"
_STOP_WAIT_SECONDS = {"fast": 30, "immediate": 15}
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; '/.s.PGSQL.65535' is appended


class ThrowawayServerError(RunnerError):
    """The throwaway server could not be created, started or reached (its log tail is in the message)."""

    reason = "VerificationServerFailed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- the server


class ThrowawayPostgres:
    """One private PostgreSQL server. Use as a context manager (starts it, always stops it and removes its
    directories), or call start()/close() yourself. `conn_params()` is what restore_backup takes."""

    def __init__(self, tools: PgTools, datadir: Path, *, workdir: Path, superuser: str,
                 account: tuple[int, int] | None, remove: Sequence[Path], start_timeout: int = 120,
                 restored: bool = False) -> None:
        self.tools = tools
        self.datadir = datadir
        self.workdir = workdir
        self.superuser = superuser
        self.account = account
        self.port = free_port()
        self.start_timeout = start_timeout
        self.restored = restored
        self.logfile = workdir / f"{datadir.name}.log"
        self._remove = list(remove)
        self._socket_dir = self._pick_socket_dir()
        self._running = False
        self._login_roles: list[str] = []
        self.password: str | None = None
        self.stop_modes: tuple[str, ...] = ("fast", "immediate")
        """pg_ctl stop modes tried in turn; ("immediate",) suits a server whose data is thrown away anyway."""
        self.server_env: dict[str, str] = {}
        """Extra environment for the server process (e.g. what a restore_command such as `pgbackup wal-fetch`
        needs: the policy, storage credentials). PG* variables are otherwise stripped from its environment."""
        self._recovery: dict[str, str] = {}
        self._account_env: dict[str, str] | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def create(cls, major: int | None = None, *, tools: PgTools | None = None, scratch: Path | None = None,
               superuser: str = DEFAULT_SUPERUSER, replication: bool = False,
               settings: Mapping[str, str] | None = None, allow_newer: bool = False, password: str | None = None,
               environ: Mapping[str, str] | None = None) -> ThrowawayPostgres:
        """initdb a new cluster in a fresh directory under `scratch` (not started yet). `replication` allows
        pg_basebackup from it; `settings` are extra postgresql.conf lines (values already quoted); with
        `password` TCP logins need it (scram-sha-256, e.g. to exercise PGPASSWORD), the socket stays trusted."""
        if tools is None:
            if major is None:
                raise ValueError("ThrowawayPostgres.create needs a major version or tools")
            tools = server_tools(major, allow_newer=allow_newer, environ=environ)
        account = server_account()
        workdir = make_workspace(scratch, account=account)
        server = cls(tools, workdir / "data", workdir=workdir, superuser=superuser, account=account,
                     remove=[workdir])
        server.password = password
        try:
            server._initdb({**BASE_SETTINGS, **(REPLICATION_SETTINGS if replication else {}), **(settings or {})})
        except BaseException:
            server.close()
            raise
        return server

    @classmethod
    def from_data_dir(cls, datadir: Path, *, tools: PgTools | None = None, login_roles: Iterable[str] = (),
                      environ: Mapping[str, str] | None = None, start_timeout: int = 600,
                      remove_data: bool = True, recovery: Mapping[str, str] | None = None,
                      server_env: Mapping[str, str] | None = None) -> ThrowawayPostgres:
        """A server on a restored data directory (e.g. from restore_physical), not started yet.

        On start it recovers to the end of the backup from the WAL in pg_wal (recovery.signal with
        recovery_target 'immediate', no archive) and is promoted. Trust authentication replaces the cluster's
        pg_hba.conf rules for this copy only; the bootstrap superuser's name is found by logging in as one of
        `login_roles` (e.g. the backup user) or 'postgres'. With `remove_data` the directory is deleted on close.
        `recovery` (postgresql.conf values, already quoted) replaces the recovery settings, e.g. a
        restore_command and recovery_target_time for point-in-time recovery; `server_env` reaches the server
        process (and so its restore_command).
        """
        datadir = datadir.resolve()
        version_file = datadir / "PG_VERSION"
        if not version_file.exists():
            raise RunnerError(f"{datadir} is not a PostgreSQL data directory (no PG_VERSION)",
                              reason="RestoreFailed")
        major = major_of(version_file.read_text())
        if tools is None:
            tools = server_tools(major, environ=environ)
        elif tools.major != major:
            raise RunnerError(f"{datadir} holds a PostgreSQL {major} cluster; {tools.bindir} is PostgreSQL "
                              f"{tools.major}: a data directory only starts with its own major version",
                              reason="ServerBinariesMissing")
        account = server_account()
        remove = [datadir] if remove_data else []
        workdir = datadir.parent
        if (workdir.stat().st_uid != account[0]) if account is not None else not os.access(workdir, os.W_OK):
            workdir = make_workspace(None, prefix="pgbackup-pg-aux-", account=account)  # log, hba: server-writable
            remove.append(workdir)
        server = cls(tools, datadir, workdir=workdir, superuser="", account=account, remove=remove,
                     start_timeout=start_timeout, restored=True)
        server._login_roles = [*dict.fromkeys([*login_roles, "postgres"])]
        server._recovery = dict(recovery or {})
        server.server_env = dict(server_env or {})
        try:
            server._prepare_restored()
        except BaseException:
            server.close()
            raise
        return server

    def _pick_socket_dir(self) -> Path:
        """The data directory when its path is short enough for a unix socket, else a short private one."""
        if len(str(self.datadir)) < _SOCKET_PATH_MAX - 16:
            return self.datadir
        short = Path(tempfile.mkdtemp(prefix="pgs-"))
        os.chmod(short, 0o700)
        if self.account is not None:
            os.chown(short, *self.account)
        self._remove.append(short)
        return short

    def _run(self, args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Run a server program as the server's account, with a clean libpq environment."""
        extra: dict[str, object] = {}
        if self.account is not None:
            extra = {"user": self.account[0], "group": self.account[1], "extra_groups": []}
        env = environ_without_libpq()
        env["LC_ALL"] = env.get("LC_ALL") or "C.UTF-8"
        env.update(self.server_env)
        env.update(self._server_account_env())
        done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
            args, capture_output=True, text=True, cwd="/", env=env, timeout=timeout, **extra)
        return done

    def _server_account_env(self) -> dict[str, str]:
        """A passwd entry for our UID when it has none (see passwd_wrapper_env); written once, removed on close."""
        if self._account_env is None:
            if self.account is not None:  # root: the server runs as a system user that has an entry
                self._account_env = {}
            else:
                self._account_env, written = passwd_wrapper_env(self.workdir, self.datadir.name)
                self._remove += written
        return self._account_env

    def _initdb(self, settings: Mapping[str, str]) -> None:
        auth = ["--auth=trust"]
        pwfile = self.workdir / "initdb-pwfile"
        if self.password is not None:  # a file, never an argument: argv is visible to every local user
            pwfile.write_text(self.password + "\n")
            os.chmod(pwfile, 0o600)
            if self.account is not None:
                os.chown(pwfile, *self.account)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", str(pwfile)]
        try:
            done = self._run([self.tools.path("initdb"), "-D", str(self.datadir), "-U", self.superuser, *auth,
                              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"], timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise ThrowawayServerError(
                f"initdb of a throwaway PostgreSQL {self.tools.major} in {self.datadir} failed (initdb "
                f"{program_ended(done.returncode, done.stderr or done.stdout, tail=1500)}). Check that the scratch "
                f"volume is writable and has free space")
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# pgbackup throwaway server\n")
            conf.write(conf_lines({**settings, "unix_socket_directories": f"'{self._socket_dir}'"}))
        log("pg.instance.initdb", major=self.tools.major, datadir=str(self.datadir))

    def _prepare_restored(self) -> None:
        """Make a restored data directory startable here: no stale pid file or signals, our hba, our port."""
        for name in ("postmaster.pid", "postmaster.opts", "standby.signal", "recovery.signal"):
            (self.datadir / name).unlink(missing_ok=True)
        hba = self.workdir / f"{self.datadir.name}-hba.conf"
        ident = self.workdir / f"{self.datadir.name}-ident.conf"
        hba.write_text(TRUST_HBA)
        ident.write_text("")
        self._remove += [hba, ident]
        conf = self.datadir / "postgresql.conf"
        if not conf.exists():  # Debian-style clusters keep it in /etc: the copy has none
            conf.write_text("# written by pgbackup: the backed-up cluster kept its configuration elsewhere\n")
        settings = {**RESTORED_SETTINGS, "hba_file": f"'{hba}'", "ident_file": f"'{ident}'",
                    "unix_socket_directories": f"'{self._socket_dir}'", **self._recovery}
        with open(self.datadir / "postgresql.auto.conf", "a") as auto:
            auto.write("\n# pgbackup throwaway verification server (this copy only)\n")
            auto.write(conf_lines(settings))
        if (self.datadir / "backup_label").exists() or self._recovery:
            # A base backup: replay the WAL it carries in pg_wal up to consistency, then promote.
            (self.datadir / "recovery.signal").write_text("")
        os.chmod(self.datadir, 0o700)
        chown_tree(self.datadir, self.account)
        for path in (hba, ident):
            os.chmod(path, 0o600)
            if self.account is not None:
                os.chown(path, *self.account)
        if self.account is not None and not reachable(self.datadir, self.account):
            raise ThrowawayServerError(
                f"the PostgreSQL server account (uid {self.account[0]}) cannot reach {self.datadir}: restore "
                f"into a directory made by make_workspace()")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """pg_ctl start -w; for a restored cluster also wait until recovery has ended."""
        if self._running:
            return
        started = time.monotonic()
        try:
            done = self._run([self.tools.path("pg_ctl"), "start", "-w", "-t", str(self.start_timeout),
                              "-D", str(self.datadir), "-l", str(self.logfile), "-o", f"-p {self.port}"],
                             timeout=self.start_timeout + 30)
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess([], 1, "", f"pg_ctl did not return within {self.start_timeout + 30}s")
        self._running = (self.datadir / "postmaster.pid").exists()
        if done.returncode != 0:
            what = "on the restored data directory" if self.restored else "for verification"
            fatal = self._first_fatal() or (done.stderr or done.stdout).strip()[-600:]
            raise ThrowawayServerError(
                f"PostgreSQL {self.tools.major} did not start {what} ({self.datadir}): {fatal}"
                f"\nserver log:\n{self.log_tail()}")
        if self.restored:
            self._adopt_superuser()
            self._wait_for_recovery_end()
        log("pg.instance.started", major=self.tools.major, port=self.port, datadir=str(self.datadir),
            restored=self.restored, seconds=round(time.monotonic() - started, 3))

    def stop(self) -> None:
        """Fast shutdown, then immediate, then SIGKILL: a stuck server must never outlive the Job step."""
        if not (self.datadir / "postmaster.pid").exists():
            self._running = False
            return
        for mode in self.stop_modes:
            wait = _STOP_WAIT_SECONDS.get(mode, 30)
            try:
                done = self._run([self.tools.path("pg_ctl"), "stop", "-m", mode, "-w", "-t", str(wait),
                                  "-D", str(self.datadir)], timeout=wait + 10)
                if done.returncode == 0:
                    self._running = False
                    return
            except subprocess.TimeoutExpired:
                pass
        pid = self._postmaster_pid()
        if pid is not None and self._is_our_postmaster(pid):
            try:
                os.kill(pid, signal.SIGKILL)  # its backends exit when they notice the postmaster is gone
            except OSError:
                pass
        self._running = False
        log_warning("pg.instance.killed", datadir=str(self.datadir), pid=pid)

    def close(self) -> None:
        """Stop the server and remove its directories (data, log, socket)."""
        try:
            self.stop()
        finally:
            for path in self._remove:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            if self.datadir in self._remove:
                self.logfile.unlink(missing_ok=True)

    def __enter__(self) -> ThrowawayPostgres:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._running

    # -- using it -------------------------------------------------------------------------------

    def conn_params(self) -> ConnParams:
        """The superuser over 127.0.0.1 (trust authentication unless created with a password)."""
        return ConnParams(host="127.0.0.1", port=self.port, user=self.superuser, password=self.password,
                          sslmode="disable", credentials_hint="the throwaway server's superuser")

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return self.conn_params().connect(dbname)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def _first_fatal(self) -> str:
        """The first FATAL/PANIC line of the server log: usually the whole story of a failed start."""
        try:
            lines = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for line in lines:
            for marker in ("FATAL:", "PANIC:"):
                if marker in line:
                    return line[line.index(marker):].strip()
        return ""

    def _is_our_postmaster(self, pid: int) -> bool:
        """A stale pid file may name an unrelated process by now: only a postgres on our data dir is killed."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(cmdline) and cmdline[0].endswith(b"postgres") and str(self.datadir).encode() in cmdline

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.datadir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, ValueError, IndexError):
            return None

    def _adopt_superuser(self) -> None:
        """Find the restored cluster's bootstrap superuser (oid 10) via any role we can log in as."""
        tried: list[str] = []
        deadline = time.monotonic() + self.start_timeout
        for role in self._login_roles:
            tried.append(role)
            try:
                row = self._login(role, deadline)
            except psycopg.OperationalError as exc:
                if "does not exist" in str(exc):
                    continue
                raise ThrowawayServerError(
                    f"cannot connect to the restored cluster on 127.0.0.1:{self.port} as {role!r}: "
                    f"{str(exc).strip()[:300]}\nserver log:\n{self.log_tail()}") from None
            if row:
                self.superuser = str(row[0])
                return
        raise RunnerError(
            f"cannot log in to the restored cluster: none of the roles {', '.join(tried)} exist in it. Set "
            f"PGUSER to a role of the backed-up cluster (e.g. the backup user)", reason="VerificationLoginFailed")

    def _login(self, role: str, deadline: float) -> tuple[object, ...] | None:
        """Log in as `role` and read the bootstrap superuser. pg_ctl -w may return while a long recovery (WAL
        replayed through a restore_command) still refuses logins: those are retried until `deadline`."""
        while True:
            try:
                with psycopg.connect(host="127.0.0.1", port=self.port, user=role, dbname="postgres",
                                     sslmode="disable", connect_timeout=10, autocommit=True) as conn:
                    return conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
            except psycopg.OperationalError as exc:
                text = str(exc)
                recovering = "not accepting connections" in text or "is starting up" in text
                if not recovering or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _wait_for_recovery_end(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            with self.connect() as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and not row[0]:
                return
            if time.monotonic() > deadline:
                raise ThrowawayServerError(
                    f"the restored cluster in {self.datadir} is still recovering after {self.start_timeout}s"
                    f"\nserver log:\n{self.log_tail()}")
            time.sleep(0.2)
