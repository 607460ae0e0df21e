"""spec.quiesce as a state machine read from status: the operator is stopped after every step (held there by an
API call that fails) and started again, and it continues from what status says; pods that do not stop fail the
request and the workloads come back even across a restart; deleting a request while its workloads are down
scales them back first (the finalizer is there only while they are down).

The brakes answer 500 BEFORE the emulator changes anything (kmock applies a write even when a reaction answers
it with an error), as an API server that failed the call would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp.web
import kmock as kmocklib
import pytest
from kubernetes.client.exceptions import ApiException

from pgbackup.api.restore import RestoreResult
from pgbackup.handlers.startup import FINALIZER
from tests.handlers.conftest import NAMESPACE, Cluster, Emulator, Operator, eventually
from tests.handlers.test_quiesce import overwrite_spec, recorded, replicas, until_restore_job, workloads
from tests.handlers.test_restore import (
    condition,
    create_request,
    finish_job,
    plan_summary,
    ready_policy,
    request,
    restore_jobs,
    restore_spec,
    status_of,
    summary_state,
)

pytestmark = pytest.mark.timeout(120)


class BrakedEmulator(Emulator):
    """The handler tests' emulator, plus `refuse`: requests it matches get 500 and change nothing."""

    refuse: Callable[[Any], bool] | None = None

    async def _handle(self, request: Any) -> Any:
        refuse = self.refuse
        if refuse is not None and request.resource is not None and refuse(request):
            return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                              "code": 500, "reason": "InternalError",
                                              "message": "refused by the test"}, status=500)
        return await super()._handle(request)


@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": BrakedEmulator}


def scale_calls(request: Any) -> bool:
    return bool(request.subresource == "scale")


def scale_backs(request: Any) -> bool:
    data = request.data if isinstance(request.data, dict) else {}
    return scale_calls(request) and request.method == kmocklib.method.PATCH \
        and (data.get("spec") or {}).get("replicas") != 0


def job_creations(request: Any) -> bool:
    return bool(request.action == kmocklib.action.CREATE and request.resource.plural == "jobs")


def create_pod(cluster: Cluster, name: str, app: str) -> None:
    cluster.core.create_namespaced_pod(NAMESPACE, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]},
        "status": {"phase": "Running"}}, _preload_content=False)


def finalizers(cluster: Cluster, name: str) -> list[str]:
    return list(request(cluster, name)["metadata"].get("finalizers") or [])


def ready_reason(cluster: Cluster, name: str) -> str | None:
    ready = condition(status_of(cluster, name), "Ready")
    return ready["reason"] if ready else None


async def test_quiesce_continues_after_the_operator_stopped_at_each_step(emulator: Any, cluster: Cluster,
                                                                         secrets: None, operator: Operator) -> None:
    await operator.start()
    try:
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_pod, cluster, "web-1", "web")

        # 1. The plan succeeded; the replica counts cannot be read yet.
        emulator.refuse = scale_calls
        await asyncio.to_thread(create_request, cluster, "steps", overwrite_spec())
        plan_job = (await eventually(lambda: restore_jobs(cluster, "plan"), what="the plan Job"))[0]
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        await eventually(lambda: ready_reason(cluster, "steps") == "Quiescing", what="Ready Quiescing")
        await operator.stop()
        emulator.refuse = None
        assert not (await asyncio.to_thread(status_of, cluster, "steps")).get("quiesce")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 3

        # 2. Counts recorded, scaled to zero, a pod still stopping: the operator looks again on every tick
        #    (it stops at once: no handler sleeps while pods stop).
        await operator.start()
        await eventually(lambda: "web-1" in (condition(status_of(cluster, "steps"), "Quiesced") or {})["message"],
                         what="Quiesced naming the pod that still runs")
        await operator.stop()
        waiting = await asyncio.to_thread(status_of, cluster, "steps")
        assert recorded(waiting) == [("Deployment", "web", 3, False), ("StatefulSet", "worker", 2, False)]
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 0
        assert await asyncio.to_thread(replicas, cluster, "StatefulSet", "worker") == 0
        assert FINALIZER in await asyncio.to_thread(finalizers, cluster, "steps")

        # 3. The pod is gone (the counts are not read again: they would be 0); the restore Job cannot be created.
        emulator.refuse = job_creations
        await operator.start()
        await asyncio.to_thread(cluster.core.delete_namespaced_pod, "web-1", NAMESPACE)
        await eventually(lambda: (condition(status_of(cluster, "steps"), "Quiesced") or {}).get("status") == "True",
                         what="Quiesced True")
        await operator.stop()
        emulator.refuse = None
        assert not await asyncio.to_thread(restore_jobs, cluster, "restore")
        assert (await asyncio.to_thread(status_of, cluster, "steps"))["phase"] == "Planning"

        # 4. Started again: the restore Job.
        await operator.start()
        restore_job = (await eventually(lambda: restore_jobs(cluster, "restore"), what="the restore Job"))[0]
        await eventually(lambda: status_of(cluster, "steps").get("phase") == "Running", what="phase Running")
        await operator.stop()

        # 5. It finishes while the operator is stopped: on the next start, Succeeded and scaled back.
        await asyncio.to_thread(finish_job, cluster, restore_job, "Complete",
                                summary_state(plan_summary(result=RestoreResult(restore_seconds=1.0))))
        await operator.start()
        done = await eventually(lambda: (s := status_of(cluster, "steps")).get("phase") == "Succeeded" and s,
                                what="phase Succeeded")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 3
        assert await asyncio.to_thread(replicas, cluster, "StatefulSet", "worker") == 2
        await eventually(lambda: FINALIZER not in finalizers(cluster, "steps"), what="the finalizer removed")
    finally:
        emulator.refuse = None
        await operator.stop()
    assert recorded(done) == [("Deployment", "web", 3, True), ("StatefulSet", "worker", 2, True)]
    assert len(await asyncio.to_thread(restore_jobs, cluster, "restore")) == 1


