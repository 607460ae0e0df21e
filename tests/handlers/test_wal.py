"""WAL archiving with the real operator against kmock: the streamer Deployment and Service follow
spec.wal.enabled, and the state a real local HTTP server serves (as the streamer pod does on :8081/status)
becomes status.wal, status.recoverability, the WALArchiving condition and Events."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec
from tests.handlers.rbac_check import rbac_key
from tests.handlers.test_notify import Receiver, receiver, webhook_secret  # noqa: F401  (receiver: a fixture)

pytestmark = pytest.mark.timeout(60)

GAP = "000000010000000A000000F5-000000010000000A000000F7"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def healthy_state(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    state: dict[str, Any] = {
        "streaming": True, "slotName": "pgbackup_orders", "slotExists": True, "slotRetainedBytes": 1048576,
        "lastArchivedSegment": "000000010000000A000000F3", "lastArchivedAt": iso(now - timedelta(seconds=30)),
        "lastPartialAt": iso(now - timedelta(seconds=5)), "serverLsn": "A/F4000100", "archivedLsn": "A/F4000000",
        "lagBytes": 256, "lagSeconds": 4, "gaps": [], "spoolBytes": 33554432,
        "firstRecoverablePoint": iso(now - timedelta(days=1)), "lastRecoverablePoint": iso(now - timedelta(seconds=5)),
        "timeline": 1, "error": None, "updatedAt": iso(now),
    }
    state.update(overrides)
    return state


@dataclass
class Streamer:
    """Stands in for the streamer pod's status endpoint: serves `state` as JSON and counts the requests."""

    state: dict[str, Any] = field(default_factory=healthy_state)
    requests: int = 0
    server: http.server.ThreadingHTTPServer | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture()
def streamer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Streamer]:
    served = Streamer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            served.requests += 1
            body = json.dumps(served.state).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    served.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=served.server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PGBACKUP_WAL_STATUS_URL_TEMPLATE", f"http://127.0.0.1:{served.server.server_address[1]}/status")
    monkeypatch.setenv("PGBACKUP_WAL_STATUS_INTERVAL_SECONDS", "0.1")
    yield served
    served.stop()


def wal_spec(**wal: Any) -> dict[str, Any]:
    return policy_spec(wal={"enabled": True, **wal})


def deployment(cluster: Cluster, name: str = "orders-wal") -> dict[str, Any] | None:
    try:
        apps = kubernetes.client.AppsV1Api(cluster.core.api_client)
        return apps.api_client.sanitize_for_serialization(apps.read_namespaced_deployment(name, NAMESPACE))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def handed_policy(made: dict[str, Any] | None) -> dict[str, Any]:
    assert made is not None
    env = {e["name"]: e.get("value") for e in made["spec"]["template"]["spec"]["containers"][0]["env"]}
    return json.loads(env["PGBACKUP_POLICY"])


def service(cluster: Cluster, name: str = "orders-wal") -> dict[str, Any] | None:
    try:
        return cluster.core.api_client.sanitize_for_serialization(cluster.core.read_namespaced_service(name, NAMESPACE))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def wal_condition(cluster: Cluster, status: str, reason: str) -> dict[str, Any] | None:
    condition = cluster.condition("orders", "WALArchiving")
    return condition if condition and (condition["status"], condition["reason"]) == (status, reason) else None


def wal_status_writes(emulator: Any) -> int:
    return sum(1 for request in list(emulator)
               if rbac_key(request) == ("patch", "pgbackup.dev", "backuppolicies/status")
               and isinstance(request.data, dict)
               and {"wal", "recoverability", "conditions"} & set((request.data.get("status") or {})))


