"""RestoreRequest handlers: validate, plan first (a `--dry-run` Job), then restore once, and report back.

Phases: Pending (waiting for the policy or its Secrets) -> Planning (plan Job) -> Running (restore Job) ->
Succeeded / Failed. Once a Job exists (status.jobName) the spec is frozen: the restore Job is built from the
request as the plan Job received it, and later edits only set the SpecChanged condition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

import kopf
from pydantic import ValidationError

from pgbackup.api import BackupPolicySpec
from pgbackup.api.base import GROUP
from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.builders.conditions import READY, Check, Status, set_condition
from pgbackup.builders.durations import duration
from pgbackup.builders.hooks import ANNOTATION_OWNER as ANNOTATION_HOOK_OWNER
from pgbackup.builders.hooks import COMPONENT as HOOK_COMPONENT
from pgbackup.builders.hooks import LABEL_HOOK_OWNER, hook_step
from pgbackup.builders.names import LABEL_COMPONENT
from pgbackup.builders.quiesce import PRE_RESTORE_HOOK, QUIESCING, requested_workloads
from pgbackup.builders.restore_job import (
    ANNOTATION_RESTORE_REQUEST,
    COMPONENT,
    LABEL_RESTORE_REQUEST,
    FrozenRequest,
    StepOutcome,
    build_restore_job,
    frozen_request,
    identity_problem,
    job_step,
    read_step_outcome,
    restore_secret_keys,
)
from pgbackup.builders.results import ANNOTATION_RECORDED, job_outcome, retries_note
from pgbackup.builders.validation import describe_validation_error
from pgbackup.builders.secrets import missing_secret_checks
from pgbackup.handlers import config, kube, posting, quiesce
from pgbackup.handlers.common import plain

SPEC_CHANGED = "SpecChanged"
SPEC_CHANGED_MESSAGE = "spec changed after the restore started; changes are ignored: create a new RestoreRequest"
_PLANNING_OR_BEFORE = frozenset({"Pending", "Planning"})
_STARTED_NOT_DONE = frozenset({"Planning", "Running"})

Ready = tuple[Status, str, str]


# ------------------------------------------------------------------ the request


@kopf.on.resume(GROUP, kube.RESTORES)
@kopf.on.create(GROUP, kube.RESTORES)
@kopf.on.update(GROUP, kube.RESTORES)
def reconcile_restore(
    body: kopf.Body, name: str, namespace: str | None, uid: str, meta: kopf.Meta, status: kopf.Status,
    logger: kopf.Logger, **_: Any,
) -> None:
    """Not started yet: spec valid, policy and Secrets there? Then create the plan Job (once).
    Started: report spec edits, act on none of them."""
    assert namespace is not None  # RestoreRequest is namespaced (CRD scope)
    generation = meta.get("generation")
    if status.get("jobName"):
        _report_spec_change(body, namespace, name, generation)
        return

    try:
        spec = RestoreRequestSpec.model_validate(plain(body.get("spec") or {}))
    except ValidationError as error:
        message = (f"RestoreRequest {namespace}/{name} is invalid, nothing was restored: "
                   f"{describe_validation_error(error)}. Fix the spec and apply it again.")
        _write_before_start(namespace, name, generation, "Failed", ("False", "InvalidSpec", message), error=message)
        raise kopf.PermanentError(message) from None

    policy_name = spec.policy_ref.name
    policy = kube.get_policy(namespace, policy_name)
    if policy is None:
        _wait(namespace, name, generation, Check(False, "PolicyNotFound",
              f"BackupPolicy {namespace}/{policy_name} (spec.policyRef.name) does not exist; create it or fix "
              f"spec.policyRef; the restore starts once the policy exists"))
    try:
        policy_spec = BackupPolicySpec.model_validate(plain(policy.get("spec") or {}))
    except ValidationError as error:
        _wait(namespace, name, generation, Check(False, "PolicyInvalid",
              f"BackupPolicy {namespace}/{policy_name} (spec.policyRef.name) is invalid: "
              f"{describe_validation_error(error)}; fix the policy, the restore waits for it"))
    problem = identity_problem(namespace, policy_name, policy_spec)
    if problem:
        _wait(namespace, name, generation, Check(False, "IdentitySecretMissing", problem))
    missing = kube.missing_secret_keys(namespace, restore_secret_keys(spec, policy_spec))
    if missing:
        _wait(namespace, name, generation, *missing_secret_checks(namespace, missing))

    request = FrozenRequest(name=name, namespace=namespace, uid=uid, spec=spec, policy_name=policy_name,
                            policy=policy_spec)
    job = build_restore_job(request, config.current().job_settings(), "plan")
    job_name = job["metadata"]["name"]
    if kube.create_job_once(job):
        logger.info(f"plan Job {namespace}/{job_name} created for backup {spec.backup!r} of policy {policy_name}")
    _write_before_start(namespace, name, generation, "Planning",
                        ("False", "Planning", f"Job {job_name} resolves backup {spec.backup!r} and inspects the "
                                              f"target; nothing is changed yet"),
                        jobName=job_name, error=None)


def _wait(namespace: str, name: str, generation: int | None, *failed: Check) -> NoReturn:
    """Stay Pending with the reason, and try again soon (kopf retries the handler)."""
    message = "; ".join(check.message for check in failed)
    _write_before_start(namespace, name, generation, "Pending", ("False", failed[0].reason, message), error=None)
    raise kopf.TemporaryError(message, delay=config.current().secret_retry_seconds)


def _write_before_start(namespace: str, name: str, generation: int | None, phase: str, ready: Ready,
                        **fields: Any) -> None:
    """Status while no Job exists; never overwrites what the Job handler wrote after a Job was created."""
    _update(namespace, name, lambda status: not status.get("jobName"), phase, ready,
            {"observedGeneration": generation, **fields})


def _report_spec_change(body: kopf.Body, namespace: str, name: str, generation: int | None) -> None:
    """An edit after a Job exists (generation above the one last seen) sets SpecChanged; nothing else happens."""
    reported = False

    def changes(_request: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        nonlocal reported
        seen = status.get("observedGeneration")
        reported = generation is not None and (seen is None or generation > seen)
        if not reported:
            return {}
        conditions = set_condition(list(status.get("conditions") or []), SPEC_CHANGED, "True",
                                   "SpecChangedAfterStart", SPEC_CHANGED_MESSAGE, generation, _now())
        return {"observedGeneration": generation, "conditions": conditions}

    kube.update_restore_status(namespace, name, changes)
    if reported:
        kopf.warn(body, reason=SPEC_CHANGED, message=SPEC_CHANGED_MESSAGE)


# ------------------------------------------------------------------ its Jobs


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_COMPONENT: COMPONENT, LABEL_RESTORE_REQUEST: kopf.PRESENT},
               annotations={ANNOTATION_RECORDED: kopf.ABSENT})
def record_restore_job(body: kopf.Body, type: str, name: str, namespace: str | None, logger: kopf.Logger,
                       **_: Any) -> None:
    """A finished plan Job: record the plan, then finish (failure, dry run) or create the restore Job.
    A finished restore Job: record the result. Each Job is marked recorded afterwards. A Job deleted before it
    finished fails the request (nothing else would ever move it on)."""
    job = plain(dict(body))
    deleted = type == "DELETED"
    if namespace is None or (job_outcome(job) is None and not deleted):
        return
    step = job_step(job)
    request_name = (job["metadata"].get("annotations") or {}).get(ANNOTATION_RESTORE_REQUEST)
    owner_uid = next((ref.get("uid") for ref in job["metadata"].get("ownerReferences") or []
                      if ref.get("kind") == "RestoreRequest"), None)
    if step is None or not request_name:
        return
    request = kube.get_restore_request(namespace, request_name)
    if request is None or request.get("metadata", {}).get("uid") != owner_uid:
        return  # its request is gone; garbage collection removes the Job
    outcome = read_step_outcome(job, kube.job_pods(namespace, name)) or StepOutcome(
        name, False, None, "JobDeleted",
        f"Job {namespace}/{name} was deleted before it finished, so it is unknown what it did; check the target "
        f"database, then create a new RestoreRequest")
    if step == "plan":
        _after_plan(request, job, outcome, logger)
    else:
        _after_restore(request, outcome, logger, job)
    if not deleted:
        kube.annotate_job(namespace, name, {ANNOTATION_RECORDED: "Succeeded" if outcome.succeeded else "Failed"})


def _after_plan(request: dict[str, Any], job: dict[str, Any], outcome: StepOutcome, logger: kopf.Logger) -> None:
    namespace, name = request["metadata"]["namespace"], request["metadata"]["name"]
    plan = outcome.summary.plan.to_wire() if outcome.summary and outcome.summary.plan else None
    if not outcome.succeeded:
        _fail(request, outcome, "plan", _PLANNING_OR_BEFORE, logger, plan=plan)
        return
    frozen = frozen_request(job)
    if frozen is None:
        broken = StepOutcome(outcome.job_name, False, outcome.summary, "InvalidPlanJob",
                             f"Job {outcome.job_name} does not carry the request it planned; delete this "
                             f"RestoreRequest and create it again")
        _fail(request, broken, "plan", _PLANNING_OR_BEFORE, logger, plan=plan)
        return
    what = _describe_plan(plan)
    if frozen.spec.dry_run:
        message = f"dry run: {what}; nothing was changed"
        if _update(namespace, name, _phase_in(_PLANNING_OR_BEFORE), "Succeeded", ("True", "RestorePlanned", message),
                   {"plan": plan, "error": None}):
            _post(request, "RestorePlanned", message, logger)
        return

    status = request.get("status") or {}
    if status.get("phase", "Pending") not in _PLANNING_OR_BEFORE:
        return  # the restore Job was created before (an event seen twice)
    workloads = requested_workloads(frozen.spec)
    if workloads:  # spec.quiesce: the timer below stops them; the phase stays Planning until the restore Job exists
        if not status.get("quiesce"):
            stopping = ", ".join(f"{w.kind} {w.name}" for w in workloads)
            _update(namespace, name, _phase_in(_PLANNING_OR_BEFORE), "Planning",
                    ("False", QUIESCING, f"{what}; first scaling {stopping} to zero (see condition Quiesced)"),
                    {"plan": plan, "error": None})
        return
    _start_after_plan(request, frozen, plan, logger)


def _start_after_plan(request: dict[str, Any], frozen: FrozenRequest, plan: dict[str, Any] | None,
                      logger: kopf.Logger) -> None:
    """The plan succeeded (and the workloads are down): the preRestore hook Job, or else the restore Job."""
    namespace, name = request["metadata"]["namespace"], request["metadata"]["name"]
    pre_restore = frozen.spec.hooks.pre_restore if frozen.spec.hooks else None
    if pre_restore is not None:  # the restore Job follows when the hook Job succeeded (record_restore_hook)
        hook_name = quiesce.start_hook(frozen, pre_restore, "pre-restore")
        message = f"preRestore hook Job {hook_name} runs before the restore Job: {_describe_plan(plan)}"
        _update(namespace, name, _phase_in(_PLANNING_OR_BEFORE), "Planning", ("False", PRE_RESTORE_HOOK, message),
                {"plan": plan, "error": None})
        quiesce.set_hooks_condition(namespace, name, "False", "PreRestoreRunning", f"Job {hook_name} runs")
        return
    _start_restore_job(request, frozen, plan, logger)


@kopf.timer(GROUP, kube.RESTORES, interval=quiesce.TICK_SECONDS, when=quiesce.needs_driving)
async def drive_quiesce(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
    """spec.quiesce, one state-machine tick (builders/quiesce.py: next_step): record, scale down, look for pods,
    then start the restore; scale back once the request ended. Runs only while there is something to do or to
    wait for; waiting is a look on the next tick, so no handler worker is held while pods stop."""
    if namespace is None:
        return
    try:
        await asyncio.to_thread(_drive_quiesce, namespace, name, logger)
    except Exception as error:  # noqa: BLE001 - the next tick tries again from what status says
        logger.warning(f"quiesce of RestoreRequest {namespace}/{name} did not advance: {error}; "
                       f"retrying in {quiesce.TICK_SECONDS:g}s")


def _drive_quiesce(namespace: str, name: str, logger: kopf.Logger) -> None:
    try:
        request = quiesce.advance(namespace, name)
        frozen = None if request is None else quiesce.planned_request(namespace, name, request["metadata"]["uid"])
        if request is not None and frozen is None:
            raise quiesce.QuiesceFailed("InvalidPlanJob", f"the plan Job of RestoreRequest {namespace}/{name} is "
                                        f"gone, so the restore Job cannot be built; create a new RestoreRequest",
                                        changed=True)
    except quiesce.QuiesceFailed as failure:
        # Failed first, then scale back: an operator stopped in between scales back on its next start.
        message = f"the restore did not start ({failure.reason}): {failure.message}"
        current = kube.get_restore_request(namespace, name)
        if current is not None and _update(namespace, name, _phase_in(_PLANNING_OR_BEFORE), "Failed",
                                           ("False", failure.reason, message), {"error": failure.message}):
            _post(current, "RestoreFailed", message, logger, warning=True)
        quiesce.scale_back(namespace, name)
        return
    if request is not None and frozen is not None:
        _start_after_plan(request, frozen, (request.get("status") or {}).get("plan"), logger)


def _start_restore_job(request: dict[str, Any], frozen: FrozenRequest, plan: dict[str, Any] | None,
                       logger: kopf.Logger) -> None:
    namespace, name = request["metadata"]["namespace"], request["metadata"]["name"]
    restore = build_restore_job(frozen, config.current().job_settings(), "restore")
    kube.create_job_once(restore)
    restore_name = restore["metadata"]["name"]
    message = f"restore Job {restore_name} started: {_describe_plan(plan)}"
    if _update(namespace, name, _phase_in(_PLANNING_OR_BEFORE), "Running", ("False", "Running", message),
               {"plan": plan, "jobName": restore_name, "error": None}):
        _post(request, "RestoreStarted", message, logger)


def _after_restore(request: dict[str, Any], outcome: StepOutcome, logger: kopf.Logger,
                   job: dict[str, Any] | None = None) -> None:
    namespace, name = request["metadata"]["namespace"], request["metadata"]["name"]
    summary = outcome.summary
    result = summary.result.to_wire() if summary and summary.result else None
    seconds = summary.result.restore_seconds if summary and summary.result else None
    fields: dict[str, Any] = {"result": result, "jobName": outcome.job_name,
                              "duration": None if seconds is None else duration(seconds)}
    if summary and summary.plan and not (request.get("status") or {}).get("plan"):
        fields["plan"] = summary.plan.to_wire()
    if not outcome.succeeded:
        quiesce.scale_back(namespace, name)  # before the final phase: an error leaves the Job to be recorded again
        _fail(request, outcome, "restore", _STARTED_NOT_DONE, logger, **fields)
        return
    plan = fields.get("plan") or (request.get("status") or {}).get("plan")
    checks = summary.result.checks if summary and summary.result else []
    message = (f"{_describe_plan(plan, done=True)}"
               + (f" in {fields['duration']}" if seconds is not None else "")
               + f" by Job {outcome.job_name}; {sum(c.passed for c in checks)}/{len(checks)} checks passed"
               + retries_note(summary, outcome.job_name))
    frozen = frozen_request(job) if job is not None else None
    post_restore = frozen.spec.hooks.post_restore if frozen is not None and frozen.spec.hooks else None
    if frozen is not None and post_restore is not None:  # Succeeded once the hook succeeded (record_restore_hook)
        hook_name = quiesce.start_hook(frozen, post_restore, "post-restore")
        _update(namespace, name, _phase_in(_STARTED_NOT_DONE), "Running",
                ("False", "PostRestoreHook", f"{message}; postRestore hook Job {hook_name} runs next"),
                {**fields, "error": None})
        quiesce.set_hooks_condition(namespace, name, "False", "PostRestoreRunning", f"Job {hook_name} runs")
        return
    quiesce.scale_back(namespace, name)
    if _update(namespace, name, _phase_in(_STARTED_NOT_DONE), "Succeeded", ("True", "RestoreSucceeded", message),
               {**fields, "error": None}):
        _post(request, "RestoreSucceeded", message, logger)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_COMPONENT: HOOK_COMPONENT, LABEL_HOOK_OWNER: kopf.PRESENT},
               annotations={ANNOTATION_RECORDED: kopf.ABSENT})
def record_restore_hook(body: kopf.Body, type: str, name: str, namespace: str | None, logger: kopf.Logger,
                        **_: Any) -> None:
    """A finished preRestore hook: start the restore Job, or fail (scaling back) with the hook's log tail.
    A finished postRestore hook: scale back, then Succeeded, or Failed with the hook's log tail."""
    job = plain(dict(body))
    deleted = type == "DELETED"
    step = hook_step(job)
    if namespace is None or step not in ("pre-restore", "post-restore") or (job_outcome(job) is None and not deleted):
        return
    request_name: str = (job["metadata"].get("annotations") or {}).get(ANNOTATION_HOOK_OWNER) or ""
    owner_uid = next((ref.get("uid") for ref in job["metadata"].get("ownerReferences") or []
                      if ref.get("kind") == "RestoreRequest"), None)
    request = kube.get_restore_request(namespace, request_name) if request_name else None
    if request is None or owner_uid is None or request.get("metadata", {}).get("uid") != owner_uid:
        return
    succeeded = job_outcome(job) == "Completed"
    hook = "preRestore" if step == "pre-restore" else "postRestore"
    if succeeded:
        quiesce.set_hooks_condition(namespace, request_name, "True", f"{hook[0].upper()}{hook[1:]}Succeeded",
                                    f"Job {name} succeeded")
    status = request.get("status") or {}
    if not succeeded:
        tail = quiesce.hook_log_tail(namespace, name) if not deleted else ""
        quiesce.scale_back(namespace, request_name)
        touched = "the database was not touched" if step == "pre-restore" else "the database WAS restored"
        message = (f"{hook} hook Job {name} failed ({touched}); fix the hook, then create a new RestoreRequest"
                   + (f"; log tail:\n{tail}" if tail else f"; see `kubectl logs job/{name}`"))
        reason = f"{hook[0].upper()}{hook[1:]}HookFailed"
        quiesce.set_hooks_condition(namespace, request_name, "False", reason, f"Job {name} failed")
        allowed = _PLANNING_OR_BEFORE if step == "pre-restore" else _STARTED_NOT_DONE
        if _update(namespace, request_name, _phase_in(allowed), "Failed", ("False", reason, message),
                   {"error": message}):
            _post(request, "RestoreFailed", message, logger, warning=True)
    elif step == "pre-restore":
        frozen = quiesce.planned_request(namespace, request_name, owner_uid)
        if frozen is None:
            quiesce.scale_back(namespace, request_name)
            message = (f"the plan Job of RestoreRequest {namespace}/{request_name} is gone, so the restore Job "
                       f"cannot be built; create a new RestoreRequest")
            if _update(namespace, request_name, _phase_in(_PLANNING_OR_BEFORE), "Failed",
                       ("False", "InvalidPlanJob", message), {"error": message}):
                _post(request, "RestoreFailed", message, logger, warning=True)
        else:
            _start_restore_job(request, frozen, status.get("plan"), logger)
    else:
        quiesce.scale_back(namespace, request_name)
        message = (f"{_describe_plan(status.get('plan'), done=True)} by Job {status.get('jobName')}; "
                   f"postRestore hook Job {name} succeeded")
        if _update(namespace, request_name, _phase_in(_STARTED_NOT_DONE), "Succeeded",
                   ("True", "RestoreSucceeded", message), {"error": None}):
            _post(request, "RestoreSucceeded", message, logger)
    if not deleted:
        kube.annotate_job(namespace, name, {ANNOTATION_RECORDED: "Succeeded" if succeeded else "Failed"})


