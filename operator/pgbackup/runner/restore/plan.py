"""Plan a RestoreRequest before anything changes: resolve the backup, look at the target, verify checksums.

The plan is read-only by construction: it reads the catalog and the backup's objects and queries the target's
catalogs (pg_database, pg_stat_activity); it creates, renames and drops nothing. Every refusal the restore
would hit later for a reason known now (target exists without overwrite, active sessions, damaged objects,
missing age identity) is raised here, so a dry run reports it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pgbackup.api.restore import RestorePlan, RestoreRequestSpec
from pgbackup.runner.catalog.catalog import BackupNotFound, Catalog
from pgbackup.runner.common.errors import RunnerError, UsageError
from pgbackup.runner.catalog.manifest import Manifest, ManifestObject
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.postgres.privileges import require_createdb, require_database_owner, require_signal
from pgbackup.runner.storage.pipeline import IdentityError
from pgbackup.runner.restore.ddl import find_leftovers, fit_name, is_temp_of, new_short_id, temp_name
from pgbackup.runner.restore.reading import verify_objects
from pgbackup.runner.storage.identity import parse_identities
from pgbackup.runner.restore.selective import Selection
from pgbackup.runner.common.timestamps import utc_now
from pgbackup.runner.catalog.manifest import volume_object

OLD_INFIX = "__pgbackup_old_"


class ActiveSessions(RunnerError):
    reason = "ActiveSessions"


@dataclass
class DatabaseStep:
    """One database of the backup and where it goes."""

    source: str
    """Database name inside the backup."""
    target: str
    """Final name on the target server."""
    obj: ManifestObject
    expected_rows: dict[str, int]
    exists: bool = False
    sessions: int = 0
    temp: str | None = None
    """The temporary name restored into first (marked as incomplete); renamed to `target` once checked."""
    previous: str | None = None
    """Overwrite: the dated name the replaced database is kept under."""

    @property
    def restore_into(self) -> str:
        return self.temp or self.target

    @property
    def replaces(self) -> bool:
        return self.previous is not None


@dataclass
class PlannedRestore:
    manifest: Manifest
    target: ConnParams
    databases: list[DatabaseStep]
    plan: RestorePlan
    server_version_num: int = 0
    leftovers: list[str] = field(default_factory=list)
    """Databases named like a restore's temporary database (of any target) found on the server."""
    stale: list[str] = field(default_factory=list)
    """The leftovers marked as incomplete restores into this request's targets: dropped before it starts."""
    safety_globals: bool = True
    """The safety backup before an overwrite holds the roles and tablespaces too (pg_dumpall --globals-only)."""

    def safety_backup_holds(self) -> str:
        names = ", ".join(repr(s.target) for s in self.databases if s.replaces)
        return (f"a normal logical backup of the policy: the database(s) {names}"
                + (" and the server's roles and tablespaces (pg_dumpall --globals-only)" if self.safety_globals
                   else ", without roles and tablespaces (the policy's logical.globals is false)"))

    @property
    def replaces_existing(self) -> bool:
        return any(step.replaces for step in self.databases)


def default_target_name(source: str, backup_id: str) -> str:
    """'<source>_restored_<backup id lower-cased>', e.g. shop_restored_20261123t020000z."""
    return fit_name(source, f"_restored_{backup_id.lower()}")


def previous_name(target: str, now: datetime) -> str:
    return fit_name(target, f"{OLD_INFIX}{now.astimezone(UTC).strftime('%Y%m%d%H%M%S')}")


def resolve_backup(catalog: Catalog, requested: str) -> Manifest:
    """'latest' = the newest complete backup; otherwise that id (BackupNotFound names the nearest ids)."""
    if requested == "latest":
        newest = catalog.latest()
        if newest is None:
            others = ", ".join(f"{m.id} ({m.purpose})" for m in catalog.backups()[:5])
            hint = f"; name one of its other backups by id: {others}" if others else ""
            raise BackupNotFound(f"the catalog at {catalog.storage.url} holds no complete scheduled or on-demand "
                                 f"backup to restore as 'latest'; take one first (annotate the policy "
                                 f"pgbackup.dev/backup-now=<value>){hint}")
        return newest
    return catalog.get(requested)