async def test_wal_enabled_runs_a_streamer_deployment_and_service_and_disabling_removes_them(
        cluster: Cluster, secrets: None, streamer: Streamer, operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", wal_spec())
        made = await eventually(lambda: deployment(cluster), what="the WAL streamer Deployment")
        front = await eventually(lambda: service(cluster), what="the WAL streamer Service")
        await eventually(lambda: wal_condition(cluster, "True", "Streaming"), what="WALArchiving=True")

        # A spec change the streamer must see reaches its pod template.
        await asyncio.to_thread(cluster.patch_policy, "orders", {"spec": {"wal": {"partialUploadInterval": "10s"}}})
        await eventually(lambda: handed_policy(deployment(cluster))["spec"]["wal"]["partialUploadInterval"] == "10s",
                         what="the Deployment updated")

        await asyncio.to_thread(cluster.patch_policy, "orders", {"spec": {"wal": {"enabled": False}}})
        await eventually(lambda: deployment(cluster) is None and service(cluster) is None,
                         what="the Deployment and Service removed")
        policy = await eventually(lambda: (p := cluster.policy("orders")) and not any(
            c["type"] == "WALArchiving" for c in p["status"].get("conditions", [])) and p,
            what="WALArchiving removed")
    assert made["spec"]["replicas"] == 1 and made["spec"]["strategy"]["type"] == "Recreate"
    assert made["metadata"]["ownerReferences"][0]["name"] == "orders"
    assert front["spec"]["ports"][0]["port"] == 8081
    assert front["spec"]["selector"] == made["spec"]["selector"]["matchLabels"]
    assert "wal" not in policy["status"] and "recoverability" not in policy["status"]
    assert any(c["type"] == "Ready" for c in policy["status"]["conditions"])


async def test_a_healthy_streamer_gives_streaming_wal_status_and_recoverability_and_no_writes_while_unchanged(
        cluster: Cluster, secrets: None, streamer: Streamer, operator: Operator, emulator: Any) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", wal_spec())
        condition = await eventually(lambda: wal_condition(cluster, "True", "Streaming"), what="WALArchiving=True")
        events = await eventually(lambda: cluster.events("WALArchivingStarted"), what="WALArchivingStarted")
        await eventually(lambda: cluster.condition("orders", "Ready"), what="Ready")
        status = (await asyncio.to_thread(cluster.policy, "orders"))["status"]

        writes = wal_status_writes(emulator)
        seen = streamer.requests
        await eventually(lambda: streamer.requests >= seen + 5, what="five more polls of an unchanged state")
        later_writes = wal_status_writes(emulator)
    assert "lag 4s" in condition["message"] and "000000010000000A000000F3" in condition["message"]
    assert status["wal"]["lastArchivedSegment"] == "000000010000000A000000F3"
    assert status["wal"]["lagSeconds"] == 4 and status["wal"]["lagBytes"] == 256 and status["wal"]["gaps"] == []
    assert status["wal"]["spoolBytes"] == 33554432  # the streamer's spool, for the PgBackupWALSpoolFilling alert
    assert status["recoverability"]["firstPoint"] == streamer.state["firstRecoverablePoint"]
    assert status["recoverability"]["lastPoint"] == streamer.state["lastRecoverablePoint"]
    assert len(events) == 1 and events[0]["type"] == "Normal"
    assert later_writes == writes  # polls of an unchanged state write nothing


async def test_a_gap_turns_wal_archiving_false_with_an_event_and_a_notification(
        cluster: Cluster, secrets: None, streamer: Streamer, operator: Operator, receiver: Receiver) -> None:
    await asyncio.to_thread(webhook_secret, cluster, receiver.url)
    spec = wal_spec()
    spec["notifications"] = {"webhook": {"urlSecret": {"name": "webhook", "key": "url"},
                                         "events": ["WALArchivingFailed"]}}
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", spec)
        await eventually(lambda: wal_condition(cluster, "True", "Streaming"), what="WALArchiving=True")
        before_gap = iso(datetime.now(UTC) - timedelta(hours=2))
        streamer.state = healthy_state(gaps=[GAP], lastRecoverablePoint=before_gap)
        condition = await eventually(lambda: wal_condition(cluster, "False", "Gap"), what="WALArchiving=False/Gap")
        events = await eventually(lambda: cluster.events("WALArchivingGap"), what="the WALArchivingGap Event")
        status = (await asyncio.to_thread(cluster.policy, "orders"))["status"]
        await eventually(lambda: receiver.received, what="the WALArchivingFailed notification")
    [sent] = receiver.received
    assert (sent["json"]["event"], sent["json"]["reason"], sent["json"]["policy"]) == ("WALArchivingFailed", "Gap",
                                                                                      "orders")
    assert GAP in sent["json"]["message"]
    assert GAP in condition["message"] and "window ends before it" in condition["message"]
    assert status["wal"]["gaps"] == [GAP]
    assert status["recoverability"]["lastPoint"] == before_gap
    assert events[0]["type"] == "Warning" and GAP in events[0]["message"]


async def test_a_streamer_that_stops_answering_is_failed_and_its_last_state_is_kept(
        cluster: Cluster, secrets: None, streamer: Streamer, operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", wal_spec())
        await eventually(lambda: wal_condition(cluster, "True", "Streaming"), what="WALArchiving=True")
        await asyncio.to_thread(streamer.stop)
        condition = await eventually(lambda: wal_condition(cluster, "False", "Failed"), what="WALArchiving=False")
        events = await eventually(lambda: cluster.events("WALArchivingFailed"), what="the WALArchivingFailed Event")
        status = (await asyncio.to_thread(cluster.policy, "orders"))["status"]
    assert "does not answer" in condition["message"] and "Deployment shop/orders-wal" in condition["message"]
    assert status["wal"]["lastArchivedSegment"] == "000000010000000A000000F3"  # last known, not erased
    assert len(events) == 1


async def test_a_policy_without_wal_gets_no_deployment_and_no_condition(
        cluster: Cluster, secrets: None, streamer: Streamer, operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        await eventually(lambda: cluster.condition("orders", "Ready"), what="Ready")
        assert await asyncio.to_thread(deployment, cluster) is None
        assert await asyncio.to_thread(service, cluster) is None
        assert await asyncio.to_thread(cluster.condition, "orders", "WALArchiving") is None
    assert streamer.requests == 0
