"""What a logical restore keeps of the backup's owners and privileges (RestoreRequest spec.noOwner /
spec.noPrivileges, `pgbackup restore --no-owner / --no-privileges`, pg_restore's flags): by default everything,
which needs a superuser or a role that is a member of every owner's role; with noOwner everything restored,
the database included, belongs to the restoring role; with noPrivileges no GRANT or REVOKE of the backup is
replayed, on the objects or on the database. And the error when pg_restore is refused an owner change."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.runner.catalog.manifest import DatabaseProperties
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.privileges import MissingPrivilege, quote_role

# PostgreSQL 15 and older: 'must be member of role "x"'; 16 and newer: 'must be able to SET ROLE "x"'
_OWNER_REFUSED = re.compile(r'must be (?:a )?member of role "(?P<a>[^"]+)"|must be able to SET ROLE "(?P<b>[^"]+)"')
_ROLE_MISSING = re.compile(r'role "([^"]+)" does not exist')


@dataclass(frozen=True)
class Ownership:
    """pg_restore --no-owner / --no-privileges, applied to the database-level properties too."""

    no_owner: bool = False
    no_privileges: bool = False
    option_names: tuple[str, str] = ("--no-owner", "--no-privileges")
    """How the user sets them (the CLI flags, or the RestoreRequest fields), for error messages."""

    @classmethod
    def of(cls, spec: RestoreRequestSpec) -> Ownership:
        return cls(no_owner=spec.no_owner, no_privileges=spec.no_privileges,
                   option_names=("spec.noOwner: true", "spec.noPrivileges: true"))

    @property
    def changes_anything(self) -> bool:
        return self.no_owner or self.no_privileges

    def pg_restore_args(self) -> list[str]:
        return [*(["--no-owner"] if self.no_owner else []), *(["--no-privileges"] if self.no_privileges else [])]

    def recorded(self, properties: DatabaseProperties | None) -> DatabaseProperties | None:
        """The database-level properties the restore gives the database: without the owner (noOwner: it stays
        the restoring role's) and without the GRANTs (noPrivileges: the default privileges)."""
        if properties is None or not self.changes_anything:
            return properties
        update: dict[str, object] = {}
        if self.no_owner:
            update["owner"] = None
        if self.no_privileges:
            update["acl"] = None
        return properties.model_copy(update=update)

    def missing_role_hint(self, stderr: str) -> str:
        """What to do when pg_restore stopped at an owner or grantee role the target server does not have."""
        found = _ROLE_MISSING.search(stderr)
        if found is None:
            return ""
        return (f". The backup names role {found.group(1)!r}, which the target server does not have: create it, "
                f"restore the backup's roles too (includeGlobals / --globals), or restore without it ("
                f"{' and '.join(self.option_names)})")

    def explain_refusal(self, stderr: str, target: ConnParams, database: str, *,
                        changed: str = "the database this restore created was dropped, nothing else was changed"
                        ) -> MissingPrivilege | None:
        """pg_restore's failure as a MissingPrivilege when it was refused giving an object its owner."""
        found = _OWNER_REFUSED.search(stderr)
        if found is None or self.no_owner:
            return None
        owner = found["a"] or found["b"]
        return MissingPrivilege(
            f"restoring into {database!r} on {target.host}:{target.port} as role {target.user!r} failed: objects of "
            f"the backup belong to role {owner!r}, and {target.user!r} may not give them to it (pg_restore: "
            f"{found.group(0)}). Set {self.option_names[0]} (everything then belongs to {target.user!r}; add "
            f"{self.option_names[1]} when the GRANTs name roles it may not grant for), or let the role act as the "
            f"owner (as a superuser: GRANT {quote_role(owner)} TO {quote_role(target.user)}; not for a superuser "
            f"owner), or restore as a superuser; {changed}")
