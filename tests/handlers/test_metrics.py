"""/metrics of the real operator against kmock, scraped over HTTP as Prometheus would: values follow the
policy through backups, failures and verification, come back after a restart, and SizeAnomaly shows up as a
condition and an Event."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgbackup.handlers.metrics as operator_metrics
from pgbackup.handlers import daemons, remembered
from pgbackup.api import JobSummary
from pgbackup.builders.metrics import POLICY_GAUGES, RESTORE_REQUESTS
from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec
from tests.handlers.test_jobs import finish_job
from tests.handlers.test_restore import create_request, restore_spec, status_of
from tests.handlers.test_verification import VERIFY_JOB, finish_verify_job, verify_jobs, verifying_spec

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
ORDERS = {"namespace": NAMESPACE, "policy": "orders"}


@pytest.fixture()
def metrics_port(monkeypatch: pytest.MonkeyPatch) -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    monkeypatch.setenv("METRICS_PORT", str(port))
    monkeypatch.setenv("METRICS_ADDRESS", "127.0.0.1")
    return port


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def gauges(samples: Samples) -> Samples:
    """The status-derived gauges; measured RPO grows with the clock, so it is left out of comparisons."""
    return {key: v for key, v in samples.items()
            if (key[0] in POLICY_GAUGES or key[0] == RESTORE_REQUESTS) and key[0] != "pgbackup_rpo_seconds"}


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def scraped(port: int, check: Any, what: str) -> Samples:
    """Scrape until `check(samples)` holds."""
    def attempt() -> Samples | None:
        samples = scrape(port)
        return samples if check(samples) else None
    result: Samples = await eventually(attempt, what=what)
    return result


async def test_backup_failure_and_verification_metrics_come_back_after_a_restart(
        cluster: Cluster, secrets: None, operator: Operator, metrics_port: int) -> None:
    age = {"identity": "AGE-SECRET-KEY-1FAKEFORTESTS"}
    await asyncio.to_thread(cluster.create_secret, "age", age)
    backup = JobSummary(kind="backup", phase="Completed", backup_id="20261123T020000Z", method="logical",
                        completed_at="2026-11-23T02:05:00Z", size_bytes=5 * MIB, duration_seconds=42.0)
    failure = JobSummary(kind="backup", phase="Failed", completed_at="2026-11-23T04:00:00Z",
                         error="pg_dump: connection refused by db.shop.svc:5432; check spec.database.host")
    verification = JobSummary(kind="verify", phase="Completed", backup_id="20261123T020000Z",
                              reason="RestoreVerified", restore_seconds=12.5, completed_at="2026-11-23T03:10:00Z")
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", verifying_spec())
        cronjob = await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000000", "Complete", None,
                                {"terminated": {"exitCode": 0, "message": backup.to_termination_message()}})
        samples = await scraped(metrics_port, lambda s: value(s, "pgbackup_last_backup_size_bytes", **ORDERS),
                                "the backup in /metrics")
        assert value(samples, "pgbackup_last_backup_success_timestamp_seconds", **ORDERS) == ts("2026-11-23T02:05:00Z")
        assert value(samples, "pgbackup_last_backup_size_bytes", **ORDERS) == 5 * MIB
        assert value(samples, "pgbackup_last_backup_duration_seconds", **ORDERS) == 42.0
        assert value(samples, "pgbackup_backups", **ORDERS) == 1
        assert value(samples, "pgbackup_backup_schedule_interval_seconds", **ORDERS) == 86400
        assert value(samples, "pgbackup_last_backup_failure_timestamp_seconds", **ORDERS) is None
        assert value(samples, "pgbackup_last_verification_success", **ORDERS) is None

        await eventually(lambda: verify_jobs(cluster), what="the verification Job")
        await asyncio.to_thread(finish_verify_job, cluster, VERIFY_JOB, verification)
        samples = await scraped(metrics_port, lambda s: value(s, "pgbackup_last_verification_success", **ORDERS),
                                "the verification in /metrics")
        assert value(samples, "pgbackup_last_verification_success", **ORDERS) == 1
        assert value(samples, "pgbackup_last_verification_restore_seconds", **ORDERS) == 12.5
        assert value(samples, "pgbackup_last_verification_timestamp_seconds", **ORDERS) == ts("2026-11-23T03:10:00Z")

        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000060", "Failed", "BackoffLimitExceeded",
                                {"terminated": {"exitCode": 1, "message": failure.to_termination_message()}})
        before = await scraped(metrics_port,
                               lambda s: value(s, "pgbackup_last_backup_failure_timestamp_seconds", **ORDERS),
                               "the failure in /metrics")
        assert value(before, "pgbackup_last_backup_failure_timestamp_seconds", **ORDERS) == ts("2026-11-23T04:00:00Z")
        assert value(before, "pgbackup_last_backup_success_timestamp_seconds", **ORDERS) == ts("2026-11-23T02:05:00Z")

    with pytest.raises(urllib.error.URLError):  # the endpoint lives and dies with the operator
        await asyncio.to_thread(scrape, metrics_port)
    operator_metrics.policies.clear()  # as in a new operator process: nothing remembered
    async with operator.running():
        after = await scraped(metrics_port, lambda s: gauges(s) == gauges(before), "the same gauges after a restart")
    assert value(after, "pgbackup_last_backup_size_bytes", **ORDERS) == 5 * MIB


async def test_restore_requests_by_phase_and_reconcile_errors(cluster: Cluster, secrets: None, operator: Operator,
                                                              metrics_port: int) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
        await asyncio.to_thread(create_request, cluster, "orders-restore", restore_spec())
        # No such policy: the request waits in Pending, its handler retrying (a failed attempt each time).
        await asyncio.to_thread(create_request, cluster, "lost-restore", restore_spec(policyRef={"name": "lost"}))
        await eventually(lambda: status_of(cluster, "orders-restore").get("phase") == "Planning", what="Planning")
        samples = await scraped(
            metrics_port,
            lambda s: (value(s, RESTORE_REQUESTS, namespace=NAMESPACE, phase="Planning") == 1
                       and value(s, RESTORE_REQUESTS, namespace=NAMESPACE, phase="Pending") == 1
                       and value(s, "pgbackup_reconcile_errors_total", kind="RestoreRequest")),
            "restore requests per phase")
        assert value(samples, "pgbackup_reconcile_errors_total", kind="RestoreRequest") >= 1  # type: ignore[operator]
        assert value(samples, "pgbackup_reconcile_errors_total", kind="Job") == 0  # exported before any failure

        await asyncio.to_thread(cluster.custom.delete_namespaced_custom_object, "pgbackup.dev", "v1alpha1", NAMESPACE,
                                "restorerequests", "lost-restore")
        samples = await scraped(
            metrics_port, lambda s: value(s, RESTORE_REQUESTS, namespace=NAMESPACE, phase="Pending") is None,
            "the deleted request gone from /metrics")
    assert value(samples, RESTORE_REQUESTS, namespace=NAMESPACE, phase="Planning") == 1


def _earlier_backups(sizes: list[int]) -> list[dict[str, Any]]:
    return [{"id": f"202611{20 - i:02d}T020000Z", "phase": "Completed", "sizeBytes": size,
             "completedAt": f"2026-11-{20 - i:02d}T02:05:00Z"} for i, size in enumerate(sizes)]


async def test_backup_three_times_the_median_sets_size_anomaly_and_warns(
        cluster: Cluster, secrets: None, operator: Operator, metrics_port: int) -> None:
    big = JobSummary(kind="backup", phase="Completed", backup_id="20261123T020000Z", method="logical",
                     completed_at="2026-11-23T02:05:00Z", size_bytes=3 * 100 * MIB, duration_seconds=30.0)
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        cronjob = await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
        await eventually(lambda: (cluster.condition("orders", "Ready") or {}).get("status") == "True", what="Ready")
        await asyncio.to_thread(cluster.custom.patch_namespaced_custom_object_status, "pgbackup.dev", "v1alpha1",
                                NAMESPACE, "backuppolicies", "orders",
                                {"status": {"backups": _earlier_backups([100 * MIB, 90 * MIB, 110 * MIB, 100 * MIB])}})
        await scraped(metrics_port, lambda s: value(s, "pgbackup_backups", **ORDERS) == 4,
                      "the earlier backups in /metrics")
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-29000000", "Complete", None,
                                {"terminated": {"exitCode": 0, "message": big.to_termination_message()}})
        anomaly = await eventually(lambda: cluster.condition("orders", "SizeAnomaly"), what="SizeAnomaly")
        events = await eventually(lambda: cluster.events("SizeAnomaly"), what="a SizeAnomaly Event")
        samples = await scraped(metrics_port, lambda s: value(s, "pgbackup_backups", **ORDERS) == 5,
                                "the new backup in /metrics")
        ready = await asyncio.to_thread(cluster.condition, "orders", "Ready")
    assert (anomaly["status"], anomaly["reason"]) == ("True", "SizeJump")
    assert anomaly["message"].startswith("newest backup 300 MiB is 3.0x the median 100 MiB of the last 4")
    assert len(events) == 1 and events[0]["type"] == "Warning"
    assert events[0]["message"] == anomaly["message"] and events[0]["involvedObject"]["name"] == "orders"
    assert ready is not None and ready["status"] == "True"  # an odd size is worth a look, not an outage
    assert value(samples, "pgbackup_backup_size_median_bytes", **ORDERS) == 100 * MIB
    assert value(samples, "pgbackup_last_backup_size_bytes", **ORDERS) == 300 * MIB


async def test_a_taken_metrics_port_is_reported_and_backups_go_on(
        cluster: Cluster, secrets: None, operator: Operator, metrics_port: int,
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", metrics_port))
        squatter.listen()
        async with operator.running():
            await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
            await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob despite the taken port")
    [error] = [r for r in caplog.records if r.getMessage().startswith("metrics endpoint not started")]
    assert f"127.0.0.1:{metrics_port}" in error.getMessage() and "METRICS_PORT" in error.getMessage()


async def test_the_metrics_remember_of_each_object_only_what_the_gauges_read() -> None:
    """kopf's annotations (its last-handled-configuration repeats the spec), labels and managedFields are not kept
    for every policy and RestoreRequest: at 1,000 policies they were a second copy of each body in the operator."""
    metadata = {"name": "orders", "namespace": NAMESPACE, "uid": "u1", "generation": 2, "resourceVersion": "7",
                "labels": {"team": "a"}, "annotations": {"kopf.pgbackup.dev/last-handled-configuration": "{}"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}], "creationTimestamp": "x"}
    body = {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy", "metadata": metadata,
            "spec": policy_spec(), "status": {"lastBackup": {"phase": "Completed"}}}
    operator_metrics.policies.clear()
    operator_metrics.restore_requests.clear()
    try:
        await operator_metrics.index_policy(type="ADDED", body=body)
        await operator_metrics.index_restore_request(type="ADDED", body={**body, "kind": "RestoreRequest"})
        for index in (operator_metrics.policies, operator_metrics.restore_requests):
            [kept] = index.bodies()
            assert kept["metadata"] == {"name": "orders", "namespace": NAMESPACE, "uid": "u1", "generation": 2,
                                        "resourceVersion": "7"}
            assert (kept["spec"], kept["status"]) == (body["spec"], body["status"])
    finally:
        operator_metrics.policies.clear()
        operator_metrics.restore_requests.clear()


async def test_the_metrics_and_the_background_walks_share_one_copy_of_each_policy_version() -> None:
    """At 1,000 policies a copy per reader was several MiB: the walks' kopf index and the metrics hold one object,
    made again only when the policy changes."""
    metadata = {"name": "orders", "namespace": NAMESPACE, "uid": "u1", "generation": 1, "resourceVersion": "7"}
    body = {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy", "metadata": metadata,
            "spec": policy_spec(), "status": {}}
    remembered.policies.clear()
    try:
        await operator_metrics.index_policy(type="ADDED", body=body)
        indexed = await daemons.policy_bodies(name="orders", namespace=NAMESPACE, body=kopf.Body(body),
                                              meta=kopf.Meta(kopf.Body(body)))
        [scraped] = operator_metrics.policies.bodies()
        assert indexed[(NAMESPACE, "orders")] is scraped
        newer = {**body, "metadata": {**metadata, "resourceVersion": "8"}, "status": {"observedGeneration": 1}}
        await operator_metrics.index_policy(type="MODIFIED", body=newer)
        [scraped] = operator_metrics.policies.bodies()
        assert scraped is not indexed[(NAMESPACE, "orders")] and scraped["status"] == {"observedGeneration": 1}
        await operator_metrics.index_policy(type="DELETED", body=newer)
        assert operator_metrics.policies.bodies() == []
    finally:
        remembered.policies.clear()
