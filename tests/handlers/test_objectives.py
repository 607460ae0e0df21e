"""ObjectivesMet evaluated on a timer by the real operator against kmock, from the recovery points in status."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgbackup.handlers import objectives
from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec
from tests.handlers.test_background import HANDLED, policy_requests

pytestmark = pytest.mark.timeout(60)


def ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_status(cluster: Cluster, status: dict[str, Any]) -> None:
    cluster.custom.patch_namespaced_custom_object_status("pgbackup.dev", "v1alpha1", NAMESPACE, "backuppolicies",
                                                         "orders", {"status": status},
                                                         _content_type="application/merge-patch+json")


def verified_backup(id: str, hours_ago: float) -> dict[str, Any]:
    return {"id": id, "phase": "Completed", "completedAt": ago(hours_ago),
            "verification": {"phase": "Passed", "reason": "RestoreVerified", "restoreSeconds": 60,
                             "checkedAt": ago(hours_ago - 0.5)}}


@pytest.fixture()
def fast_objectives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGBACKUP_OBJECTIVES_INTERVAL_SECONDS", "0.2")


async def test_objectives_met_turns_false_when_the_newest_verified_point_is_older_than_rpo(
        cluster: Cluster, secrets: None, fast_objectives: None, operator: Operator) -> None:
    spec = policy_spec(verify={"enabled": True}, objectives={"rpo": "24h", "rto": "1h"})
    await asyncio.to_thread(cluster.create_policy, "orders", spec)
    # The newest backup is recent but failed verification; the newest verified one is 26 hours old.
    old_verified = verified_backup("20261122T000000Z", 26)
    await asyncio.to_thread(set_status, cluster, {
        "backups": [{"id": "20261123T020000Z", "phase": "Completed", "completedAt": ago(2),
                     "verification": {"phase": "Failed", "reason": "CheckFailed"}},
                    old_verified],
        "measured": {"rtoSeconds": 60}})
    async with operator.running():
        missed = await eventually(lambda: (c := cluster.condition("orders", "ObjectivesMet")) and
                                  c["status"] == "False" and c, what="ObjectivesMet=False")
        events = await eventually(lambda: cluster.events("ObjectivesMissed"), what="an ObjectivesMissed Event")
        measured = (await asyncio.to_thread(cluster.policy, "orders"))["status"]["measured"]

        # A newer verified backup arrives: met again at the next tick.
        await asyncio.to_thread(set_status, cluster, {"backups": [verified_backup("20261124T000000Z", 1)]})
        met = await eventually(lambda: (c := cluster.condition("orders", "ObjectivesMet")) and
                               c["status"] == "True" and c, what="ObjectivesMet=True")
    assert missed["reason"] == "RPOExceeded"
    assert "newest verified recovery point 26h old > rpo 24h" in missed["message"]
    assert "over by 2h" in missed["message"]
    assert measured["recoveryPoint"] == old_verified["completedAt"]  # the RPO is its age
    assert measured["rtoSeconds"] == 60
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert met["reason"] == "ObjectivesMet" and "1h old <= rpo 24h" in met["message"]


async def test_objectives_without_any_verified_backup_are_no_recovery_point(
        cluster: Cluster, secrets: None, fast_objectives: None, operator: Operator) -> None:
    await asyncio.to_thread(cluster.create_policy, "orders",
                            policy_spec(verify={"enabled": True}, objectives={"rpo": "24h"}))
    async with operator.running():
        condition = await eventually(lambda: cluster.condition("orders", "ObjectivesMet"), what="ObjectivesMet")
    assert (condition["status"], condition["reason"]) == ("False", "NoRecoveryPoint")
    assert "no verified backup" in condition["message"]


class FastClock:
    """Wall time from now on, running SPEED times faster (the objectives handler's clock only)."""

    SPEED = 600.0  # ten minutes a second: an hour in six seconds, thirty evaluations at the test's interval

    def __init__(self) -> None:
        self.start, self.real_start = datetime.now(UTC), time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.real_start) * self.SPEED)


async def test_an_idle_policy_is_not_written_while_an_hour_passes(
        cluster: Cluster, secrets: None, fast_objectives: None, operator: Operator, emulator: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The RPO grows every second, but what status records (the recovery point, the condition) does not change:
    once settled, the operator makes no request on the policy for an hour (idle API traffic at 1,000 policies)."""
    clock = FastClock()
    monkeypatch.setattr(objectives, "now", clock)
    backup = verified_backup("20261124T000000Z", 1)
    await asyncio.to_thread(cluster.create_policy, "orders",
                            policy_spec(verify={"enabled": True}, objectives={"rpo": "24h"}))
    await asyncio.to_thread(set_status, cluster, {"backups": [backup]})
    async with operator.running():
        await eventually(lambda: (c := cluster.condition("orders", "ObjectivesMet")) and c["status"] == "True",
                         what="ObjectivesMet=True")
        await eventually(lambda: HANDLED in (cluster.policy("orders")["metadata"].get("annotations") or {}),
                         what="kopf done with the policy")
        since, hour_later = len(list(emulator)), clock() + timedelta(hours=1)
        await eventually(lambda: clock() >= hour_later, timeout=30, what="an hour on the objectives clock")
        requests = policy_requests(emulator, since)
        policy = await asyncio.to_thread(cluster.policy, "orders")
    assert requests == []  # not even a GET: the loop works from the bodies kopf holds
    assert policy["status"]["measured"] == {"recoveryPoint": backup["completedAt"]}
    condition = next(c for c in policy["status"]["conditions"] if c["type"] == "ObjectivesMet")
    assert (condition["status"], condition["reason"]) == ("True", "ObjectivesMet")
