"""Every request the operator makes is allowed by pgbackup.rbac.OPERATOR_RULES (from which the chart's
ClusterRole is generated), and the rules grant nothing the operator never uses against the emulator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pgbackup.api import JobSummary
from pgbackup.rbac import OPERATOR_RULES
from tests.handlers.conftest import Cluster, Operator, eventually, policy_spec
from tests.handlers.rbac_check import allowed, denied_requests, rbac_key
from tests.handlers.test_jobs import finish_job

pytestmark = pytest.mark.timeout(60)

# Granted for code paths the emulator does not exercise here: the Lease election (tests/handlers/test_election.py),
# namespaced mode (kmock 0.8 cannot list namespaces; the e2e suite runs both), and the RestoreRequest
# handlers, which live in their own module and tests.
NOT_EXERCISED_HERE = {
    ("get", "", "namespaces"), ("list", "", "namespaces"), ("watch", "", "namespaces"),
    ("get", "coordination.k8s.io", "leases"), ("create", "coordination.k8s.io", "leases"),
    ("update", "coordination.k8s.io", "leases"),
    *((verb, "pgbackup.dev", "restorerequests") for verb in ("get", "list", "watch", "patch")),
    ("patch", "pgbackup.dev", "restorerequests/status"),
    ("delete", "batch", "cronjobs"),  # the verification CronJob's removal: tests/handlers/test_verification.py
    # The WAL streamer's Deployment and Service (spec.wal.enabled): tests/handlers/test_wal.py.
    *((verb, "apps", "deployments") for verb in ("create", "patch", "delete")),
    *((verb, "", "services") for verb in ("create", "patch", "delete")),
    # RestoreRequest spec.quiesce (scale subresource) and hook log tails: tests/handlers/test_quiesce.py.
    *((verb, "apps", f"{kind}/scale") for verb in ("get", "patch") for kind in ("deployments", "statefulsets")),
    ("get", "", "pods/log"),
    ("list", "batch", "cronjobs"),  # the periodic check for runs recorded by no Job: tests/handlers/test_recording.py
}


def operator_requests(emulator: Any, since: int) -> list[Any]:
    return [r for r in list(emulator)[since:]
            if r.headers.get("User-Agent", "").startswith(("kopf", "pgbackup-operator"))]


async def test_every_operator_request_is_allowed_by_the_rbac_rules(cluster: Cluster, operator: Operator,
                                                                   emulator: Any) -> None:
    since = len(list(emulator))
    summary = JobSummary(kind="backup", phase="Completed", backup_id="20261123T020000Z", size_bytes=1)
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec(), {"pgbackup.dev/backup-now": "x"})
        await eventually(lambda: cluster.condition("orders", "Ready"), what="Ready (SecretNotFound)")
        await asyncio.to_thread(cluster.create_secret, "db-creds", {"username": "u", "password": "p"})
        await asyncio.to_thread(cluster.create_secret, "s3-creds", {"accessKeyId": "a", "secretAccessKey": "s"})
        cronjob = await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
        await eventually(lambda: cluster.jobs(), what="the on-demand Job")
        await asyncio.to_thread(finish_job, cluster, cronjob, "orders-backup-1", "Complete", None,
                                {"terminated": {"exitCode": 0, "message": summary.to_termination_message()}})
        await eventually(lambda: cluster.events("BackupSucceeded"), what="the BackupSucceeded Event")

    requests = operator_requests(emulator, since)
    seen = {key for request in requests if (key := rbac_key(request)) is not None}
    assert not denied_requests(requests), denied_requests(requests)
    granted = {(verb, rule.api_group, resource) for rule in OPERATOR_RULES
               for resource in rule.resources for verb in rule.verbs}
    unused = granted - seen - NOT_EXERCISED_HERE
    assert not unused, f"OPERATOR_RULES grant rights the operator did not use: {sorted(unused)}"
    assert ("patch", "pgbackup.dev", "backuppolicies/status") in seen  # status only via the subresource
    assert not any(verb in {"update", "patch"} and resource == "backuppolicies" and
                   request.data and "spec" in request.data
                   for request in requests if (k := rbac_key(request)) for verb, _, resource in [k])


def test_the_check_flags_a_request_outside_the_rules() -> None:
    assert allowed("get", "", "secrets")
    assert not allowed("list", "", "secrets")  # the operator never lists Secrets
    assert not allowed("delete", "batch", "jobs")  # finished Jobs are left to their TTL
