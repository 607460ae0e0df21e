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


def require_signal(conn: psycopg.Connection, target: ConnParams, database: str) -> None:
    """Raise MissingPrivilege when the login role (not a superuser) could not end the other sessions on
    `database`: those of roles it does not act as need pg_signal_backend, a superuser's a superuser."""
    row = conn.execute(
        "SELECT coalesce(string_agg(DISTINCT a.usename, ', ') FILTER (WHERE r.rolsuper), ''), "
        "count(*) FILTER (WHERE NOT r.rolsuper AND NOT pg_has_role(current_user, r.oid, 'USAGE')), "
        "pg_has_role(current_user, 'pg_signal_backend', 'USAGE'), "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
        "FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid "
        "WHERE a.datname = %s AND a.pid <> pg_backend_pid()", (database,)).fetchone()
    if row is None or row[3]:
        return
    superusers, others, may_signal = str(row[0]), int(row[1]), bool(row[2])
    where = f"database {database!r} on {target.host}:{target.port}"
    if superusers:
        raise MissingPrivilege(
            f"{where} has sessions of the superuser(s) {superusers}, which only a superuser may end "
            f"(target.terminateConnections): end them yourself, or restore as a superuser; nothing was changed")
    if others and not may_signal:
        raise MissingPrivilege(
            f"{where} has {others} session(s) of other roles, and role {target.user!r} may not end them "
            f"(target.terminateConnections). As a superuser: GRANT pg_signal_backend TO {quote_role(target.user)}; "
            f"or stop the applications first; nothing was changed")
