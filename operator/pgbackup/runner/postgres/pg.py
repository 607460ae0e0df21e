"""Connecting to a PostgreSQL server: where and as whom (ConnParams), with errors that say what to check.

The password comes from PGPASSWORD (a secretKeyRef env var) and reaches child processes only through their
environment: never an argument list, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg

from pgbackup.api import jobenv
from pgbackup.api.policy import DatabaseSpec
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.common.log import redact_values

CONNECT_TIMEOUT_SECONDS = 15


class DatabaseUnreachable(RunnerError):
    reason = "DatabaseUnreachable"
    exit_code = jobenv.EXIT_NETWORK


class AuthenticationFailed(RunnerError):
    reason = "AuthenticationFailed"
    exit_code = jobenv.EXIT_FAILED


@dataclass(frozen=True)
class ConnParams:
    """Where and as whom to connect; `password` is excluded from repr so it cannot leak through logging."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    credentials_hint: str = "the PGUSER/PGPASSWORD environment variables"

    @classmethod
    def from_spec(cls, spec: DatabaseSpec, environ: Mapping[str, str] | None = None) -> ConnParams:
        """Host/port/TLS from the policy, user and password from the env the Job fills from the Secret."""
        environ = os.environ if environ is None else environ
        secret = spec.credentials_secret
        user = environ.get(jobenv.ENV_DB_USER)
        if not user:
            raise UsageError(
                f"{jobenv.ENV_DB_USER} is not set: the backup Job takes it from key {secret.username_key!r} of "
                f"Secret {secret.name!r}; set it when running the runner by hand"
            )
        return cls(
            host=spec.host,
            port=spec.port,
            user=user,
            password=environ.get(jobenv.ENV_DB_PASSWORD) or None,
            sslmode=spec.ssl_mode,
            sslrootcert=environ.get(jobenv.ENV_DB_SSLROOTCERT) or None,
            credentials_hint=f"keys {secret.username_key!r}/{secret.password_key!r} of Secret {secret.name!r}",
        )

    def describe(self) -> str:
        return f"host {self.host} port {self.port} user {self.user}"

    def connect_kwargs(self, dbname: str) -> dict[str, object]:
        kwargs: dict[str, object] = {"host": self.host, "port": self.port, "user": self.user, "dbname": dbname,
                                     "sslmode": self.sslmode, "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                                     "application_name": "pgbackup"}
        if self.password is not None:
            kwargs["password"] = self.password
        if self.sslrootcert:
            kwargs["sslrootcert"] = self.sslrootcert
        return kwargs

    def connect(self, dbname: str = "postgres", *, autocommit: bool = True) -> psycopg.Connection:
        """A connection, or a RunnerError naming host, port and user and what to check."""
        try:
            return psycopg.connect(autocommit=autocommit, **self.connect_kwargs(dbname))  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            raise self.explain(exc, dbname) from None

    def explain(self, exc: BaseException | str, dbname: str) -> RunnerError:
        detail = self.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        where = f"PostgreSQL at {self.describe()} (database {dbname})"
        lowered = str(exc).lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered \
                or "authentication failed" in lowered:
            return AuthenticationFailed(
                f"{where} rejected the login: {detail}. Check the user name and password in "
                f"{self.credentials_hint} and the server's pg_hba.conf"
            )
        if "does not exist" in lowered and "database" in lowered:
            return RunnerError(f"{where}: {detail}. Check the database names in the policy", reason="DatabaseMissing")
        if "permission denied" in lowered or "no pg_hba.conf entry" in lowered:
            return AuthenticationFailed(f"{where} refused access: {detail}. Check pg_hba.conf and the role's rights")
        return DatabaseUnreachable(
            f"cannot connect to {where}: {detail}. Check that the server is running and reachable from here "
            f"(host name, port, NetworkPolicy/firewall, sslMode)"
        )

    def scrub(self, text: str) -> str:
        return redact_values(text, (self.password,)) if self.password else text

    def child_env(self, dbname: str | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for pg_dump & co: libpq reads everything from here, so argv holds no secret."""
        env = dict(os.environ if base is None else base)
        for name in ("PGSERVICE", "PGPASSFILE", "PGOPTIONS"):
            env.pop(name, None)
        env.update({"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGSSLMODE": self.sslmode,
                    "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT_SECONDS), "PGAPPNAME": "pgbackup"})
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        else:
            env.pop("PGPASSWORD", None)
        if self.sslrootcert:
            env["PGSSLROOTCERT"] = self.sslrootcert
        if dbname is not None:
            env["PGDATABASE"] = dbname
        return env


def environ_without_libpq() -> dict[str, str]:
    """This process's environment without libpq's PG* variables, for server programs that must not pick up the
    connection settings meant for the database being backed up."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}
