"""The few Kubernetes API calls the handlers make, through the official client. Every call here must be
allowed by pgbackup.rbac.OPERATOR_RULES (the handler tests check that)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from pgbackup.api.base import GROUP, VERSION
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME, ANNOTATION_SPEC_HASH
from pgbackup.builders.results import ANNOTATION_RECORDED
from pgbackup.builders.secrets import SecretKeyUse

POLICIES = "backuppolicies"
FIELD_MANAGER = "pgbackup-operator"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
USER_AGENT = "pgbackup-operator"

_configuration: kubernetes.client.Configuration | None = None
_headers: dict[str, str] = {}
_client: kubernetes.client.ApiClient | None = None


def configure(configuration: kubernetes.client.Configuration | None, headers: dict[str, str] | None = None) -> None:
    """Use this configuration (and extra request headers) instead of the in-cluster / kubeconfig one
    (tests point it at an emulator)."""
    global _configuration, _client, _headers
    _configuration, _client, _headers = configuration, None, dict(headers or {})


def explicit_configuration() -> kubernetes.client.Configuration | None:
    return _configuration


def client() -> kubernetes.client.ApiClient:
    global _client
    if _client is None:
        configuration = _configuration or kubernetes.client.Configuration.get_default_copy()
        _client = kubernetes.client.ApiClient(configuration)
        _client.user_agent = USER_AGENT  # tells the operator's requests apart in audit logs (and tests)
        for name, value in _headers.items():
            _client.set_default_header(name, value)
    return _client


def reset() -> None:
    """Forget the client so that the next call picks up freshly loaded credentials."""
    global _client
    _client = None


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def is_status(error: ApiException, *codes: int) -> bool:
    return error.status in codes


# ------------------------------------------------------------------ Secrets


def missing_secret_keys(namespace: str, uses: list[SecretKeyUse]) -> list[tuple[SecretKeyUse, bool]]:
    """The referenced keys that cannot be used, each with True when the whole Secret is missing.
    Only key names are looked at; values never leave this function."""
    core = kubernetes.client.CoreV1Api(client())
    keys_by_secret: dict[str, set[str] | None] = {}
    for name in dict.fromkeys(use.secret for use in uses):
        try:
            secret = _json(core.read_namespaced_secret(name, namespace, _preload_content=False))
        except ApiException as error:
            if not is_status(error, 404):
                raise
            keys_by_secret[name] = None
            continue
        keys_by_secret[name] = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
    missing = []
    for use in uses:
        keys = keys_by_secret[use.secret]
        if keys is None or use.key not in keys:
            missing.append((use, keys is None))
    return missing


def read_secret_value(namespace: str, name: str, key: str) -> str | None:
    """One Secret value (e.g. a webhook URL), None when the Secret or key is missing. The caller uses it
    and forgets it: it never goes into status, Events or logs."""
    core = kubernetes.client.CoreV1Api(client())
    try:
        secret = _json(core.read_namespaced_secret(name, namespace, _preload_content=False))
    except ApiException as error:
        if is_status(error, 404):
            return None
        raise
    encoded = (secret.get("data") or {}).get(key)
    return base64.b64decode(encoded).decode() if encoded else None


# ------------------------------------------------------------------ owned objects kept in step with a policy


def _apply_hashed(desired: dict[str, Any], read: Callable[..., Any], patch: Callable[..., Any],
                  create: Callable[..., Any]) -> bool:
    """Make an object match `desired`; True when something was written. An object whose spec-hash annotation
    matches is left alone, so reconciling an unchanged policy writes nothing; otherwise server-side apply (fields
    the operator stops setting are removed, others' fields are kept), or create where the server cannot create by
    apply."""
    meta = desired["metadata"]
    try:
        existing = _json(read(meta["name"], meta["namespace"], _preload_content=False))
    except ApiException as error:
        if not is_status(error, 404):
            raise
        existing = None
    if existing is not None:
        if (existing.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH) == \
                meta["annotations"][ANNOTATION_SPEC_HASH]:
            return False
    try:
        patch(meta["name"], meta["namespace"], desired, field_manager=FIELD_MANAGER, force=True,
              _content_type=APPLY_PATCH)
    except ApiException as error:
        if not is_status(error, 404):
            raise
        create(meta["namespace"], desired, field_manager=FIELD_MANAGER)
    return True


def _delete_owned(namespace: str, name: str, policy_name: str, read: Callable[..., Any],
                  delete: Callable[..., Any]) -> bool:
    """Delete object `name` when it exists and was made for `policy_name`; True when it was deleted. Read first,
    so that reconciling a policy that has none writes nothing."""
    try:
        existing = _json(read(name, namespace, _preload_content=False))
    except ApiException as error:
        if is_status(error, 404):
            return False
        raise
    if (existing.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_POLICY_NAME) != policy_name:
        return False  # not ours: never delete a user's object that happens to have the name
    try:
        delete(name, namespace, propagation_policy="Background")
    except ApiException as error:
        if is_status(error, 404):
            return False
        raise
    return True


# ------------------------------------------------------------------ CronJobs and Jobs


def apply_cronjob(desired: dict[str, Any]) -> bool:
    batch = kubernetes.client.BatchV1Api(client())
    return _apply_hashed(desired, batch.read_namespaced_cron_job, batch.patch_namespaced_cron_job,
                         batch.create_namespaced_cron_job)


def delete_owned_cronjob(namespace: str, name: str, policy_name: str) -> bool:
    batch = kubernetes.client.BatchV1Api(client())
    return _delete_owned(namespace, name, policy_name, batch.read_namespaced_cron_job,
                         batch.delete_namespaced_cron_job)


def create_job_once(job: dict[str, Any]) -> bool:
    """Create the Job; False when a Job of that name exists already (409 Conflict)."""
    batch = kubernetes.client.BatchV1Api(client())
    try:
        batch.create_namespaced_job(job["metadata"]["namespace"], job, field_manager=FIELD_MANAGER)
    except ApiException as error:
        if is_status(error, 409):
            return False
        raise
    return True


def annotate_job(namespace: str, name: str, annotations: dict[str, str], labels: dict[str, str] | None = None) -> None:
    """Merge-patch annotations (and labels) onto a Job. The recorded mark is set as a label too, so that the
    Jobs still to be recorded can be listed server-side (`!pgbackup.dev/recorded`)."""
    batch = kubernetes.client.BatchV1Api(client())
    labels = dict(labels or {})
    if ANNOTATION_RECORDED in annotations:
        labels[ANNOTATION_RECORDED] = annotations[ANNOTATION_RECORDED]
    metadata: dict[str, Any] = {"annotations": annotations}
    if labels:
        metadata["labels"] = labels
    batch.patch_namespaced_job(name, namespace, {"metadata": metadata}, _content_type=MERGE_PATCH)


def list_jobs_selected(selector: str, namespaces: tuple[str, ...] = (), chunk: int = 200) -> Iterator[dict[str, Any]]:
    """Jobs matching a label selector, in every namespace (or only in `namespaces`), read in chunks so that a
    large cluster is never held in memory at once."""
    batch = kubernetes.client.BatchV1Api(client())
    for namespace in namespaces or (None,):
        if namespace is None:
            yield from _chunked(batch.list_job_for_all_namespaces, label_selector=selector, limit=chunk)
        else:
            yield from _chunked(batch.list_namespaced_job, namespace, label_selector=selector, limit=chunk)


def job_pods(namespace: str, job_name: str) -> list[dict[str, Any]]:
    core = kubernetes.client.CoreV1Api(client())
    pods = _json(core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}", _preload_content=False))
    # Filtered again here: the label selector is the server's job, but an emulator may ignore it.
    return [pod for pod in pods.get("items") or []
            if (pod.get("metadata", {}).get("labels") or {}).get("job-name") == job_name]


def create_event(obj: dict[str, Any], type: str, reason: str, message: str) -> None:
    """A core/v1 Event on `obj`, as kopf posts them (for work that runs outside kopf's handlers)."""
    meta = obj.get("metadata") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    core = kubernetes.client.CoreV1Api(client())
    core.create_namespaced_event(meta["namespace"], {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid")},
        "type": type, "reason": reason, "message": message[:1024],
        "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }, _preload_content=False)


def list_cronjobs_selected(selector: str, namespaces: tuple[str, ...] = (), chunk: int = 200) -> Iterator[dict[str, Any]]:
    """CronJobs matching a label selector, in every namespace (or only in `namespaces`), read in chunks so that
    every CronJob of a large cluster is never held in memory at once."""
    batch = kubernetes.client.BatchV1Api(client())
    for namespace in namespaces or (None,):
        if namespace is None:
            yield from _chunked(batch.list_cron_job_for_all_namespaces, label_selector=selector, limit=chunk)
        else:
            yield from _chunked(batch.list_namespaced_cron_job, namespace, label_selector=selector, limit=chunk)


def _chunked(list_call: Callable[..., Any], *args: Any, **query: Any) -> Iterator[dict[str, Any]]:
    """The items of a list call, page by page (query's `limit`), following the server's continue token."""
    token: str | None = None
    while True:
        extra: dict[str, Any] = {"_continue": token} if token else {}
        page = _json(list_call(*args, _preload_content=False, **query, **extra))
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue") or None
        if not token:
            return


# ------------------------------------------------------------------ WAL streamer Deployment and Service


def apply_deployment(desired: dict[str, Any]) -> bool:
    apps = kubernetes.client.AppsV1Api(client())
    return _apply_hashed(desired, apps.read_namespaced_deployment, apps.patch_namespaced_deployment,
                         apps.create_namespaced_deployment)


def apply_service(desired: dict[str, Any]) -> bool:
    core = kubernetes.client.CoreV1Api(client())
    return _apply_hashed(desired, core.read_namespaced_service, core.patch_namespaced_service,
                         core.create_namespaced_service)


def delete_owned_deployment(namespace: str, name: str, policy_name: str) -> bool:
    apps = kubernetes.client.AppsV1Api(client())
    return _delete_owned(namespace, name, policy_name, apps.read_namespaced_deployment,
                         apps.delete_namespaced_deployment)


def delete_owned_service(namespace: str, name: str, policy_name: str) -> bool:
    core = kubernetes.client.CoreV1Api(client())
    return _delete_owned(namespace, name, policy_name, core.read_namespaced_service, core.delete_namespaced_service)


# ------------------------------------------------------------------ pgbackup.dev objects and their status

StatusChanges = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


def _get_custom(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    custom = kubernetes.client.CustomObjectsApi(client())
    try:
        return _json(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name,
                                                         _preload_content=False))
    except ApiException as error:
        if is_status(error, 404):
            return None
        raise


def _patch_status(plural: str, namespace: str, name: str, status: dict[str, Any], resource_version: str | None) -> None:
    """Merge-patch status through the status subresource; with a resourceVersion, a concurrent change
    makes the server answer 409 so the caller can re-read and retry instead of losing an update."""
    custom = kubernetes.client.CustomObjectsApi(client())
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, name, body,
                                                 _content_type=MERGE_PATCH)


def _update_status(kind: str, plural: str, namespace: str, name: str, changes: StatusChanges,
                   attempts: int) -> dict[str, Any] | None:
    """Read-modify-write of an object's status: `changes(obj, status)` returns the fields to merge-patch (empty:
    nothing to write). Several handlers write one object's status (`status.conditions` of a policy: the policy and
    the Job handlers; a RestoreRequest: the request and the restore-Job handlers), so each write carries the
    resourceVersion it was computed from and is retried, from a fresh read, on 409 Conflict.
    Returns the object as read, or None when it no longer exists."""
    for _attempt in range(attempts):
        obj = _get_custom(plural, namespace, name)
        if obj is None:
            return None
        patch = changes(obj, obj.get("status") or {})
        if not patch:
            return obj
        try:
            _patch_status(plural, namespace, name, patch, obj.get("metadata", {}).get("resourceVersion"))
            return obj
        except ApiException as error:
            if not is_status(error, 409):
                raise
    raise RuntimeError(f"{kind} {namespace}/{name} changed {attempts} times while its status was written")


# ------------------------------------------------------------------ BackupPolicies


def get_policy(namespace: str, name: str) -> dict[str, Any] | None:
    return _get_custom(POLICIES, namespace, name)


def list_policies(namespaces: tuple[str, ...] = (), chunk: int = 200) -> Iterator[dict[str, Any]]:
    """Every BackupPolicy (or those in `namespaces`), read in chunks like list_jobs_selected."""
    custom = kubernetes.client.CustomObjectsApi(client())
    for namespace in namespaces or (None,):
        if namespace is None:
            yield from _chunked(custom.list_cluster_custom_object, GROUP, VERSION, POLICIES, limit=chunk)
        else:
            yield from _chunked(custom.list_namespaced_custom_object, GROUP, VERSION, namespace, POLICIES,
                                limit=chunk)


def update_policy_status(namespace: str, name: str, changes: StatusChanges,
                         attempts: int = 5) -> dict[str, Any] | None:
    """Read-modify-write of a policy's status (see _update_status); None when the policy no longer exists."""
    return _update_status("BackupPolicy", POLICIES, namespace, name, changes, attempts)


def patch_policy_status(namespace: str, name: str, status: dict[str, Any], resource_version: str | None) -> None:
    """Merge-patch a policy's status; with a resourceVersion, a concurrent change is refused with 409."""
    _patch_status(POLICIES, namespace, name, status, resource_version)


# ------------------------------------------------------------------ RestoreRequests

RESTORES = "restorerequests"


def get_restore_request(namespace: str, name: str) -> dict[str, Any] | None:
    return _get_custom(RESTORES, namespace, name)


def update_restore_status(namespace: str, name: str, changes: StatusChanges,
                          attempts: int = 5) -> dict[str, Any] | None:
    """Read-modify-write of a RestoreRequest's status (see _update_status); None when it no longer exists."""
    return _update_status("RestoreRequest", RESTORES, namespace, name, changes, attempts)


# ------------------------------------------------------------------ quiesce (scale subresource) and hook logs

_SCALE_CALLS = {
    "Deployment": ("read_namespaced_deployment_scale", "patch_namespaced_deployment_scale"),
    "StatefulSet": ("read_namespaced_stateful_set_scale", "patch_namespaced_stateful_set_scale"),
}


def read_scale(namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    """The Scale of a Deployment / StatefulSet (spec.replicas, status.selector); None when it does not exist.
    A 403 (the chart's restoreQuiesce.enabled is off) is raised to the caller."""
    apps = kubernetes.client.AppsV1Api(client())
    try:
        return _json(getattr(apps, _SCALE_CALLS[kind][0])(name, namespace, _preload_content=False))
    except ApiException as error:
        if is_status(error, 404):
            return None
        raise


def patch_scale(namespace: str, kind: str, name: str, replicas: int) -> bool:
    """Set the replica count through the scale subresource; False when the workload no longer exists."""
    apps = kubernetes.client.AppsV1Api(client())
    try:
        getattr(apps, _SCALE_CALLS[kind][1])(name, namespace, {"spec": {"replicas": replicas}},
                                             _content_type=MERGE_PATCH, _preload_content=False)
    except ApiException as error:
        if is_status(error, 404):
            return False
        raise
    return True


def pods_matching(namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    core = kubernetes.client.CoreV1Api(client())
    selector = ",".join(f"{key}={value}" for key, value in labels.items())
    pods = _json(core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False))
    return list(pods.get("items") or [])


def read_pod_log_tail(namespace: str, pod: str, lines: int = 20) -> str | None:
    """The last lines of a pod's log (its first container), None when the log cannot be read (pod gone,
    no rights, a server that does not serve logs): callers treat the tail as a courtesy."""
    core = kubernetes.client.CoreV1Api(client())
    try:
        response = core.read_namespaced_pod_log(pod, namespace, tail_lines=lines, limit_bytes=16384,
                                                _preload_content=False)
    except ApiException:
        return None
    data = response.data
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return text


def list_jobs(namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Jobs with these labels (filtered again here: an emulator may ignore the selector)."""
    batch = kubernetes.client.BatchV1Api(client())
    selector = ",".join(f"{key}={value}" for key, value in labels.items())
    jobs = _json(batch.list_namespaced_job(namespace, label_selector=selector, _preload_content=False))
    return [job for job in jobs.get("items") or []
            if all((job.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in labels.items())]
