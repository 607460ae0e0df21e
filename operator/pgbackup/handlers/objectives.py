"""ObjectivesMet on a timer: the RPO grows while nothing happens, so it is evaluated every
PGBACKUP_OBJECTIVES_INTERVAL_SECONDS (60 by default) for each policy, not only on events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from pgbackup.api.base import GROUP
from pgbackup.builders.objectives import ObjectivesReport, became_missed, evaluate_objectives, objectives_patch
from pgbackup.handlers import config, daemons, kube, notify


# A daemon rather than @kopf.timer: a timer's interval is fixed when the module is imported, the daemon reads
# it from the operator's configuration when it starts.
@kopf.daemon(GROUP, kube.POLICIES, cancellation_timeout=5.0)
async def watch_objectives(name: str, namespace: str | None, stopped: kopf.DaemonStopped, logger: kopf.Logger,
                           **_: Any) -> None:
    assert namespace is not None
    while not stopped and not daemons.exiting_now():
        try:
            await asyncio.to_thread(evaluate_policy_objectives, namespace, name, logger)
        except Exception as error:  # noqa: BLE001 - the next tick tries again
            logger.warning(f"ObjectivesMet of BackupPolicy {namespace}/{name} not evaluated: {error}; "
                           f"retrying in {config.current().objectives_interval_seconds:g}s")
        await daemons.pause(stopped, config.current().objectives_interval_seconds)


def evaluate_policy_objectives(namespace: str, name: str, logger: kopf.Logger) -> None:
    """One evaluation: write status when something changed; on the transition to False, an Event and the
    ObjectivesMissed notification."""
    missed: list[ObjectivesReport] = []

    def changes(policy: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        missed.clear()
        try:
            report = evaluate_objectives(policy.get("spec") or {}, status, datetime.now(UTC))
        except ValueError:
            return {}  # an invalid spec.objectives is reported by the policy handler in Ready
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = objectives_patch(status, report, policy.get("metadata", {}).get("generation"), now)
        if patch.get("conditions") and became_missed(status, report):
            missed.append(report)
        return patch

    policy = kube.update_policy_status(namespace, name, changes)
    if policy is None or not missed:
        return
    report = missed[0]
    kopf.warn(cast(kopf.Body, policy), reason="ObjectivesMissed", message=report.message)
    logger.warning(f"ObjectivesMissed ({report.reason}): {report.message}")
    notify.notify(policy, "ObjectivesMissed", reason=report.reason, message=report.message)
