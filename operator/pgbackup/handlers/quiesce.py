"""Stop the workloads named in a RestoreRequest's spec.quiesce before an overwrite restore and put them back
afterwards, whatever the outcome, as a state machine read from the request (builders/quiesce.py: next_step).

Each step is driven by a timer (handlers/restore.py: drive_quiesce) and resumable: the replica counts are written
to status.quiesce BEFORE anything is scaled, each workload is marked `restored` only after it was scaled back,
and waiting for pods to stop is a look on every tick, never a sleep inside a handler. While workloads are down
the request carries the operator's finalizer (kopf adds it while the timer or the deletion handler below
applies, and removes it once every workload is back), so deleting the request scales them back first.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from pgbackup.api.base import GROUP
from pgbackup.api.hooks import HookSpec
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.builders.conditions import set_condition
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME
from pgbackup.builders.hooks import HookStep, build_hook_job, log_tail
from pgbackup.builders.names import LABEL_COMPONENT, LABEL_POLICY, label_value
from pgbackup.builders.quiesce import (
    ENABLE_HINT,
    QUIESCED,
    SCALED_BACK,
    SCALED_DOWN,
    SCALING_DOWN,
    QuiesceState,
    Step,
    Workload,
    after_scale_down,
    describe_pods_left,
    mark_restored,
    next_step,
    record,
    recorded_workloads,
    replicas_of,
    requested_workloads,
    running_pods,
    selector_of,
    state_of,
    to_scale_back,
)
from pgbackup.builders.restore_job import LABEL_RESTORE_REQUEST, FrozenRequest, frozen_request, job_step
from pgbackup.builders.results import ANNOTATION_RECORDED
from pgbackup.handlers import config, kube
from pgbackup.handlers.common import plain
from pgbackup.handlers.startup import FINALIZER

TIMEOUT_ENV = "PGBACKUP_QUIESCE_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 300.0
TICK_SECONDS = 2.0  # how often a quiesce in progress is looked at (pods gone? request ended?)
_STEPS_PER_TICK = 4  # record -> scale down -> proceed, and one to spare


class QuiesceFailed(Exception):
    """The restore must not start; `message` says why and what to do. `changed` is False when nothing was
    scaled (the workloads run as before)."""

    def __init__(self, reason: str, message: str, changed: bool) -> None:
        super().__init__(message)
        self.reason, self.message, self.changed = reason, message, changed


def timeout_seconds() -> float:
    return float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_SECONDS)


def needs_driving(body: kopf.Body, **_: Any) -> bool:
    """Filter of the quiesce timer: a step is to be taken (or waited for) for this request."""
    return next_step(state_of(plain(dict(body)), FINALIZER)) is not Step.IDLE


def holds_workloads(status: kopf.Status, **_: Any) -> bool:
    """Filter of the deletion handler: workloads recorded and not yet scaled back."""
    return bool(to_scale_back(plain(dict(status))))


def advance(namespace: str, name: str) -> dict[str, Any] | None:
    """Take the steps that can be taken now (each re-reads the request: it is the state). Returns the request
    once its workloads are down and their pods gone (Step.PROCEED: the caller starts the preRestore hook or the
    restore Job); None when there is nothing to do or something to wait for (the next tick looks again).
    Raises QuiesceFailed when the restore must not start: the caller fails the request, then scale_back()."""
    for _step in range(_STEPS_PER_TICK):
        request = kube.get_restore_request(namespace, name)
        if request is None:
            return None
        state = state_of(request, FINALIZER)
        step = next_step(state)
        if step is Step.RECORD:
            _record(namespace, name, request)
        elif step is Step.SCALE_DOWN:
            if not _scale_down(namespace, name, request, state):
                return None
        elif step is Step.PROCEED:
            return request
        elif step is Step.SCALE_BACK:
            scale_back(namespace, name)
            return None
        else:  # IDLE, or WAIT_FOR_FINALIZER (kopf adds it on the event that made the timer apply)
            return None
    return None


def _record(namespace: str, name: str, request: dict[str, Any]) -> None:
    """Step.RECORD: the replica counts of the workloads the plan Job froze, into status.quiesce (only if nothing
    was recorded yet: counts read after a scale-down would be 0)."""
    frozen = planned_request(namespace, name, request.get("metadata", {}).get("uid", ""))
    if frozen is None:
        raise QuiesceFailed("InvalidPlanJob", f"the plan Job of RestoreRequest {namespace}/{name} is gone, so the "
                            f"workloads to stop are unknown; nothing was changed: create a new RestoreRequest",
                            changed=False)
    workloads = requested_workloads(frozen.spec)
    scales = {}
    for workload in workloads:
        scale = _read(namespace, name, workload)
        if scale is None:
            raise QuiesceFailed("QuiesceTargetNotFound",
                                f"{workload.kind} {namespace}/{workload.name} ({workload.field}) does not exist; "
                                f"nothing was changed: fix spec.quiesce and create a new RestoreRequest",
                                changed=False)
        scales[workload] = scale
    _write(namespace, name, {"quiesce": record(workloads, scales)},
           ("False", SCALING_DOWN, _names(workloads, "scaling to zero: ")), only_if_unrecorded=True)


def _scale_down(namespace: str, name: str, request: dict[str, Any], state: QuiesceState) -> bool:
    """Step.SCALE_DOWN: every recorded workload to zero (again: something may have scaled it up), then its pods.
    True when none is left (Quiesced True); False while they stop. Raises QuiesceFailed on a workload that
    is gone or may not be scaled, and once the pods outlive PGBACKUP_QUIESCE_TIMEOUT_SECONDS."""
    workloads = recorded_workloads(request.get("status") or {})
    selectors: dict[Workload, dict[str, str]] = {}
    for workload in workloads:
        scale = _read(namespace, name, workload)
        if scale is None:
            raise QuiesceFailed("QuiesceTargetNotFound", f"{workload.kind} {namespace}/{workload.name} "
                                f"({workload.field}) disappeared while it was scaled down; the others were scaled "
                                f"back; create a new RestoreRequest", changed=True)
        selectors[workload] = selector_of(scale)
        if replicas_of(scale) != 0:
            _scale(namespace, name, workload, 0)
    fresh = kube.get_restore_request(namespace, name)
    if fresh is None or (fresh.get("metadata") or {}).get("deletionTimestamp"):
        # Deleted while this step ran: the deletion handler may have scaled back (and marked it) before the
        # lines above, so give every recorded count back again (the handler, if still to run, does the same).
        for entry in (request.get("status") or {}).get("quiesce") or []:
            kube.patch_scale(namespace, entry["kind"], entry["name"], int(entry["replicas"]))
        return False
    left = {w: running_pods(kube.pods_matching(namespace, selectors[w]), selectors[w]) for w in workloads}
    now = datetime.now(UTC)
    outcome = after_scale_down(state, left, now, timeout_seconds())
    if outcome == "scaled-down":
        _write(namespace, name, {}, ("True", SCALED_DOWN, _names(workloads, "scaled to zero, no pods left: ")))
        return True
    if outcome == "timed-out":
        raise QuiesceFailed("QuiesceTimeout", f"pods still running {timeout_seconds():.0f}s after scaling to zero "
                            f"({describe_pods_left(left)}); the workloads were scaled back and nothing was "
                            f"restored: check why the pods do not stop (finalizers, long "
                            f"terminationGracePeriodSeconds), then create a new RestoreRequest", changed=True)
    deadline = (state.scaling_since or now) + timedelta(seconds=timeout_seconds())
    _write(namespace, name, {}, ("False", SCALING_DOWN, f"scaled to zero, waiting until "
                                 f"{deadline.strftime('%H:%M:%SZ')} for pods to stop: {describe_pods_left(left)}"))
    return False


def scale_back(namespace: str, name: str) -> list[str]:
    """Scale every recorded, not yet restored workload back to its recorded count and mark it restored.
    Returns 'Kind name=replicas' for each. A workload deleted meanwhile counts as done (there is nothing to
    give back); other API errors propagate, leaving the entry for the next attempt."""
    request = kube.get_restore_request(namespace, name)
    if request is None:
        return []
    pending = to_scale_back(request.get("status") or {})
    done: set[tuple[str, str]] = set()
    for entry in pending:
        kube.patch_scale(namespace, entry["kind"], entry["name"], int(entry["replicas"]))
        done.add((entry["kind"], entry["name"]))
    if done:
        described = ", ".join(f"{e['kind']} {e['name']}={e['replicas']}" for e in pending)
        _write(namespace, name, {}, ("False", SCALED_BACK, f"scaled back to the recorded replicas: {described}"),
               restored=done)
    return [f"{e['kind']} {e['name']}={e['replicas']}" for e in pending]


@kopf.on.delete(GROUP, kube.RESTORES, when=holds_workloads)
def scale_back_before_deletion(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
    """A RestoreRequest deleted while its workloads are down: scale them back first. The operator's finalizer
    holds the request until this succeeded; kopf removes it afterwards."""
    if namespace is None:
        return
    try:
        restored = scale_back(namespace, name)
    except ApiException as error:
        raise kopf.TemporaryError(f"RestoreRequest {namespace}/{name} is being deleted, but its workloads could "
                                  f"not be scaled back yet ({error.status} {error.reason}); retrying. If the "
                                  f"operator may no longer scale (restoreQuiesce.enabled off), scale them back by "
                                  f"hand (status.quiesce has the counts) and remove the finalizer {FINALIZER}",
                                  delay=5 * TICK_SECONDS) from None
    if restored:
        logger.info(f"scaled back before the RestoreRequest is deleted: {', '.join(restored)}")


# ------------------------------------------------------------------ hooks

HOOKS = "Hooks"  # condition type on the RestoreRequest


def start_hook(request: FrozenRequest, hook: HookSpec, step: HookStep) -> str:
    """Create the hook Job (once: the name is fixed per request and step); returns its name."""
    job = build_hook_job(hook, step, namespace=request.namespace, policy_name=request.policy_name,
                         owner_kind="RestoreRequest", owner_name=request.name, owner_uid=request.uid,
                         settings=config.current().job_settings())
    kube.create_job_once(job)
    name: str = job["metadata"]["name"]
    return name


def planned_request(namespace: str, name: str, uid: str) -> FrozenRequest | None:
    """The request as its plan Job froze it (for the restore Job created after a preRestore hook)."""
    for job in kube.list_jobs(namespace, {LABEL_RESTORE_REQUEST: label_value(name)}):
        owners = job.get("metadata", {}).get("ownerReferences") or []
        if job_step(job) == "plan" and any(ref.get("uid") == uid for ref in owners):
            return frozen_request(job)
    return None


def hook_log_tail(namespace: str, job_name: str) -> str:
    """The end of the hook's log (best effort: '' when it cannot be read), for the failure message.
    Hooks must not print secrets: this text lands in status and Events."""
    pods = sorted(kube.job_pods(namespace, job_name),
                  key=lambda pod: pod.get("metadata", {}).get("creationTimestamp") or "", reverse=True)
    for pod in pods:
        text = kube.read_pod_log_tail(namespace, pod["metadata"]["name"])
        if text:
            return log_tail(text)
    return ""


def set_hooks_condition(namespace: str, name: str, state: str, reason: str, message: str) -> None:
    _write(namespace, name, {}, (state, reason, message), condition_type=HOOKS)


# ------------------------------------------------------------------ postBackup hook

ANNOTATION_POST_BACKUP = "pgbackup.dev/post-backup-hook"  # on the backup Job: its hook Job was created
POST_BACKUP_WINDOW_SECONDS = 3600  # older recorded Jobs (e.g. after adding a hook) get no hook run


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_POLICY: kopf.PRESENT, LABEL_COMPONENT: "backup"},
               annotations={ANNOTATION_RECORDED: kopf.PRESENT, ANNOTATION_POST_BACKUP: kopf.ABSENT})
def run_post_backup_hook(body: kopf.Body, type: str, name: str, namespace: str | None, logger: kopf.Logger,
                         **_: Any) -> None:
    """Once a backup Job has been recorded (handlers/jobs.py): the policy's postBackup hook as its own Job,
    owned by the backup Job, with PGBACKUP_BACKUP_PHASE=Completed|Failed. Only for Jobs that finished within the
    last hour, so adding a hook to a policy does not run it for old Jobs."""
    job = plain(dict(body))
    annotations = job["metadata"].get("annotations") or {}
    policy_name = annotations.get(ANNOTATION_POLICY_NAME)
    if type == "DELETED" or namespace is None or not policy_name or not _finished_recently(job):
        return
    policy = kube.get_policy(namespace, policy_name)
    try:
        spec = BackupPolicySpec.model_validate(plain((policy or {}).get("spec") or {}))
    except ValidationError:
        return  # the policy handler reports an invalid spec
    hook = spec.hooks.post_backup if spec.hooks else None
    if hook is None:
        return
    phase = annotations.get(ANNOTATION_RECORDED) or "Unknown"
    hook_job = build_hook_job(hook, "post-backup", namespace=namespace, policy_name=policy_name, owner_kind="Job",
                              owner_name=name, owner_uid=job["metadata"].get("uid", name),
                              settings=config.current().job_settings(), owner_api_version="batch/v1",
                              extra_env=[{"name": "PGBACKUP_HOOK", "value": "post-backup"},
                                         {"name": "PGBACKUP_BACKUP_JOB", "value": name},
                                         {"name": "PGBACKUP_BACKUP_PHASE", "value": phase}])
    hook_job["metadata"]["ownerReferences"][0]["controller"] = False
    if kube.create_job_once(hook_job):
        logger.info(f"postBackup hook Job {namespace}/{hook_job['metadata']['name']} created for {name} ({phase})")
    kube.annotate_job(namespace, name, {ANNOTATION_POST_BACKUP: hook_job["metadata"]["name"]})


def _finished_recently(job: dict[str, Any]) -> bool:
    times = [c.get("lastTransitionTime") for c in (job.get("status") or {}).get("conditions") or []
             if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"]
    stamp = next((t for t in times if t), None)
    if stamp is None:
        return True  # no time given (an emulator): a recorded Job without a time is taken as new
    finished = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (datetime.now(UTC) - finished).total_seconds() <= POST_BACKUP_WINDOW_SECONDS


# ------------------------------------------------------------------ helpers


def _read(namespace: str, name: str, workload: Workload) -> dict[str, Any] | None:
    try:
        return kube.read_scale(namespace, workload.kind, workload.name)
    except ApiException as error:
        if kube.is_status(error, 403):
            raise QuiesceFailed("QuiesceForbidden", f"RestoreRequest {namespace}/{name} asks to scale "
                                f"{workload.kind} {workload.name} ({workload.field}), but {ENABLE_HINT}",
                                changed=False) from None
        raise


def _scale(namespace: str, name: str, workload: Workload, replicas: int) -> None:
    try:
        found = kube.patch_scale(namespace, workload.kind, workload.name, replicas)
    except ApiException as error:
        if kube.is_status(error, 403):
            raise QuiesceFailed("QuiesceForbidden", f"RestoreRequest {namespace}/{name}: scaling {workload.kind} "
                                f"{workload.name} was refused: {ENABLE_HINT}", changed=True) from None
        raise
    if not found:
        raise QuiesceFailed("QuiesceTargetNotFound", f"{workload.kind} {namespace}/{workload.name} "
                            f"({workload.field}) disappeared while it was scaled down; the others were scaled "
                            f"back; create a new RestoreRequest", changed=True)


def _names(workloads: list[Workload], prefix: str) -> str:
    return prefix + ", ".join(f"{w.kind} {w.name}" for w in workloads)


def _write(namespace: str, name: str, fields: dict[str, Any], quiesced: tuple[str, str, str],
           only_if_unrecorded: bool = False, restored: set[tuple[str, str]] | None = None,
           condition_type: str = QUIESCED) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def changes(request: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        if only_if_unrecorded and status.get("quiesce"):
            return {}
        patch = dict(fields)
        if restored:
            patch["quiesce"] = mark_restored(list(status.get("quiesce") or []), restored)
        state, reason, message = quiesced
        patch["conditions"] = set_condition(list(status.get("conditions") or []), condition_type, state, reason,  # type: ignore[arg-type]
                                            message, request.get("metadata", {}).get("generation"), now)
        return {key: value for key, value in patch.items() if status.get(key) != value}  # only what changes

    kube.update_restore_status(namespace, name, changes)
