"""What a runner invocation works on: the policy (from the Job's env or a file), scratch space, and the errors
that end a run with a documented exit code."""

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


class RunnerError(Exception):
    """A failure the runner reports as-is: the message says what failed, where, and what to do next."""

    reason = "BackupFailed"
    exit_code = jobenv.EXIT_FAILED

    def __init__(self, message: str, *, reason: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(RunnerError):
    """Wrong arguments or an invalid policy: retrying will not help."""

    reason = "InvalidPolicy"
    exit_code = jobenv.EXIT_USAGE


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
    text = environ.get(jobenv.ENV_POLICY)
    if not text:
        raise UsageError(f"no policy: pass --policy FILE or set {jobenv.ENV_POLICY} to the policy JSON")
    return policy_from_document(_parse_document(text, jobenv.ENV_POLICY), jobenv.ENV_POLICY)


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
