"""What a runner invocation works on: the policy (from the Job's env or a file), scratch space, the volume root
and the size of the chunks it streams in."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pgbackup.api import jobenv
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.runner.common.errors import UsageError

CHUNK = 1 << 20
"""How many bytes the runner reads or writes at a time when it streams (objects, files, pipes)."""


@dataclass(frozen=True)
class PolicyConfig:
    """A BackupPolicy as the runner sees it."""

    name: str
    namespace: str
    spec: BackupPolicySpec


def _parse_document(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{origin} is neither JSON nor YAML: {exc}") from exc


def policy_from_document(document: Any, origin: str) -> PolicyConfig:
    """Accept the Job's env form {name, namespace, spec}, a BackupPolicy resource, or a bare spec."""
    if not isinstance(document, dict):
        raise UsageError(f"{origin} must hold a mapping (a BackupPolicy, its spec, or {{name, namespace, spec}})")
    metadata = document.get("metadata") or {}
    if "spec" in document:
        name = document.get("name") or metadata.get("name") or "local"
        namespace = document.get("namespace") or metadata.get("namespace") or "default"
        spec_doc = document["spec"]
    else:
        name, namespace, spec_doc = "local", "default", document
    try:
        spec = BackupPolicySpec.model_validate(spec_doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise UsageError(f"the policy in {origin} is invalid: {problems}") from exc
    return PolicyConfig(name=str(name), namespace=str(namespace), spec=spec.for_policy(str(namespace), str(name)))


def load_policy(path: str | Path | None, environ: Mapping[str, str] | None = None) -> PolicyConfig:
    """The policy from `path` (YAML or JSON) or, without a path, from the env var the operator sets."""
    environ = os.environ if environ is None else environ
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the policy file {path}: {exc.strerror}") from exc
        return policy_from_document(_parse_document(text, str(path)), str(path))
    from_env = environ.get(jobenv.ENV_POLICY)
    if not from_env:
        raise UsageError(f"no policy: pass --policy FILE or set {jobenv.ENV_POLICY} to the policy JSON")
    return policy_from_document(_parse_document(from_env, jobenv.ENV_POLICY), jobenv.ENV_POLICY)


def policy_json(policy: PolicyConfig) -> str:
    """The policy as the operator hands it to a Job ({name, namespace, spec}: what load_policy reads back)."""
    return json.dumps({"name": policy.name, "namespace": policy.namespace, "spec": policy.spec.to_wire()})


def scratch_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where temporary files go: PGBACKUP_SCRATCH, the Job's /scratch volume, or the system temp dir."""
    environ = os.environ if environ is None else environ
    configured = environ.get(jobenv.ENV_SCRATCH)
    if configured:
        return Path(configured)
    if os.access(jobenv.SCRATCH_DIR, os.W_OK):
        return Path(jobenv.SCRATCH_DIR)
    return Path(tempfile.gettempdir())


def volume_root(environ: Mapping[str, str] | None = None) -> str | None:
    """The volume backend's mount root, when overridden (tests, local runs)."""
    environ = os.environ if environ is None else environ
    return environ.get(jobenv.ENV_VOLUME_ROOT) or None


LOST_AND_FOUND = "lost+found"
"""A filesystem's own directory at a volume's root: never backed up, and not counted when a restore asks whether
a target directory is empty."""


def app_volumes_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where the application volumes are mounted in a backup or restore Job ($PGBACKUP_APP_VOLUMES_ROOT)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(jobenv.ENV_APP_VOLUMES_ROOT) or jobenv.APP_VOLUMES_ROOT)