def _fail(request: dict[str, Any], outcome: StepOutcome, step: str, allowed: frozenset[str], logger: kopf.Logger,
          **fields: Any) -> None:
    namespace, name = request["metadata"]["namespace"], request["metadata"]["name"]
    unchanged = " (nothing was changed)" if step == "plan" else ""
    message = f"{step} Job {outcome.job_name} failed{unchanged} ({outcome.reason}): {outcome.message}"
    if _update(namespace, name, _phase_in(allowed), "Failed", ("False", outcome.reason, message),
               {**fields, "error": outcome.message or outcome.reason}):
        _post(request, "RestoreFailed", message, logger, warning=True)


def _describe_plan(plan: dict[str, Any] | None, done: bool = False) -> str:
    backup = (plan or {}).get("backup") or "the backup"
    target = (plan or {}).get("target") or "the target"
    return f"backup {backup} {'restored' if done else 'to be restored'} into {target}"


def _post(request: dict[str, Any], reason: str, message: str, logger: kopf.Logger, warning: bool = False) -> None:
    posting.post(request, reason, message, warning=warning)  # also outside kopf (handlers/recording.py)
    logger.info(f"{reason}: {message}")


# ------------------------------------------------------------------ status


def _phase_in(phases: frozenset[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda status: (status.get("phase") or "Pending") in phases


def _update(namespace: str, name: str, allowed: Callable[[dict[str, Any]], bool], phase: str, ready: Ready,
            fields: dict[str, Any]) -> bool:
    """Write phase, Ready and `fields` (None removes a field) through the status subresource when `allowed`
    holds for the current status; only what changes is written. True when this call changed the phase."""
    changed_phase = False

    def changes(_request: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        nonlocal changed_phase
        changed_phase = False
        if not allowed(status):
            return {}
        ready_status, reason, message = ready
        generation = fields.get("observedGeneration", status.get("observedGeneration"))
        wanted = {
            "phase": phase,
            "conditions": set_condition(list(status.get("conditions") or []), READY, ready_status, reason, message,
                                        generation, _now()),
            **fields,
        }
        patch = {key: value for key, value in wanted.items() if status.get(key) != value}
        changed_phase = "phase" in patch
        return patch

    kube.update_restore_status(namespace, name, changes)
    return changed_phase


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
