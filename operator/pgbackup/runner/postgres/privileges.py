"""What the login role may do on a server, checked before a restore changes anything, and the error that names
a missing privilege and the statement (GRANT / ALTER ROLE) that gives it. A missing privilege is a configuration
a person must fix, not a failure a retry could mend: it exits with the usage code (pgbackup.api.jobenv)."""

from __future__ import annotations

import re

import psycopg

from pgbackup.api import jobenv
from pgbackup.runner.common.errors import RunnerError
from pgbackup.runner.postgres.pg import ConnParams

_PLAIN_NAME = re.compile(r"[a-z_][a-z0-9_$]*")


class MissingPrivilege(RunnerError):
    """The login role lacks a privilege the task needs; the message says which and how to grant it."""

    reason = "MissingPrivilege"
    exit_code = jobenv.EXIT_USAGE


def quote_role(name: str) -> str:
    """A role name as it is typed in SQL (double-quoted unless it is a plain lower-case name)."""
    return name if _PLAIN_NAME.fullmatch(name) else '"' + name.replace('"', '""') + '"'


def cannot_create_databases(target: ConnParams) -> MissingPrivilege:
    return MissingPrivilege(
        f"role {target.user!r} may not create databases on {target.host}:{target.port}, and a restore creates a "
        f"new database (also when it replaces one: the restored copy is swapped in). Give the role the CREATEDB "
        f"attribute (as a superuser: ALTER ROLE {quote_role(target.user)} CREATEDB) or restore as a role that has it")


def require_createdb(conn: psycopg.Connection, target: ConnParams) -> bool:
    """Raise MissingPrivilege unless the login role is a superuser or has CREATEDB; returns whether it is a
    superuser."""
    row = conn.execute("SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone()
    superuser, createdb = (bool(row[0]), bool(row[1])) if row else (False, False)
    if not (superuser or createdb):
        raise cannot_create_databases(target)
    return superuser


def require_database_owner(conn: psycopg.Connection, target: ConnParams, database: str) -> None:
    """Raise MissingPrivilege unless the login role may rename `database` (its owner, a member of the owner's
    role, or a superuser): replacing a database renames it aside."""
    row = conn.execute("SELECT pg_get_userbyid(datdba), pg_has_role(current_user, datdba, 'USAGE') "
                       "FROM pg_database WHERE datname = %s", (database,)).fetchone()
    if row is None or row[1]:
        return
    owner = str(row[0])
    raise MissingPrivilege(
        f"role {target.user!r} does not own database {database!r} on {target.host}:{target.port} (its owner is "
        f"{owner!r}), and replacing it renames it aside, which only its owner or a superuser may. As a superuser, "
        f"run ALTER DATABASE {quote_role(database)} OWNER TO {quote_role(target.user)} (or GRANT "
        f"{quote_role(owner)} TO {quote_role(target.user)}), or restore as the owner")
