"""ObjectivesMet on a timer: the RPO grows while nothing happens, so it is evaluated every
PGBACKUP_OBJECTIVES_INTERVAL_SECONDS (60 by default) for each policy, not only on events."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from pgbackup.api.base import GROUP
from pgbackup.builders.objectives import ObjectivesReport, became_missed, evaluate_objectives, objectives_patch
from pgbackup.handlers import config, kube, notify


_exiting: asyncio.Event | None = None


@kopf.on.startup()
async def arm_objectives(**_: Any) -> None:
    global _exiting
    _exiting = asyncio.Event()


@kopf.on.cleanup()
async def disarm_objectives(**_: Any) -> None:
    """kopf may start a policy's daemon once more while it shuts down, after it stopped the others; that one
    is never told to stop and would hold the exit up for 5 s. This flag lets it end at once."""
    if _exiting is not None:
        _exiting.set()


async def _pause(stopped: kopf.DaemonStopped, seconds: float) -> None:
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(cast(Awaitable[Any], stopped.wait(seconds)))]
    if _exiting is not None:
        waits.append(asyncio.ensure_future(_exiting.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the daemon is cancelled: leave no waiting task behind
        for waiting in waits:
            waiting.cancel()


def _exiting_now() -> bool:
    return _exiting is not None and _exiting.is_set()


# A daemon rather than @kopf.timer: a timer's interval is fixed when the module is imported, the daemon reads
# it from the operator's configuration when it starts.
@kopf.daemon(GROUP, kube.POLICIES, cancellation_timeout=5.0)
async def watch_objectives(name: str, namespace: str | None, stopped: kopf.DaemonStopped, logger: kopf.Logger,
                           **_: Any) -> None:
    assert namespace is not None
    while not stopped and not _exiting_now():
        try:
            await asyncio.to_thread(evaluate_policy_objectives, namespace, name, logger)
        except Exception as error:  # noqa: BLE001 - the next tick tries again
            logger.warning(f"ObjectivesMet of BackupPolicy {namespace}/{name} not evaluated: {error}; "
                           f"retrying in {config.current().objectives_interval_seconds:g}s")
        await _pause(stopped, config.current().objectives_interval_seconds)


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
