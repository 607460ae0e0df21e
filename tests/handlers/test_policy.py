"""BackupPolicy -> CronJob, status conditions and Secret checks, with the real operator against kmock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.handlers.conftest import IMAGE, Cluster, Operator, eventually, policy_spec

pytestmark = pytest.mark.timeout(60)


def is_writing(request: Any) -> bool:
    return str(request.method).upper().endswith(("POST", "PATCH", "PUT", "DELETE"))


async def test_policy_gets_a_cronjob_with_the_expected_fields(cluster: Cluster, secrets: None,
                                                               operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec(timeZone="Europe/Berlin"))
        cronjob = await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
        ready = await eventually(lambda: (c := cluster.condition("orders", "Ready")) and c["status"] == "True" and c,
                                 what="Ready=True")
        status = (await asyncio.to_thread(cluster.policy, "orders"))["status"]
    assert cronjob["spec"]["schedule"] == "0 2 * * *"
    assert cronjob["spec"]["timeZone"] == "Europe/Berlin"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    owner = cronjob["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("BackupPolicy", "orders", True)
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert ready["observedGeneration"] == 1
    assert status["cronJobName"] == "orders-backup" and status["observedGeneration"] == 1
    assert set(status) <= {"conditions", "observedGeneration", "cronJobName"}  # kopf keeps its state elsewhere


async def test_schedule_change_and_suspend_update_the_cronjob(cluster: Cluster, secrets: None,
                                                              operator: Operator) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
        await asyncio.to_thread(cluster.patch_policy, "orders", {"spec": {"schedule": "30 4 * * *"}})
        await eventually(lambda: cluster.cronjob("orders-backup")["spec"]["schedule"] == "30 4 * * *",
                         what="the new schedule")
        await asyncio.to_thread(cluster.patch_policy, "orders", {"spec": {"suspend": True}})
        await eventually(lambda: cluster.cronjob("orders-backup")["spec"]["suspend"] is True, what="suspend")
        await eventually(lambda: cluster.policy("orders")["status"]["observedGeneration"] == 3, what="generation 3")


async def test_missing_secret_turns_ready_by_itself_once_created(cluster: Cluster, operator: Operator) -> None:
    await asyncio.to_thread(cluster.create_secret, "s3-creds", {"accessKeyId": "a", "secretAccessKey": "b"})
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        ready = await eventually(lambda: cluster.condition("orders", "Ready"), what="a Ready condition")
        assert (ready["status"], ready["reason"]) == ("False", "SecretNotFound")
        assert "shop/db-creds" in ready["message"] and "username" in ready["message"]

        await asyncio.to_thread(cluster.create_secret, "db-creds", {"username": "backup"})
        ready = await eventually(lambda: (c := cluster.condition("orders", "Ready")) and
                                 c["reason"] == "SecretKeyMissing" and c, what="SecretKeyMissing")
        assert "password" in ready["message"] and "shop/db-creds" in ready["message"]

        await asyncio.to_thread(cluster.core.patch_namespaced_secret, "db-creds", "shop",
                                {"stringData": {"password": "fake"}})
        await eventually(lambda: (c := cluster.condition("orders", "Ready")) and c["status"] == "True",
                         what="Ready=True after the Secret appeared")
        await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")


async def test_invalid_spec_gets_a_clear_condition_and_no_cronjob(cluster: Cluster, secrets: None,
                                                                  operator: Operator, emulator: Any) -> None:
    spec = policy_spec()
    spec["database"]["port"] = 99999
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "broken", spec)
        ready = await eventually(lambda: cluster.condition("broken", "Ready"), what="a Ready condition")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.database.port" in ready["message"] and "65535" in ready["message"]
    assert not [r for r in list(emulator) if r.resource is not None and r.resource.plural == "cronjobs"
                and is_writing(r)]


async def test_unchanged_policy_causes_no_writes_on_restart(cluster: Cluster, secrets: None, operator: Operator,
                                                            emulator: Any) -> None:
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
        await eventually(lambda: (c := cluster.condition("orders", "Ready")) and c["status"] == "True", what="Ready")
    seen = len(list(emulator))
    async with operator.running():
        await eventually(lambda: any(r.resource is not None and r.resource.plural == "cronjobs"
                                     for r in list(emulator)[seen:]), what="the resume handler's CronJob read")
    writes = [(str(r.method), r.url.path) for r in list(emulator)[seen:] if is_writing(r)]
    assert writes == []
