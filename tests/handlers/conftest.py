"""The real kopf operator, in the test's event loop, against the kmock Kubernetes emulator (see
../shared/TESTING.md). The kubernetes client the handlers use is pointed at the same emulator.

Every test's API requests are checked against pgbackup.rbac.OPERATOR_RULES on teardown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import itertools

import kmock as kmocklib
import kopf
import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

import pgbackup.handlers.jobs  # noqa: F401  (registers handlers)
import pgbackup.handlers.metrics  # noqa: F401
import pgbackup.handlers.policy  # noqa: F401
import pgbackup.handlers.recording  # noqa: F401
import pgbackup.handlers.restore  # noqa: F401
import pgbackup.handlers.startup  # noqa: F401
import pgbackup.handlers.objectives  # noqa: F401
import pgbackup.handlers.verification  # noqa: F401
import pgbackup.handlers.wal  # noqa: F401
from pgbackup.handlers import kube
from tests.handlers.rbac_check import denied_requests

NAMESPACE = "shop"
IMAGE = "ghcr.io/pgbackup/pgbackup-operator:test"
ALL_VERBS = ["get", "list", "watch", "create", "patch", "update", "delete"]

RESOURCES: dict[str, dict[str, Any]] = {
    "pgbackup.dev/v1alpha1/backuppolicies": {"kind": "BackupPolicy", "namespaced": True, "verbs": ALL_VERBS,
                                             "subresources": ["status"]},
    "pgbackup.dev/v1alpha1/restorerequests": {"kind": "RestoreRequest", "namespaced": True, "verbs": ALL_VERBS,
                                              "subresources": ["status"]},
    "batch/v1/cronjobs": {"kind": "CronJob", "namespaced": True, "verbs": ALL_VERBS, "subresources": ["status"]},
    "batch/v1/jobs": {"kind": "Job", "namespaced": True, "verbs": ALL_VERBS, "subresources": ["status"]},
    "apps/v1/deployments": {"kind": "Deployment", "namespaced": True, "verbs": ALL_VERBS,
                            "subresources": ["status", "scale"]},
    "apps/v1/statefulsets": {"kind": "StatefulSet", "namespaced": True, "verbs": ALL_VERBS,
                             "subresources": ["status", "scale"]},
    "v1/services": {"kind": "Service", "namespaced": True, "verbs": ALL_VERBS, "subresources": ["status"]},
    "v1/pods": {"kind": "Pod", "namespaced": True, "verbs": ALL_VERBS, "subresources": ["status"]},
    "v1/secrets": {"kind": "Secret", "namespaced": True, "verbs": ALL_VERBS},
    "v1/events": {"kind": "Event", "namespaced": True, "verbs": ALL_VERBS},
    "events.k8s.io/v1/events": {"kind": "Event", "namespaced": True, "verbs": ALL_VERBS},
    "coordination.k8s.io/v1/leases": {"kind": "Lease", "namespaced": True, "verbs": ALL_VERBS},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {"kind": "CustomResourceDefinition", "namespaced": False,
                                                          "verbs": ["get", "list", "watch"]},
    "v1/namespaces": {"kind": "Namespace", "namespaced": False, "verbs": ["get", "list", "watch"]},
}


CONFLICT = "the object has been modified; please apply your changes to the latest version and try again"
_RESOURCE_VERSION = "/metadata/resourceVersion"


class Emulator(kmocklib.KubernetesEmulator):
    """kmock's emulator plus what the API server does and the operator relies on:
    - metadata.generateName (kopf's Events);
    - PUT (replace), emulated as patching with the whole object;
    - optimistic concurrency: every write gives the object a new metadata.resourceVersion, and a write that carries
      an older one is refused with 409 Conflict, as the read-modify-writes of shared status fields and of the
      election Lease expect. kopf's JSON patches `test` the resourceVersion they read; kmock would answer a failed
      test with 500, which kopf retries unchanged, so those tests are left out (kopf re-reads on the next event)."""

    _names = itertools.count(1)
    _versions = itertools.count(1)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._writes = asyncio.Lock()

    async def _handle(self, request: Any) -> Any:
        if request.method == kmocklib.method.PUT and request.name:
            object.__setattr__(request, "action", kmocklib.action.UPDATE)
        if request.action == kmocklib.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(self._names):05d}"
        if request.resource is None or request.action not in (kmocklib.action.CREATE, kmocklib.action.UPDATE):
            return await super()._handle(request)
        async with self._writes:  # compare and write as one step, as etcd's compare-and-swap does
            version = str(next(self._versions))
            if isinstance(request.data, dict):
                if request.action == kmocklib.action.UPDATE and request.name:
                    sent = (request.data.get("metadata") or {}).get("resourceVersion")
                    key = (request.resource, request.namespace, request.name)
                    stored = self.objects[key].get("metadata", {}).get("resourceVersion") if key in self.objects \
                        else None
                    if sent and stored and sent != stored:
                        raise kmocklib.KubernetesError(status=409, reason="Conflict", message=CONFLICT)
                request.data.setdefault("metadata", {})["resourceVersion"] = version
            elif isinstance(request.data, list):  # a JSON patch
                operations = [op for op in request.data
                              if not (op.get("op") == "test" and op.get("path") == _RESOURCE_VERSION)]
                operations.append({"op": "add", "path": _RESOURCE_VERSION, "value": version})
                object.__setattr__(request, "data", operations)
            return await super()._handle(request)


@pytest.fixture()
def kmock_options(kmock_options: dict[str, Any]) -> dict[str, Any]:
    return {**kmock_options, "cls": Emulator}


async def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `check` (run in a thread: it may call the API) until it returns something truthy; real deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await asyncio.to_thread(check)
        except (KeyError, ApiException, AssertionError, TypeError, IndexError) as error:
            last = error
        else:
            if last:
                return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


class Cluster:
    """The emulated API seen through the real kubernetes client, as a user with kubectl would see it."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self._uid = 0

    def _next_uid(self) -> str:
        self._uid += 1
        return f"00000000-0000-0000-0000-{self._uid:012d}"

    def create_policy(self, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> None:
        body = {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy",
                "metadata": {"name": name, "namespace": NAMESPACE, "uid": self._next_uid(), "generation": 1,
                             "resourceVersion": "1", "annotations": annotations or {}},
                "spec": spec}
        self.custom.create_namespaced_custom_object("pgbackup.dev", "v1alpha1", NAMESPACE, "backuppolicies", body)

    def policy(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object("pgbackup.dev", "v1alpha1", NAMESPACE, "backuppolicies", name)

    def patch_policy(self, name: str, changes: dict[str, Any], bump_generation: bool = True) -> None:
        if bump_generation:
            generation = self.policy(name)["metadata"].get("generation", 1)
            changes = {**changes, "metadata": {**changes.get("metadata", {}), "generation": generation + 1}}
        self.custom.patch_namespaced_custom_object("pgbackup.dev", "v1alpha1", NAMESPACE, "backuppolicies", name,
                                                   changes, _content_type="application/merge-patch+json")

    def condition(self, name: str, type: str) -> dict[str, Any] | None:
        status = self.policy(name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type), None)

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        self.core.create_namespaced_secret(NAMESPACE, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE},
            "stringData": data})

    def cronjob(self, name: str) -> dict[str, Any]:
        return self.batch.api_client.sanitize_for_serialization(self.batch.read_namespaced_cron_job(name, NAMESPACE))

    def jobs(self) -> list[dict[str, Any]]:
        items = self.batch.list_namespaced_job(NAMESPACE).items
        return [self.batch.api_client.sanitize_for_serialization(job) for job in items]

    def events(self, reason: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(NAMESPACE).items
        return [self.core.api_client.sanitize_for_serialization(e) for e in items if e.reason == reason]


class Operator:
    """Starts and stops the real kopf operator (all pgbackup handlers) inside the test's event loop."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Future[None] | None = None

    async def start(self) -> None:
        assert self._task is None, "operator already running"
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        ready = loop.create_future()
        self._task = loop.create_task(kopf.operator(
            standalone=True, clusterwide=True, stop_flag=self._stop, ready_flag=ready))
        await asyncio.wait_for(asyncio.shield(ready), timeout=30)

    async def stop(self) -> None:
        if self._task is None or self._stop is None:
            return
        if not self._stop.done():
            self._stop.set_result(None)
        await asyncio.wait_for(self._task, timeout=30)
        self._task = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Operator]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


@pytest.fixture()
def emulator(kmock: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for resource, info in RESOURCES.items():
        kmock.resources[resource] = info
    monkeypatch.setenv("PGBACKUP_IMAGE", IMAGE)
    monkeypatch.setenv("PGBACKUP_JOB_SERVICE_ACCOUNT", "pgbackup-job")
    monkeypatch.setenv("PGBACKUP_SECRET_RETRY_SECONDS", "0.5")
    monkeypatch.delenv("WATCH_NAMESPACES", raising=False)
    monkeypatch.delenv("METRICS_PORT", raising=False)  # tests that scrape set their own free port
    configuration = kubernetes.client.Configuration(host=str(kmock.url).rstrip("/"))
    configuration.verify_ssl = False
    # No keep-alive: kopf waits for (then cancels) the emulator's connection tasks it did not start.
    kube.configure(configuration, headers={"Connection": "close"})
    yield kmock
    kube.configure(None)


@pytest.fixture()
def cluster(emulator: Any) -> Iterator[Cluster]:
    configuration = kubernetes.client.Configuration(host=str(emulator.url).rstrip("/"))
    with kubernetes.client.ApiClient(configuration) as api:
        # No keep-alive: kopf cancels the emulator's connection tasks it did not start when it stops,
        # which would leave a pooled connection dead.
        api.set_default_header("Connection", "close")
        yield Cluster(api)


@pytest.fixture()
def operator(emulator: Any) -> Iterator[Operator]:
    """The operator, started by the test body (`await operator.start()`): kopf cancels every task created
    after it started when it stops, so start and stop must happen in the same task, the test's own."""
    first_request = len(list(emulator))
    running = Operator()
    yield running
    assert running._task is None, "the test must `await operator.stop()` before it ends"
    operator_requests = [r for r in list(emulator)[first_request:]
                         if r.headers.get("User-Agent", "").startswith("kopf") or _from_handlers(r)]
    denied = denied_requests(operator_requests)
    assert not denied, f"the operator made requests that pgbackup.rbac.OPERATOR_RULES do not allow: {denied}"


def _from_handlers(request: Any) -> bool:
    return request.headers.get("User-Agent", "").startswith("pgbackup-operator")


def policy_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "database": {"host": "db.shop.svc", "credentialsSecret": {"name": "db-creds"}},
        "schedule": "0 2 * * *",
        "storage": {"s3": {"bucket": "backups", "endpoint": "http://minio.minio.svc:9000",
                           "forcePathStyle": True, "credentialsSecret": {"name": "s3-creds"}}},
        "retention": {"keepLast": 3},
    }
    spec.update(overrides)
    return spec


@pytest.fixture()
async def secrets(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.create_secret, "db-creds",
                            {"username": "backup", "password": "fake-password-for-tests"})
    await asyncio.to_thread(cluster.create_secret, "s3-creds",
                            {"accessKeyId": "fake-access", "secretAccessKey": "fake-secret-for-tests"})