def _refuse_unsupported(spec: RestoreRequestSpec, manifest: Manifest) -> None:
    if spec.point_in_time is not None:
        raise UsageError("pointInTime restores are not supported by RestoreRequest yet: remove spec.pointInTime "
                         "to restore the backup itself", reason="UnsupportedRestore")
    if spec.target.volume is not None or manifest.method != "logical":
        ownership = (" (noOwner and noPrivileges do not apply there: a physical restore copies the data directory "
                     "with its owners, privileges and roles as they were, and needs no database role)"
                     if spec.no_owner or spec.no_privileges else "")
        raise UsageError(f"backup {manifest.id} is a {manifest.method} backup: RestoreRequest restores logical "
                         f"backups into a database; restore physical backups with `pgbackup restore {manifest.id} "
                         f"--target-dir DIR`{ownership}", reason="UnsupportedRestore")


def _select(spec: RestoreRequestSpec, manifest: Manifest) -> list[DatabaseStep]:
    dumps = manifest.object_by_kind("database")
    by_name = {str(o.database): o for o in dumps}
    wanted = list(spec.databases) or list(by_name)
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise UsageError(f"backup {manifest.id} has no database {', '.join(map(repr, unknown))}; it holds "
                         f"{', '.join(map(repr, by_name)) or 'none'}: fix spec.databases", reason="DatabaseNotInBackup")
    if not wanted:
        raise UsageError(f"backup {manifest.id} holds no database dump to restore", reason="DatabaseNotInBackup")
    if spec.target.database and len(wanted) > 1:
        raise UsageError(f"target.database renames one database, but {len(wanted)} would be restored "
                         f"({', '.join(wanted)}): list exactly one in spec.databases", reason="InvalidRestoreRequest")
    infos = {d.name: d for d in manifest.databases}
    steps: list[DatabaseStep] = []
    for source in wanted:
        if spec.target.database:
            target = spec.target.database
        elif spec.target.overwrite:
            target = source  # replacing in place: the database of the same name
        else:
            target = default_target_name(source, manifest.id)
        info = infos.get(source)
        steps.append(DatabaseStep(source=source, target=target, obj=by_name[source],
                                  expected_rows=dict(info.row_counts) if info else {}))
    names = [s.target for s in steps]
    if len(set(names)) != len(names):
        raise UsageError(f"two databases would be restored under the same name: {names}", reason="InvalidRestoreRequest")
    return steps


def _identity_problem(manifest: Manifest, objects: Sequence[ManifestObject], identity: str | None) -> str | None:
    if not any(o.encrypted for o in objects):
        return None
    if not identity:
        return (f"backup {manifest.id} is encrypted but no age identity was given: set the policy's "
                f"encryption.identitySecret so the restore Job mounts the private key")
    try:
        publics = {str(parsed.to_public()) for parsed in parse_identities(identity)}
    except IdentityError:
        return "the age identity file does not hold a valid AGE-SECRET-KEY-1... line (as written by age-keygen)"
    if manifest.encryption_recipients and not publics & set(manifest.encryption_recipients):
        return (f"backup {manifest.id} is encrypted for {', '.join(manifest.encryption_recipients)}, and the "
                f"mounted age identity is not one of them: mount the matching key in encryption.identitySecret")
    return None


def _inspect_target(target: ConnParams, steps: list[DatabaseStep]) -> tuple[int, dict[str, bool]]:
    """Fill exists/sessions per database; returns the server version and leftover temporary databases (name ->
    carries the incomplete-restore marker)."""
    with target.connect("postgres") as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        version = int(row[0]) if row else 0
        for step in steps:
            step.exists = bool(conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                            (step.target,)).fetchone())
            count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                 (step.target,)).fetchone()
            step.sessions = int(count[0]) if count else 0
        leftovers = find_leftovers(conn)
    return version, leftovers