async def test_pods_that_do_not_stop_fail_the_request_and_the_workloads_come_back_after_a_restart(
        emulator: Any, cluster: Cluster, secrets: None, operator: Operator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGBACKUP_QUIESCE_TIMEOUT_SECONDS", "1")
    await operator.start()
    try:
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_pod, cluster, "web-1", "web")
        emulator.refuse = scale_backs  # scaling down works, scaling back fails for now
        await asyncio.to_thread(create_request, cluster, "stuck", overwrite_spec())
        plan_job = (await eventually(lambda: restore_jobs(cluster, "plan"), what="the plan Job"))[0]
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        failed = await eventually(lambda: (s := status_of(cluster, "stuck")).get("phase") == "Failed" and s,
                                  what="phase Failed")
        await operator.stop()
        emulator.refuse = None
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 0

        await operator.start()
        await eventually(lambda: replicas(cluster, "Deployment", "web") == 3
                         and replicas(cluster, "StatefulSet", "worker") == 2, what="the workloads scaled back")
        back = await eventually(lambda: (s := status_of(cluster, "stuck")) and all(r for *_, r in recorded(s)) and s,
                                what="every workload marked restored")
        await eventually(lambda: FINALIZER not in finalizers(cluster, "stuck"), what="the finalizer removed")
    finally:
        emulator.refuse = None
        await operator.stop()
    assert (condition(failed, "Ready") or {}).get("reason") == "QuiesceTimeout"
    assert "Deployment web: web-1" in failed["error"]
    assert not await asyncio.to_thread(restore_jobs, cluster, "restore")
    assert (condition(back, "Quiesced") or {}).get("reason") == "ScaledBack"


async def test_deleting_a_request_while_its_workloads_are_down_scales_them_back_first(
        cluster: Cluster, secrets: None, operator: Operator) -> None:
    await operator.start()
    try:
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_request, cluster, "deleted", overwrite_spec())
        await until_restore_job(cluster, "deleted")
        assert await asyncio.to_thread(replicas, cluster, "Deployment", "web") == 0
        assert FINALIZER in await asyncio.to_thread(finalizers, cluster, "deleted")
        await operator.stop()  # deleted while the operator is down: the finalizer holds the request

        await asyncio.to_thread(cluster.custom.delete_namespaced_custom_object, "pgbackup.dev", "v1alpha1",
                                NAMESPACE, "restorerequests", "deleted")
        assert (await asyncio.to_thread(request, cluster, "deleted"))["metadata"].get("deletionTimestamp")
        await operator.start()
        await eventually(lambda: replicas(cluster, "Deployment", "web") == 3
                         and replicas(cluster, "StatefulSet", "worker") == 2, what="the workloads scaled back")
        await eventually(lambda: _gone(cluster, "deleted"), what="the request deleted")

        # A request without quiesce never gets a finalizer.
        await asyncio.to_thread(create_request, cluster, "plain", restore_spec())
        plan_job = (await eventually(lambda: [j for j in restore_jobs(cluster, "plan")
                                              if "plain" in j["metadata"]["name"]], what="the plan Job"))[0]
        await asyncio.to_thread(finish_job, cluster, plan_job, "Complete", summary_state(plan_summary()))
        await eventually(lambda: status_of(cluster, "plain").get("phase") == "Running", what="phase Running")
        assert not await asyncio.to_thread(finalizers, cluster, "plain")
    finally:
        await operator.stop()


def _gone(cluster: Cluster, name: str) -> bool:
    try:
        request(cluster, name)
    except ApiException as error:
        return bool(error.status == 404)
    return False


async def test_restores_waiting_for_pods_to_stop_do_not_hold_up_other_requests(cluster: Cluster, secrets: None,
                                                                              operator: Operator) -> None:
    """The operator has 4 handler workers: four quiesces waiting (up to 300 s) for pods must not hold them."""
    await operator.start()
    try:
        await ready_policy(cluster)
        await workloads(cluster)
        await asyncio.to_thread(create_pod, cluster, "web-1", "web")
        names = [f"waiting-{i}" for i in range(5)]
        for name in names:
            await asyncio.to_thread(create_request, cluster, name, overwrite_spec())
        plans = await eventually(lambda: len(jobs := restore_jobs(cluster, "plan")) == len(names) and jobs,
                                 what="the plan Jobs")
        for job in plans:
            await asyncio.to_thread(finish_job, cluster, job, "Complete", summary_state(plan_summary()))
        for name in names:
            await eventually(lambda: "web-1" in (condition(status_of(cluster, name), "Quiesced") or {})["message"],
                             what=f"{name} waiting for the pod")

        await asyncio.to_thread(create_request, cluster, "meanwhile", restore_spec())
        await eventually(lambda: status_of(cluster, "meanwhile").get("phase") == "Planning",
                         what="another request planned meanwhile")
    finally:
        await operator.stop()
