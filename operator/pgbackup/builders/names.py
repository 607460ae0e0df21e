"""Deterministic, length-bounded names and labels for the objects the operator owns."""

from __future__ import annotations

import hashlib
import re

CRONJOB_NAME_MAX = 52  # the CronJob controller appends an 11-character suffix to Job names (63 max)
JOB_NAME_MAX = 63  # Job names end up in the pods' job-name label
LABEL_VALUE_MAX = 63
HASH_CHARS = 10

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_POLICY = "pgbackup.dev/policy"

APP_NAME = "pgbackup"
MANAGER = "pgbackup-operator"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def short_hash(*parts: str) -> str:
    """A stable 10-character hex digest of the parts (NUL-separated so ('a','b') != ('ab',))."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:HASH_CHARS]


def _fit(text: str, limit: int, *hash_parts: str) -> str:
    """`text` unchanged when it fits, else a prefix plus a hash of the full text; never ends in '-', '.' or '_'."""
    if len(text) <= limit:
        return text
    suffix = short_hash(text, *hash_parts)
    prefix = text[: limit - len(suffix) - 1].rstrip("-._")
    return f"{prefix}-{suffix}"


def cronjob_name(policy_name: str) -> str:
    """Name of the CronJob of a policy: '<policy>-backup', shortened with a hash suffix to 52 characters."""
    return _fit(f"{policy_name}-backup", CRONJOB_NAME_MAX)


def backup_now_job_name(cronjob: str, value: str) -> str:
    """Name of the Job for one pgbackup.dev/backup-now value: the same value always gives the same name."""
    prefix = cronjob[: JOB_NAME_MAX - HASH_CHARS - len("-now-")].rstrip("-._")
    return f"{prefix}-now-{short_hash(cronjob, value)}"


def verify_cronjob_name(policy_name: str) -> str:
    """Name of a policy's scheduled-verification CronJob: '<policy>-verify', at most 52 characters."""
    return _fit(f"{policy_name}-verify", CRONJOB_NAME_MAX)


def verify_job_name(policy_name: str, backup_id: str) -> str:
    """Name of the Job verifying one backup: the same policy and backup id always give the same name."""
    readable = re.sub(r"[^a-z0-9-]+", "-", backup_id.lower()).strip("-")
    text = f"{policy_name}-verify-{readable}"
    if readable != backup_id.lower() or len(text) > JOB_NAME_MAX:  # ids that had to be rewritten get a hash too
        prefix = text[: JOB_NAME_MAX - HASH_CHARS - 1].rstrip("-._")
        return f"{prefix}-{short_hash(policy_name, backup_id)}"
    return text


def wal_name(policy_name: str) -> str:
    """Name of a policy's WAL streamer Deployment and Service: '<policy>-wal', a valid Service name (DNS-1035
    label: at most 63 characters, starts with a letter, no dots), shortened with a hash suffix when needed."""
    readable = re.sub(r"[^a-z0-9-]+", "-", policy_name.lower()).strip("-")
    if not readable[:1].isalpha():
        readable = f"p-{readable}".rstrip("-")
    text = f"{readable}-wal"
    if readable != policy_name:  # a rewritten name gets a hash, so that 'a.b' and 'a-b' do not collide
        prefix = text[: JOB_NAME_MAX - HASH_CHARS - 1].rstrip("-._")
        return f"{prefix}-{short_hash(policy_name, 'wal')}"
    return _fit(text, JOB_NAME_MAX)


def label_value(text: str) -> str:
    """A valid label value (at most 63 characters) for `text`, shortened with a hash suffix when longer."""
    value = _fit(text, LABEL_VALUE_MAX)
    if not _LABEL_VALUE.match(value):  # DNS names always match; anything else gets a pure hash
        value = f"h-{short_hash(text)}"
    return value


def policy_labels(policy_name: str, component: str = "backup") -> dict[str, str]:
    """The labels of every object made for a policy; pgbackup.dev/policy selects a policy's Jobs."""
    return {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: label_value(policy_name),
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_POLICY: label_value(policy_name),
    }


OWNED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
"""Label selector of every object the operator makes: it lists and watches Jobs through it (server-side)."""