def _refuse_conflicts(spec: RestoreRequestSpec, target: ConnParams, steps: list[DatabaseStep]) -> None:
    where = f"{target.host}:{target.port}"
    for step in steps:
        if step.exists and not spec.target.overwrite:
            raise UsageError(
                f"database {step.target!r} already exists on {where}: nothing was changed. Restore under another "
                f"name (target.database), or replace it with target.overwrite: true (a safety backup is taken "
                f"first and the old database is kept under a dated name)", reason="TargetDatabaseExists")
        if step.exists and step.sessions and not spec.target.terminate_connections:
            raise ActiveSessions(
                f"database {step.target!r} on {where} has {step.sessions} active session(s): nothing was changed. "
                f"Stop the applications using it, or set target.terminateConnections: true to end the sessions "
                f"before the names are swapped")


def _refuse_missing_privileges(spec: RestoreRequestSpec, target: ConnParams, steps: list[DatabaseStep]) -> None:
    """Every restore creates a database (CREATEDB); replacing a whole database renames it aside (its owner);
    ending the sessions on it needs pg_signal_backend for those of other roles."""
    with target.connect("postgres") as conn:
        require_createdb(conn, target)
        for step in steps:
            if step.exists and spec.include is None:
                require_database_owner(conn, target, step.target)
            if step.exists and spec.target.overwrite and spec.target.terminate_connections:
                require_signal(conn, target, step.target)


def _steps(spec: RestoreRequestSpec, planned: PlannedRestore, storage_url: str) -> list[str]:
    where = f"{planned.target.host}:{planned.target.port}"
    manifest = planned.manifest
    out = [f"verify size and SHA-256 of {len(planned.plan.objects)} object(s) of backup {manifest.id} "
           f"(done while planning, before any change)"]
    replaced = [s for s in planned.databases if s.replaces]
    if replaced and spec.target.pre_restore_backup:
        out.append(f"take a safety backup of {', '.join(repr(s.target) for s in replaced)} on {where} into "
                   f"{storage_url} ({planned.safety_backup_holds()})")
    elif replaced:
        out.append("no safety backup (target.preRestoreBackup: false)")
    for name in planned.stale:
        out.append(f"drop {name!r}: {name!r} was left by an interrupted restore into the same name (marked as "
                   f"incomplete, no restore runs in it)")
    for index, step in enumerate(planned.databases):
        out.append(f"create database {step.restore_into!r} on {where} with the backup's encoding and locale, "
                   f"marked as an incomplete restore (temporary, "
                   + ("swapped in after the checks)" if step.replaces else f"renamed to {step.target!r} after the checks)"))
        if spec.extensions:
            out.append(f"create extensions {', '.join(spec.extensions)} in {step.restore_into!r} when missing")
        if spec.include_globals and index == 0:
            out.append("replay the backup's globals (roles, tablespaces); existing roles are kept")
        out.append(f"pg_restore database {step.source!r} of the backup into {step.restore_into!r}"
                   f" (-j {spec.jobs}: a custom-format dump is staged in scratch first when it fits)"
                   + (", objects owned by the restoring role (noOwner)" if spec.no_owner else "")
                   + (", without the backup's GRANTs/REVOKEs (noPrivileges)" if spec.no_privileges else ""))
        out.append(f"check {len(step.expected_rows)} table row count(s) against the manifest"
                   + (f", {len(spec.checks)} SQL check(s)" if spec.checks else "")
                   + (f", {len(spec.extensions)} extension(s)" if spec.extensions else ""))
    for step in planned.databases:
        if not step.replaces:
            out.append(f"rename {step.restore_into!r} to {step.target!r}, with the backup's owner, privileges, "
                       f"settings and comment")
    for step in replaced:
        out.append(f"apply the backup's privileges, settings, owner and comment to {step.temp!r}")
        if spec.target.terminate_connections:
            out.append(f"end the other sessions on {step.target!r} (now {step.sessions})")
        out.append(f"in one transaction: rename {step.target!r} to {step.previous!r} and {step.temp!r} to "
                   f"{step.target!r}")
        out.append(f"drop {step.previous!r} (target.dropPrevious)" if spec.target.drop_previous
                   else f"keep the replaced database as {step.previous!r} until you drop it")
    created = [s.restore_into for s in planned.databases]
    out.append(f"on any failure before the swap: drop {', '.join(map(repr, created))}; existing databases stay "
               f"untouched")
    for name in planned.leftovers:
        if name not in planned.stale:
            out.append(f"note: {name!r} was left by an interrupted restore; drop it when no restore is running")
    return out


