"""RestoreRequest spec.quiesce and hooks against the real operator (kmock): replica counts recorded in status
first, scaled to zero, put back after the restore whatever its outcome, also across an operator restart.

The emulator runs no controllers: a Deployment's pods never exist, so "pods gone" holds at once; the scale
subresource is served by the emulator as the object itself (spec.replicas), which is what the operator reads
and patches."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kmock as kmocklib
import kubernetes.client
import pytest

from pgbackup.api import JobSummary
from pgbackup.api.restore import RestoreRequestStatus, RestoreResult
from tests.handlers.conftest import NAMESPACE, Cluster, Operator, eventually, policy_spec
from tests.handlers.test_jobs import finish_job as finish_backup_job
from tests.handlers.test_restore import (
    condition,
    create_request,
    finish_job,
    plan_summary,
    ready_policy,
    restore_jobs,
    restore_spec,
    status_of,
    summary_state,
)

pytestmark = pytest.mark.timeout(60)


def apps(cluster: Cluster) -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(cluster.core.api_client)


def create_workload(cluster: Cluster, kind: str, name: str, replicas: int) -> None:
    body = {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]}}}}
    create = apps(cluster).create_namespaced_deployment if kind == "Deployment" else \
        apps(cluster).create_namespaced_stateful_set
    create(NAMESPACE, body, _preload_content=False)


def replicas(cluster: Cluster, kind: str, name: str) -> int:
    read = apps(cluster).read_namespaced_deployment if kind == "Deployment" else \
        apps(cluster).read_namespaced_stateful_set
    value: int = json.loads(read(name, NAMESPACE, _preload_content=False).data)["spec"]["replicas"]
    return value


def overwrite_spec(**overrides: Any) -> dict[str, Any]:
    return restore_spec(target={"database": "orders", "overwrite": True},
                        quiesce={"deployments": ["web"], "statefulSets": ["worker"]}, **overrides)


async def workloads(cluster: Cluster) -> None:
    await asyncio.to_thread(create_workload, cluster, "Deployment", "web", 3)
    await asyncio.to_thread(create_workload, cluster, "StatefulSet", "worker", 2)


async def until_restore_job(cluster: Cluster, name: str) -> dict[str, Any]:
    plan_job = (await eventually(lambda: restore_jobs(cluster, "plan"), what="the plan Job"))[0]
    await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
    job: dict[str, Any] = (await eventually(lambda: restore_jobs(cluster, "restore"), what="the restore Job"))[0]
    return job


def recorded(status: dict[str, Any]) -> list[tuple[str, str, int, bool]]:
    return sorted((e["kind"], e["name"], e["replicas"], e.get("restored", False)) for e in status.get("quiesce") or [])


async def test_replicas_recorded_scaled_to_zero_and_restored_after_success(cluster: Cluster, secrets: None,
                                                                            operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_request, cluster, "overwrite", overwrite_spec())
        restore_job = await until_restore_job(cluster, "overwrite")
        during = await asyncio.to_thread(status_of, cluster, "overwrite")
        assert recorded(during) == [("Deployment", "web", 3, False), ("StatefulSet", "worker", 2, False)]
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 0
        assert await asyncio.to_thread(replicas, cluster, "StatefulSet", "worker") == 0
        quiesced = condition(during, "Quiesced")
        assert quiesced is not None and quiesced["status"] == "True"

        await asyncio.to_thread(finish_job, cluster, restore_job, "Complete",
                                summary_state(plan_summary(result=RestoreResult(restore_seconds=1.0))))
        done = await eventually(lambda: (s := status_of(cluster, "overwrite")).get("phase") == "Succeeded" and s,
                                what="phase Succeeded")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 3
        assert await asyncio.to_thread(replicas, cluster, "StatefulSet", "worker") == 2
    assert recorded(done) == [("Deployment", "web", 3, True), ("StatefulSet", "worker", 2, True)]
    back = condition(done, "Quiesced")
    assert back is not None and back["reason"] == "ScaledBack" and "web=3" in back["message"]
    RestoreRequestStatus.model_validate(done)


async def test_replicas_restored_after_a_failed_restore(cluster: Cluster, secrets: None,
                                                        operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_request, cluster, "breaks", overwrite_spec())
        restore_job = await until_restore_job(cluster, "breaks")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 0
        failure = JobSummary(kind="restore", phase="Failed", reason="RestoreFailed", error="pg_restore failed")
        await asyncio.to_thread(finish_job, cluster, restore_job, "Failed", summary_state(failure),
                                "BackoffLimitExceeded")
        done = await eventually(lambda: (s := status_of(cluster, "breaks")).get("phase") == "Failed" and s,
                                what="phase Failed")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 3
        assert await asyncio.to_thread(replicas, cluster, "StatefulSet", "worker") == 2
    assert recorded(done) == [("Deployment", "web", 3, True), ("StatefulSet", "worker", 2, True)]
    assert done["error"] == "pg_restore failed"


async def test_replicas_restored_after_an_operator_restart_in_the_middle(cluster: Cluster, secrets: None,
                                                                         operator: Operator) -> None:
    await operator.start()
    try:
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_request, cluster, "restarted", overwrite_spec())
        restore_job = await until_restore_job(cluster, "restarted")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 0
        await operator.stop()
        await asyncio.to_thread(finish_job, cluster, restore_job, "Complete",
                                summary_state(plan_summary(result=RestoreResult(restore_seconds=1.0))))
        await operator.start()
        await eventually(lambda: status_of(cluster, "restarted").get("phase") == "Succeeded", what="phase Succeeded")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 3
        assert await asyncio.to_thread(replicas, cluster, "StatefulSet", "worker") == 2
    finally:
        await operator.stop()


async def test_a_missing_deployment_fails_the_restore_before_anything_changes(cluster: Cluster, secrets: None,
                                                                             operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await asyncio.to_thread(create_workload, cluster, "StatefulSet", "worker", 2)
        await asyncio.to_thread(create_request, cluster, "no-web", overwrite_spec())
        plan_job = (await eventually(lambda: restore_jobs(cluster, "plan"), what="the plan Job"))[0]
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        done = await eventually(lambda: (s := status_of(cluster, "no-web")).get("phase") == "Failed" and s,
                                what="phase Failed")
        assert not await asyncio.to_thread(restore_jobs, cluster, "restore")
        assert await asyncio.to_thread(replicas, cluster, "StatefulSet", "worker") == 2
    assert "Deployment shop/web (spec.quiesce.deployments) does not exist" in done["error"]
    assert "nothing was changed" in done["error"]
    assert not done.get("quiesce")


async def test_without_the_chart_flag_the_restore_fails_and_says_to_enable_it(
        emulator: Any, cluster: Cluster, secrets: None, operator: Operator) -> None:
    emulator[kmocklib.subresource("scale")] << 403  # what the API server answers without restoreQuiesce.enabled
    async with operator.running():
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_request, cluster, "forbidden", overwrite_spec())
        plan_job = (await eventually(lambda: restore_jobs(cluster, "plan"), what="the plan Job"))[0]
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        done = await eventually(lambda: (s := status_of(cluster, "forbidden")).get("phase") == "Failed" and s,
                                what="phase Failed")
        assert not await asyncio.to_thread(restore_jobs, cluster, "restore")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 3
    assert "restoreQuiesce.enabled=true" in done["error"]
    ready = condition(done, "Ready")
    assert ready is not None and ready["reason"] == "QuiesceForbidden"


MIGRATE = {"image": "shop/app:1.4.2", "command": ["./manage.py", "migrate"],
           "env": [{"name": "DATABASE_PASSWORD", "secretKeyRef": {"name": "app-db", "key": "password"}},
                   {"name": "DJANGO_SETTINGS_MODULE", "value": "shop.settings"}],
           "timeoutSeconds": 120}


def hook_jobs(cluster: Cluster, step: str) -> list[dict[str, Any]]:
    return [job for job in cluster.jobs() if (job["metadata"].get("annotations") or {}).get("pgbackup.dev/hook") == step]


def done_state() -> dict[str, Any]:
    return {"terminated": {"exitCode": 0, "reason": "Completed"}}


async def test_hooks_run_around_the_restore_and_a_failed_post_restore_fails_it_with_the_log_tail(
        emulator: Any, cluster: Cluster, secrets: None, operator: Operator) -> None:
    emulator[kmocklib.subresource("log")] << b"Applying shop.0042_orders... \nerror: column orders.total exists\n"
    async with operator.running():
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_request, cluster, "migrated",
                                overwrite_spec(hooks={"preRestore": {"image": "shop/app:1.4.2", "args": ["drain"]},
                                                      "postRestore": MIGRATE}))
        plan_job = (await eventually(lambda: restore_jobs(cluster, "plan"), what="the plan Job"))[0]
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))

        pre = (await eventually(lambda: hook_jobs(cluster, "pre-restore"), what="the preRestore hook Job"))[0]
        assert not await asyncio.to_thread(restore_jobs, cluster, "restore"), "the restore waits for the hook"
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 0, "hooks run after quiesce"
        assert pre["metadata"]["ownerReferences"][0]["uid"] == "uid-migrated"
        await asyncio.to_thread(finish_job, cluster, pre, "Complete", done_state())

        restore_job = (await eventually(lambda: restore_jobs(cluster, "restore"), what="the restore Job"))[0]
        await asyncio.to_thread(finish_job, cluster, restore_job, "Complete",
                                summary_state(plan_summary(result=RestoreResult(restore_seconds=1.0))))
        post = (await eventually(lambda: hook_jobs(cluster, "post-restore"), what="the postRestore hook Job"))[0]
        running = await asyncio.to_thread(status_of, cluster, "migrated")
        assert running["phase"] == "Running"
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 0, "migrations before scale-up"
        await asyncio.to_thread(finish_job, cluster, post, "Failed",
                                {"terminated": {"exitCode": 1, "reason": "Error"}}, "BackoffLimitExceeded")

        done = await eventually(lambda: (s := status_of(cluster, "migrated")).get("phase") == "Failed" and s,
                                what="phase Failed")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 3
        failed = await eventually(lambda: cluster.events("RestoreFailed"), what="a RestoreFailed Event")
    assert "postRestore hook Job" in done["error"] and "column orders.total exists" in done["error"]
    ready = condition(done, "Ready")
    assert ready is not None and ready["reason"] == "PostRestoreHookFailed"
    assert "column orders.total exists" in failed[0]["message"]
    container = post["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "DATABASE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-db", "key": "password"}}} \
        in container["env"]
    assert post["spec"]["activeDeadlineSeconds"] == 120 and post["spec"]["backoffLimit"] == 0


async def test_a_succeeding_post_restore_hook_completes_the_restore(cluster: Cluster, secrets: None,
                                                                    operator: Operator) -> None:
    async with operator.running():
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_request, cluster, "fine", overwrite_spec(hooks={"postRestore": MIGRATE}))
        restore_job = await until_restore_job(cluster, "fine")
        await asyncio.to_thread(finish_job, cluster, restore_job, "Complete",
                                summary_state(plan_summary(result=RestoreResult(restore_seconds=1.0))))
        post = (await eventually(lambda: hook_jobs(cluster, "post-restore"), what="the postRestore hook Job"))[0]
        await asyncio.to_thread(finish_job, cluster, post, "Complete", done_state())
        done = await eventually(lambda: (s := status_of(cluster, "fine")).get("phase") == "Succeeded" and s,
                                what="phase Succeeded")
        assert await asyncio.to_thread(replicas, cluster, "StatefulSet", "worker") == 2
    hooks = condition(done, "Hooks")
    assert hooks is not None and (hooks["status"], hooks["reason"]) == ("True", "PostRestoreSucceeded")
    assert done["result"]["restoreSeconds"] == 1.0


async def test_post_backup_hook_runs_as_a_job_once_the_backup_is_recorded(cluster: Cluster, secrets: None,
                                                                         operator: Operator) -> None:
    summary = JobSummary(kind="backup", phase="Completed", backup_id="20261123T020000Z", method="logical")
    hooks = {"preBackup": {"image": "shop/app:1", "args": ["flush-cache"]},
             "postBackup": {"image": "shop/app:1", "args": ["notify"], "timeoutSeconds": 60,
                            "env": [{"name": "TOKEN", "secretKeyRef": {"name": "chat", "key": "token"}}]}}
    async with operator.running():
        await asyncio.to_thread(cluster.create_policy, "orders", policy_spec(hooks=hooks))
        cronjob = await eventually(lambda: cluster.cronjob("orders-backup"), what="the CronJob")
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["initContainers"][0]["args"] == ["flush-cache"]
        await asyncio.to_thread(finish_backup_job, cluster, cronjob, "orders-backup-29000000", "Complete", None,
                                {"terminated": {"exitCode": 0, "message": summary.to_termination_message()}})
        post = (await eventually(lambda: hook_jobs(cluster, "post-backup"), what="the postBackup hook Job"))[0]
        await eventually(lambda: cluster.batch.read_namespaced_job("orders-backup-29000000", NAMESPACE)
                         .metadata.annotations.get("pgbackup.dev/post-backup-hook"), what="the hook mark")
        await operator.restart()  # a restart does not run the hook a second time
        await asyncio.sleep(0.5)
        assert len(await asyncio.to_thread(hook_jobs, cluster, "post-backup")) == 1
        await operator.stop()
    env = {e["name"]: e for e in post["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGBACKUP_BACKUP_PHASE"]["value"] == "Completed"
    assert env["PGBACKUP_BACKUP_JOB"]["value"] == "orders-backup-29000000"
    assert env["TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "chat", "key": "token"}}
    owner = post["metadata"]["ownerReferences"][0]
    assert (owner["apiVersion"], owner["kind"], owner["name"]) == ("batch/v1", "Job", "orders-backup-29000000")
    assert post["spec"]["activeDeadlineSeconds"] == 60
