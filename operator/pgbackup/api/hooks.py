"""Hooks: a container the operator runs as a Job around a backup or a restore (e.g. the application's
migrations after a restore), and the workloads a restore stops while it overwrites a database."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from pgbackup.api.base import ApiModel, DnsName
from pgbackup.api.refs import SecretKeyRef

EnvName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")]


class HookEnvVar(ApiModel):
    """One environment variable of a hook: a plain value, or (for anything secret: passwords, tokens, URLs
    with credentials) a key of a Secret, which never appears in the Job's manifest."""

    model_config = {"json_schema_extra": {"x-kubernetes-validations": [
        {"rule": "has(self.value) != has(self.secretKeyRef)", "message": "set exactly one of value or secretKeyRef"}
    ]}}

    name: EnvName
    """Name of the variable."""
    value: str | None = Field(default=None, max_length=4096)
    """A plain, non-secret value. Put passwords and tokens in a Secret and use secretKeyRef instead."""
    secret_key_ref: SecretKeyRef | None = None
    """Read the value from this key of a Secret in the same namespace (the way to pass credentials)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> HookEnvVar:
        if (self.value is None) == (self.secret_key_ref is None):
            raise ValueError(f"env {self.name}: set exactly one of value or secretKeyRef")
        return self


class HookSpec(ApiModel):
    """A container run once as a Job (never retried), with the restore Jobs' locked-down security context."""

    image: str = Field(min_length=1, max_length=512, pattern=r"^\S+$")
    """Container image, e.g. ghcr.io/shop/app:1.4.2 (pin a tag or digest)."""
    command: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=64)
    """Entrypoint; empty = the image's own. Never put secrets here: arguments are visible in the manifest."""
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=256)
    """Arguments; the same rule about secrets applies."""
    env: list[HookEnvVar] = Field(default_factory=list, max_length=64,
                                  json_schema_extra={"x-kubernetes-list-type": "map",
                                                     "x-kubernetes-list-map-keys": ["name"]})
    """Environment variables: `value` for plain settings, `secretKeyRef` for credentials."""
    timeout_seconds: int = Field(default=600, ge=10, le=86400)
    """The hook Job's activeDeadlineSeconds: it fails when it runs longer (10 to 86400, default 600)."""


class RestoreHooks(ApiModel):
    """Containers run around a restore."""

    pre_restore: HookSpec | None = None
    """Runs after the workloads in spec.quiesce are stopped and before the restore Job; its failure fails the
    restore before the database is touched."""
    post_restore: HookSpec | None = None
    """Runs after a successful restore and before the workloads are scaled back up, e.g. migrations; its
    failure fails the restore with the tail of its log."""


class BackupHooks(ApiModel):
    """Containers run around each backup."""

    pre_backup: HookSpec | None = None
    """Runs as an init container of the backup pod, before the backup; its failure fails that backup."""
    post_backup: HookSpec | None = None
    """Runs as a separate Job, created by the operator once a backup Job has finished and been recorded
    (whatever its outcome: the hook reads PGBACKUP_BACKUP_PHASE)."""


class Quiesce(ApiModel):
    """Workloads (in the request's namespace) scaled to zero while an overwrite restore runs, and back to their
    previous replica counts afterwards, also when the restore fails. Needs the chart's restoreQuiesce.enabled."""

    deployments: list[DnsName] = Field(default_factory=list, max_length=32)
    """Names of Deployments."""
    stateful_sets: list[DnsName] = Field(default_factory=list, max_length=32)
    """Names of StatefulSets."""
