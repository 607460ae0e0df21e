"""A RestoreRequest as the runner reads it: `pgbackup restore-request` runs it (jobenv.COMMAND_RESTORE; the
sequence is in pgbackup.runner.restore.run, planning in plan, the changes in execute).

Contract with the operator (the Job's environment):

- ``PGBACKUP_RESTORE`` (jobenv.ENV_RESTORE), JSON::

      {"name": <request>, "namespace": <ns>,
       "spec": <RestoreRequestSpec wire dict>,
       "policy": {"name": <policy>, "spec": <BackupPolicySpec wire dict>}}

  The policy is embedded so the runner knows the storage (and its encryption) without API access.
  ``--request FILE`` (same document, JSON or YAML) replaces it for runs by hand.
- ``PGUSER`` / ``PGPASSWORD`` (``PGSSLROOTCERT``): credentials of the TARGET server: from
  ``spec.target.credentialsSecret``, else from the policy's ``database.credentialsSecret``. The safety backup
  taken before an overwrite uses them too (it backs up the target database).
- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (S3 storage) and ``PGBACKUP_VOLUME_ROOT`` (volume storage),
  exactly as for backup Jobs; the safety backup is written there.
- ``PGBACKUP_AGE_IDENTITY_FILE``: the age identity for encrypted backups (mounted from
  ``encryption.identitySecret``).
- ``PGBACKUP_SUMMARY_FILE`` / ``/dev/termination-log``: where the JobSummary(kind='restore') goes, with
  ``plan`` (always, as far as planning got) and ``result`` (when anything was restored).

Sequence: plan (resolve the backup, inspect the target, verify checksums of every object, volumes included;
refusals happen here, before any change) -> [dryRun stops] -> [overwrite: safety backup] -> drop leftovers of
killed restores into the same names -> create the database under a temporary name (marked as an incomplete
restore; the backup's encoding and locale), extensions first, globals, pg_restore -> checks (row counts vs
manifest, extensions, SQL) -> the backup's settings and privileges -> in one transaction: [overwrite: rename the
old database aside] rename the temporary one to the target name, with its recorded comment and owner -> [keep or
drop the old one]. Any failure before the rename drops what was created, so the target name only ever holds a
complete restore and an existing database is never touched unless everything succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pgbackup.api import jobenv
from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.runner.common.config import PolicyConfig, policy_from_document
from pgbackup.runner.common.errors import UsageError
from pgbackup.runner.postgres.pg import ConnParams


@dataclass(frozen=True)
class RequestConfig:
    """A RestoreRequest as the runner sees it."""

    name: str
    namespace: str
    spec: RestoreRequestSpec
    policy: PolicyConfig


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())


def request_from_document(document: Any, origin: str) -> RequestConfig:
    if not isinstance(document, dict) or "spec" not in document or not isinstance(document.get("policy"), dict):
        raise UsageError(f"{origin} must hold {{name, namespace, spec: <RestoreRequest spec>, policy: {{name, spec: "
                         f"<BackupPolicy spec>}}}}", reason="InvalidRestoreRequest")
    try:
        spec = RestoreRequestSpec.model_validate(document["spec"])
    except ValidationError as exc:
        raise UsageError(f"the RestoreRequest spec in {origin} is invalid: {_problems(exc)}",
                         reason="InvalidRestoreRequest") from exc
    namespace = str(document.get("namespace") or "default")
    policy_doc = {"namespace": namespace, **document["policy"]}
    policy = policy_from_document(policy_doc, f"{origin} (policy)")
    return RequestConfig(name=str(document.get("name") or "local"), namespace=namespace, spec=spec, policy=policy)


def load_request(path: str | Path | None, environ: Mapping[str, str]) -> RequestConfig:
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the restore request file {path}: {exc.strerror}") from exc
        origin = str(path)
    else:
        text = environ.get(jobenv.ENV_RESTORE, "")
        origin = jobenv.ENV_RESTORE
        if not text:
            raise UsageError(f"no restore request: set {jobenv.ENV_RESTORE} to its JSON or pass --request FILE",
                             reason="InvalidRestoreRequest")
    try:
        document = json.loads(text)
    except ValueError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{origin} is neither JSON nor YAML: {exc}", reason="InvalidRestoreRequest") from exc
    return request_from_document(document, origin)


def target_params(request: RequestConfig, environ: Mapping[str, str]) -> ConnParams:
    """Target server from spec.target (defaults: the policy's database), login from PGUSER/PGPASSWORD."""
    database = request.policy.spec.database
    target = request.spec.target
    secret = target.credentials_secret or database.credentials_secret
    hint = f"keys {secret.username_key!r}/{secret.password_key!r} of Secret {secret.name!r}"
    user = environ.get(jobenv.ENV_DB_USER)
    if not user:
        raise UsageError(f"{jobenv.ENV_DB_USER} is not set: the restore Job takes it from {hint}; set it when "
                         f"running the runner by hand")
    return ConnParams(host=target.host or database.host, port=target.port or database.port, user=user,
                      password=environ.get(jobenv.ENV_DB_PASSWORD) or None, sslmode=database.ssl_mode,
                      sslrootcert=environ.get(jobenv.ENV_DB_SSLROOTCERT) or None, credentials_hint=hint)
