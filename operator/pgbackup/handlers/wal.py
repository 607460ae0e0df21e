"""Continuous WAL archiving (spec.wal.enabled): the policy's streamer Deployment and Service, and a walk of
the operator-wide loop (daemons.py) that reads each streamer's state over HTTP (api/wal.py) into status.wal,
status.recoverability and the WALArchiving condition, with Events and a notification on transitions.

The operator holds no database or storage credentials: the streamer pod has them and reports what it sees;
the operator stays the only writer of status.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from pgbackup.api import BackupPolicySpec
from pgbackup.api.wal import WAL_STATUS_PORT, WalStreamState
from pgbackup.builders.names import wal_name
from pgbackup.builders.wal_deployment import build_wal_deployment, build_wal_service
from pgbackup.builders.wal_state import (
    PROGRESS_WRITE_SECONDS,
    WalReport,
    clear_wal_patch,
    evaluate_wal,
    transition,
    wal_patch,
)
from pgbackup.handlers import config, daemons, kube, notify

FETCH_TIMEOUT_SECONDS = 5.0
MAX_STATE_BYTES = 1024 * 1024
USER_AGENT = "pgbackup-operator"
logger = logging.getLogger("pgbackup.wal")


# ------------------------------------------------------------------ Deployment and Service


def reconcile_wal(name: str, namespace: str, uid: str, spec: BackupPolicySpec, logger: kopf.Logger) -> None:
    """Called by reconcile_policy once the spec is valid and its Secrets exist: with wal.enabled, the streamer
    Deployment and its Service match the policy; without, neither exists (the garbage collector removes owned
    objects only when the owner goes) and status carries no WAL state."""
    deployment_name = wal_name(name)
    if not spec.wal.enabled:
        removed = [kind for kind, deleted in (
            ("Deployment", kube.delete_owned_deployment(namespace, deployment_name, name)),
            ("Service", kube.delete_owned_service(namespace, deployment_name, name))) if deleted]
        if removed:
            logger.info(f"WAL streamer {' and '.join(removed)} {namespace}/{deployment_name} removed "
                        f"(wal.enabled=false)")
        kube.update_policy_status(namespace, name, _clear_when_disabled)
        return
    settings = config.current().job_settings()
    if kube.apply_deployment(build_wal_deployment(name, namespace, uid, spec, settings)):
        logger.info(f"WAL streamer Deployment {namespace}/{deployment_name} reconciled")
    if kube.apply_service(build_wal_service(name, namespace, uid)):
        logger.info(f"WAL streamer Service {namespace}/{deployment_name} reconciled")


def _clear_when_disabled(policy: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    if _wal_enabled(policy.get("spec") or {}):
        return {}  # turned on again since: the WAL walk owns these fields
    return clear_wal_patch(status)


def _wal_enabled(spec: Any) -> bool:
    wal = spec.get("wal") if hasattr(spec, "get") else None
    return bool(wal and wal.get("enabled"))


# ------------------------------------------------------------------ reading the streamer's state


def status_url(policy_name: str, namespace: str) -> str:
    """Where the streamer of a policy serves its state: its Service, unless PGBACKUP_WAL_STATUS_URL_TEMPLATE
    says otherwise."""
    return config.current().wal_status_url_template.format(
        service=wal_name(policy_name), namespace=namespace, port=WAL_STATUS_PORT, policy=policy_name)


def fetch_state(url: str, timeout: float = FETCH_TIMEOUT_SECONDS) -> tuple[WalStreamState | None, str | None]:
    """The streamer's state, or None and why it could not be read."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http URL from config
            body = response.read(MAX_STATE_BYTES + 1)
    except urllib.error.HTTPError as error:
        return None, f"GET {url} answered HTTP {error.code}"
    except urllib.error.URLError as error:
        return None, f"GET {url} failed: {error.reason}"
    except (TimeoutError, OSError) as error:
        return None, f"GET {url} failed: {type(error).__name__}: {error}"
    if len(body) > MAX_STATE_BYTES:
        return None, f"GET {url} answered more than {MAX_STATE_BYTES} bytes: not a WAL streamer state"
    try:
        return WalStreamState.model_validate(json.loads(body)), None
    except (ValueError, ValidationError) as error:
        return None, f"GET {url} answered something that is not a WAL streamer state: {str(error)[:300]}"


# ------------------------------------------------------------------ the walk (daemons.py)


def check_wal(policy: Mapping[str, Any], last_write: float | None = None) -> bool:
    """One visit of a policy with spec.wal.enabled: read the streamer's state and compare it with the policy as
    kopf last saw it; only when something changed (progress alone at most every PROGRESS_WRITE_SECONDS after
    `last_write`), a read-modify-write of its status. On a WALArchiving transition an Event, and on the transition
    to False the WALArchivingFailed notification. True when status was written."""
    settings = config.current()
    metadata = policy.get("metadata") or {}
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    state, error = fetch_state(status_url(name, namespace))
    progress_due = last_write is None or time.monotonic() - last_write >= PROGRESS_WRITE_SECONDS
    outcome: list[tuple[WalReport, tuple[str, bool] | None]] = []

    def changes(fresh: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
        outcome.clear()
        spec = fresh.get("spec") or {}
        if not _wal_enabled(spec):
            return {}  # turned off meanwhile: reconcile_wal clears the WAL state
        try:
            report = evaluate_wal(name, namespace, spec, status, state, error, datetime.now(UTC),
                                  settings.wal_lag_threshold_seconds)
        except ValueError:
            return {}  # an invalid spec.wal is reported by the policy handler in Ready
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = wal_patch(spec, status, report, (fresh.get("metadata") or {}).get("generation"), now, progress_due)
        if patch:
            outcome.append((report, transition(status, report)))
        return patch

    if not changes(policy, policy.get("status") or {}):
        return False  # the common case: one HTTP poll, no API request
    written = kube.update_policy_status(namespace, name, changes)
    if written is None or not outcome:
        return False
    report, change = outcome[0]
    if change is not None:
        event, became_false = change
        post = kopf.info if report.status == "True" else kopf.warn
        post(cast(kopf.Body, written), reason=event, message=report.message)
        logger.info(f"BackupPolicy {namespace}/{name}: {event} ({report.reason}): {report.message}")
        if became_false:
            notify.notify(written, "WALArchivingFailed", reason=report.reason, message=report.message)
    return True


daemons.every(daemons.Walk(what="WAL archiving state", interval=lambda: config.current().wal_status_interval_seconds,
                           wants=lambda policy: _wal_enabled(policy.get("spec") or {}), visit=check_wal))
