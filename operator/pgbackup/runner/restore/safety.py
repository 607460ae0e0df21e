"""The safety backup a RestoreRequest takes before it replaces a database (target.preRestoreBackup): a normal
logical backup of the databases about to be replaced, purpose pre-restore, in the policy's storage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pgbackup.api.policy import LogicalOptions
from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.runner.backup.run import take_backup
from pgbackup.runner.common.config import PolicyConfig
from pgbackup.runner.common.log import log
from pgbackup.runner.postgres.pg import ConnParams
from pgbackup.runner.restore.request import RequestConfig
from pgbackup.runner.storage.base import Storage


def safety_backup_has_globals(spec: RestoreRequestSpec, logical: LogicalOptions) -> bool:
    return logical.globals or spec.include_globals


def take_safety_backup(request: RequestConfig, target: ConnParams, databases: Sequence[str], storage: Storage,
                       environ: Mapping[str, str]) -> str:
    """A normal logical backup of the databases about to be replaced, in the policy's storage (same
    compression and encryption), taken with the target's credentials. Returns its backup id.

    Whole like the policy's own backups: the roles and tablespaces (pg_dumpall --globals-only, honouring
    logical.noRolePasswords) unless the policy's logical.globals is false and the request replays no globals
    (a request with includeGlobals changes roles, so their state before is always kept)."""
    spec = request.policy.spec
    database = spec.database.model_copy(update={
        "host": target.host, "port": target.port, "databases": list(databases),
        "credentials_secret": request.spec.target.credentials_secret or spec.database.credentials_secret})
    safety = spec.model_copy(update={"database": database, "method": "logical", "logical": spec.logical.model_copy(
        update={"globals": safety_backup_has_globals(request.spec, spec.logical)})})
    log("restore.safety_backup.start", databases=list(databases), target=f"{target.host}:{target.port}")
    outcome = take_backup(PolicyConfig(name=request.policy.name, namespace=request.policy.namespace, spec=safety),
                          storage, environ=environ, purpose="pre-restore")
    log("restore.safety_backup.done", backup_id=outcome.manifest.id, manifest=outcome.location)
    return outcome.manifest.id
