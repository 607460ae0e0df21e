"""ObjectivesMet on a timer: the RPO grows while nothing happens, so it is evaluated for every policy every
PGBACKUP_OBJECTIVES_INTERVAL_SECONDS (60 by default) by the operator-wide loop (daemons.py), not only on events.
Status is written only when the condition or the recovery point changes (status.measured.recoveryPoint is a time,
not an age), so time passing costs no API request."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from pgbackup.builders.objectives import ObjectivesReport, became_missed, evaluate_objectives, objectives_patch
from pgbackup.handlers import config, daemons, kube, notify

logger = logging.getLogger("pgbackup.objectives")


def now() -> datetime:
    """The wall clock the objectives are measured with (a test runs it faster)."""
    return datetime.now(UTC)


def _changes(policy: Mapping[str, Any], status: Mapping[str, Any]) -> tuple[dict[str, Any], ObjectivesReport | None]:
    """The status fields to write (empty: none) and, on the transition to False, the report to announce."""
    at = now()
    try:
        report = evaluate_objectives(policy.get("spec") or {}, status, at)
    except ValueError:
        return {}, None  # an invalid spec.objectives is reported by the policy handler in Ready
    patch = objectives_patch(status, report, (policy.get("metadata") or {}).get("generation"),
                             at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return patch, report if patch.get("conditions") and became_missed(status, report) else None


def evaluate_policy_objectives(policy: Mapping[str, Any], _last_write: float | None = None) -> bool:
    """One evaluation of the policy as kopf last saw it; only when that shows a change, a read-modify-write of its
    status (the Job handlers write status.conditions too). On the transition to False, an Event and the
    ObjectivesMissed notification. True when status was written."""
    if not _changes(policy, policy.get("status") or {})[0]:
        return False  # the common case: no request at all
    metadata = policy.get("metadata") or {}
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    missed: list[ObjectivesReport] = []

    def changes(fresh: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        patch, report = _changes(fresh, status)
        missed[:] = [report] if report is not None else []
        return patch

    written = kube.update_policy_status(namespace, name, changes)
    if written is None or not missed:
        return written is not None
    report = missed[0]
    kopf.warn(cast(kopf.Body, written), reason="ObjectivesMissed", message=report.message)
    logger.warning(f"BackupPolicy {namespace}/{name}: ObjectivesMissed ({report.reason}): {report.message}")
    notify.notify(written, "ObjectivesMissed", reason=report.reason, message=report.message)
    return True


daemons.every(daemons.Walk(what="ObjectivesMet", interval=lambda: config.current().objectives_interval_seconds,
                           wants=lambda _policy: True, visit=evaluate_policy_objectives))
