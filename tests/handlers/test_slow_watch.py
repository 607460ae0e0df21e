"""A slow watch (an API server under load, or the operator's own event loop behind with 1,000 policies): the
events of a policy's status write and of kopf's annotation patch arrive seconds late. kopf must wait for its own
patch rather than take the older version, which lacks its annotations, for a new policy and reconcile it again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.handlers.conftest import Cluster, Emulator, Operator, eventually, policy_spec

pytestmark = pytest.mark.timeout(120)

DELAY_SECONDS = 6.0  # longer than kopf's default consistency_timeout (5 s)
HANDLED = "kopf.pgbackup.dev/last-handled-configuration"


class SlowWatchEmulator(Emulator):
    """Every MODIFIED event of a BackupPolicy reaches the watcher DELAY_SECONDS after the one before it."""

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        async for event in super()._serve_watch(request):
            if (isinstance(event, dict) and event.get("type") == "MODIFIED"
                    and (event.get("object") or {}).get("kind") == "BackupPolicy"):
                await asyncio.sleep(DELAY_SECONDS)
            yield event


@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": SlowWatchEmulator}


@pytest.mark.looptime(False)
async def test_a_new_policy_is_reconciled_once_when_the_watch_is_slow(
        cluster: Cluster, secrets: None, operator: Operator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        await eventually(lambda: HANDLED in (cluster.policy("orders")["metadata"].get("annotations") or {}),
                         what="the policy handled")
        # A real change, behind the late events in the same stream: once it is handled, so are they.
        await asyncio.to_thread(cluster.patch_policy, "orders", {"spec": {"schedule": "59 3 * * *"}})
        await eventually(lambda: cluster.cronjob("orders-backup")["spec"]["schedule"] == "59 3 * * *",
                         timeout=60, what="the CronJob updated")
    creations = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Creation is processed")]
    assert len(creations) == 1, creations
