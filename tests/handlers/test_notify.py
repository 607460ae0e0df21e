"""Webhook notifications sent by the real operator (against kmock) to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgbackup.api import JobSummary
from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec
from tests.handlers.test_jobs import finish_job
from tests.handlers.test_verification import (
    BACKUP_ID,
    VERIFY_JOB,
    finish_verify_job,
    record_backup,
    verify_jobs,
    verifying_spec,
)

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cr3t-token-in-the-url"


@dataclass
class Receiver:
    """A webhook receiver: records each POSTed JSON body and answers with `status`."""

    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.received.append({"path": self.path, "contentType": self.headers.get("Content-Type"),
                                   "json": json.loads(body)})
            self.send_response(state.status)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/{TOKEN}"
    yield state
    server.shutdown()
    server.server_close()


def webhook_secret(cluster: Cluster, url: str) -> None:
    cluster.core.create_namespaced_secret(NAMESPACE, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "webhook", "namespace": NAMESPACE},
        "data": {"url": base64.b64encode(url.encode()).decode()}})


def notifying_spec(*events: str) -> dict[str, Any]:
    return policy_spec(notifications={"webhook": {"urlSecret": {"name": "webhook", "key": "url"},
                                                  "events": list(events)}})


async def failed_backup(cluster: Cluster, spec: dict[str, Any]) -> None:
    await asyncio.to_thread(cluster.create_policy, "orders", spec)
    cronjob = await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
    summary = JobSummary(kind="backup", phase="Failed", reason="DatabaseUnreachable",
                         error="could not connect to db.shop.svc:5432: connection refused")
    await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000000", "Failed", "BackoffLimitExceeded",
                            {"terminated": {"exitCode": 2, "message": summary.to_termination_message()}})


async def test_backup_failed_is_posted_as_json(cluster: Cluster, secrets: None, receiver: Receiver,
                                               operator: Operator) -> None:
    await asyncio.to_thread(webhook_secret, cluster, receiver.url)
    async with operator.running():
        await failed_backup(cluster, notifying_spec("BackupFailed", "VerificationFailed"))
        await eventually(lambda: receiver.received, what="the webhook POST")
        await eventually(lambda: cluster.condition("orders", "LastBackupSucceeded"), what="the backup recorded")
    [request] = receiver.received
    payload = request["json"]
    assert request["contentType"] == "application/json" and request["path"] == f"/hooks/{TOKEN}"
    assert payload["event"] == "BackupFailed"
    assert (payload["namespace"], payload["policy"]) == (NAMESPACE, "orders")
    assert payload["reason"] == "DatabaseUnreachable"
    assert "connection refused" in payload["message"]
    assert payload["time"].endswith("Z") and "backupId" in payload


async def test_only_subscribed_events_are_sent(cluster: Cluster, secrets: None, receiver: Receiver,
                                               operator: Operator) -> None:
    await asyncio.to_thread(webhook_secret, cluster, receiver.url)
    succeeded = JobSummary(kind="backup", phase="Completed", backup_id="20261123T030000Z", size_bytes=1)
    async with operator.running():
        await failed_backup(cluster, notifying_spec("BackupSucceeded"))
        await eventually(lambda: cluster.events("BackupFailed"), what="the BackupFailed Event")
        cronjob = await asyncio.to_thread(cluster.cronjob, "orders-backup")
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000001", "Complete", None,
                                {"terminated": {"exitCode": 0, "message": succeeded.to_termination_message()}})
        await eventually(lambda: receiver.received, what="the BackupSucceeded POST")
    assert [r["json"]["event"] for r in receiver.received] == ["BackupSucceeded"]  # BackupFailed not subscribed
    assert receiver.received[0]["json"]["backupId"] == "20261123T030000Z"


async def test_failing_webhook_gives_a_warning_event_and_the_backup_is_still_recorded(
        cluster: Cluster, secrets: None, receiver: Receiver, operator: Operator) -> None:
    receiver.status = 500
    await asyncio.to_thread(webhook_secret, cluster, receiver.url)
    async with operator.running():
        await failed_backup(cluster, notifying_spec("BackupFailed"))
        condition = await eventually(lambda: cluster.condition("orders", "LastBackupSucceeded"),
                                     what="the backup recorded")
        [event] = await eventually(lambda: cluster.events("NotificationFailed"), what="NotificationFailed",
                                   timeout=20)
        job = await asyncio.to_thread(cluster.batch.read_namespaced_job, "orders-backup-29000000", NAMESPACE)
    assert condition["reason"] == "DatabaseUnreachable"
    assert job.metadata.annotations["pgbackup.dev/recorded"] == "Failed"
    assert len(receiver.received) == 3  # retried
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == "orders"
    assert "HTTP 500" in event["message"] and "BackupFailed" in event["message"]
    assert "shop/webhook" in event["message"]  # says where the URL comes from ...
    assert TOKEN not in event["message"] and "127.0.0.1" not in event["message"]  # ... never the URL


async def test_verification_failed_is_posted(cluster: Cluster, secrets: None, receiver: Receiver,
                                             operator: Operator) -> None:
    await asyncio.to_thread(webhook_secret, cluster, receiver.url)
    await asyncio.to_thread(cluster.create_secret, "age", {"identity": "AGE-SECRET-KEY-1FAKEFORTESTS"})
    spec = {**verifying_spec(), "notifications": notifying_spec("VerificationFailed")["notifications"]}
    summary = JobSummary(kind="verify", phase="Failed", backup_id=BACKUP_ID, reason="CheckFailed",
                         error="check orders-not-empty returned false")
    async with operator.running():
        await record_backup(cluster, spec=spec)
        await eventually(lambda: verify_jobs(cluster), what="the verification Job")
        await asyncio.to_thread(finish_verify_job, cluster, VERIFY_JOB, summary, "Failed")
        await eventually(lambda: receiver.received, what="the VerificationFailed POST")
    payload = receiver.received[0]["json"]
    assert (payload["event"], payload["reason"], payload["backupId"]) == ("VerificationFailed", "CheckFailed", BACKUP_ID)
    assert "orders-not-empty" in payload["message"]
