"""The age identity (private key) that reads encrypted backups: from --identity-file or the file
$PGBACKUP_AGE_IDENTITY_FILE names (mounted from encryption.identitySecret), parsed for pyrage."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyrage

from pgbackup.api import jobenv
from pgbackup.runner.storage.pipeline import IdentityError


def load_identity(path_or_env: str | Path | None = None) -> str:
    """The age identity (AGE-SECRET-KEY-1... lines) from a file: the given path, or the file named by
    $PGBACKUP_AGE_IDENTITY_FILE (mounted from the identity Secret in restore and verification Jobs)."""
    source = path_or_env
    if source is None or (isinstance(source, str) and source == jobenv.ENV_AGE_IDENTITY_FILE):
        source = os.environ.get(jobenv.ENV_AGE_IDENTITY_FILE)
        if not source:
            raise IdentityError(
                f"no age identity: ${jobenv.ENV_AGE_IDENTITY_FILE} is not set; set encryption.identitySecret "
                f"so restore and verification Jobs mount the private key"
            )
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise IdentityError(
            f"cannot read the age identity file {path}: {exc.strerror}; check the identity Secret is mounted"
        ) from exc
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines or not all(line.upper().startswith("AGE-SECRET-KEY-1") for line in lines):
        raise IdentityError(
            f"{path} holds no age identity (expected lines AGE-SECRET-KEY-1..., as written by `age-keygen`)"
        )
    return "\n".join(lines)


def identity_from(identity_file: str | None, environ: Mapping[str, str]) -> str | None:
    """The age identity a command was given: --identity-file, else the file $PGBACKUP_AGE_IDENTITY_FILE names,
    else none (an unencrypted backup needs none)."""
    path = identity_file or environ.get(jobenv.ENV_AGE_IDENTITY_FILE)
    return load_identity(path) if path else None


def parse_identities(identity: str) -> list[Any]:
    identities = []
    for line in identity.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except Exception as exc:
            raise IdentityError("the age identity is malformed (expected AGE-SECRET-KEY-1... from `age-keygen`)") from exc
    if not identities:
        raise IdentityError("the age identity is empty (expected AGE-SECRET-KEY-1... from `age-keygen`)")
    return identities