def plan_restore(spec: RestoreRequestSpec, catalog: Catalog, target: ConnParams, identity: str | None, *,
                 plan: RestorePlan, now: datetime | None = None, short_id: str | None = None,
                 safety_globals: bool = True) -> PlannedRestore:
    """Fill `plan` (kept by the caller, so a refusal still reports what was learnt) and return the details.
    Raises for anything that would make the restore refuse or fail for a reason known now."""
    now = now or utc_now()
    short_id = short_id or new_short_id()
    manifest = resolve_backup(catalog, spec.backup)
    plan.backup = manifest.id
    _refuse_unsupported(spec, manifest)
    steps = _select(spec, manifest)
    objects = [s.obj for s in steps]
    if spec.include_globals:
        objects += manifest.object_by_kind("globals")
    objects += [volume_object(manifest, volume.claim_name) for volume in spec.volumes]  # verified like the rest
    plan.objects = [catalog.storage.location(catalog.object_key(manifest.id, o.key)) for o in objects]
    plan.target = f"{target.host}:{target.port}/{','.join(s.target for s in steps)}"
    problem = _identity_problem(manifest, objects, identity)
    if problem:
        raise IdentityError(problem)
    version, leftovers = _inspect_target(target, steps)
    _refuse_conflicts(spec, target, steps)
    _refuse_missing_privileges(spec, target, steps)
    for step in steps:
        step.temp = temp_name(step.target, short_id)
        if step.exists:
            step.previous = previous_name(step.target, now)
    stale = [name for name, marked in leftovers.items() if marked and any(is_temp_of(name, s.target) for s in steps)]
    planned = PlannedRestore(manifest=manifest, target=target, databases=steps, plan=plan, server_version_num=version,
                             leftovers=list(leftovers), stale=stale, safety_globals=safety_globals)
    plan.steps = _steps(spec, planned, catalog.storage.url)
    if spec.include is not None and len(steps) == 1:
        plan.steps = selective_steps(Selection.parse(spec.include.schemas, spec.include.tables), planned)
    verify_objects(catalog, manifest, objects)
    return planned


def selective_steps(selection: Selection, planned: PlannedRestore) -> list[str]:
    """The plan's steps for a RestoreRequest with spec.include (replaces the whole-database steps)."""
    where = f"{planned.target.host}:{planned.target.port}"
    step = planned.databases[0]
    out = [f"verify size and SHA-256 of the objects of backup {planned.manifest.id} (done while planning)",
           f"list database {step.source!r} of the backup with pg_restore -l and keep only {selection.describe()} "
           f"(tables, data, sequences, indexes, constraints, defaults, triggers); an unknown name stops here"]
    if step.replaces:
        out += [f"take a safety backup of {step.target!r} on {where} (unless target.preRestoreBackup: false; "
                f"{planned.safety_backup_holds()})",
                f"restore the selection into the temporary database {step.temp!r} and check row counts there",
                f"in one transaction on {step.target!r}: drop the included tables, recreate and load them, assert "
                f"their row counts; other tables stay untouched",
                f"drop {step.temp!r}"]
    else:
        out += [f"create database {step.target!r} on {where} and restore the selection in one transaction",
                "check the row counts of the included tables against the manifest"]
    return out
