"""The quiesce state machine (builders/quiesce.py): the next step from the RestoreRequest alone, so that an
operator stopped anywhere continues, and never leaves a workload at zero once the request ended or is deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pgbackup.builders.quiesce import Step, Workload, after_scale_down, next_step, state_of

FINALIZER = "pgbackup.dev/kopf-finalizer"
NOW = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC)
WEB = {"kind": "Deployment", "name": "web", "replicas": 3, "restored": False}


def body(phase: str = "Planning", ready: str | None = "Quiescing", quiesced: str | None = None,
         entries: list[dict[str, Any]] | None = None, protected: bool = True, deleting: bool = False,
         since: datetime = NOW) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "False", "reason": ready}] if ready else []
    if quiesced:
        conditions.append({"type": "Quiesced", "status": "True" if quiesced == "ScaledDown" else "False",
                           "reason": quiesced, "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ")})
    meta: dict[str, Any] = {"name": "r", "finalizers": [FINALIZER] if protected else []}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-02T09:00:00Z"
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions, "quiesce": entries}}


@pytest.mark.parametrize(("request_body", "step"), [
    # no quiesce at all, or the plan not done yet
    (body(ready="Planning"), Step.IDLE),
    (body(phase="Running", ready="Running"), Step.IDLE),
    # the plan succeeded: protect the request first, then record, then scale down until the pods are gone
    (body(protected=False), Step.WAIT_FOR_FINALIZER),
    (body(), Step.RECORD),
    (body(quiesced="ScalingDown", entries=[WEB]), Step.SCALE_DOWN),
    (body(quiesced="ScaledDown", entries=[WEB]), Step.PROCEED),
    # the hook or the restore Job runs: the workloads stay down
    (body(ready="PreRestoreHook", quiesced="ScaledDown", entries=[WEB]), Step.IDLE),
    (body(phase="Running", ready="Running", quiesced="ScaledDown", entries=[WEB]), Step.IDLE),
    # recorded by an operator that scaled inside the plan-Job handler and stopped there
    (body(ready="Planning", quiesced="ScalingDown", entries=[WEB]), Step.SCALE_DOWN),
    # ended, failed or deleted with a workload down: scale back; once back, nothing
    (body(phase="Succeeded", ready="RestoreSucceeded", entries=[WEB]), Step.SCALE_BACK),
    (body(phase="Failed", ready="QuiesceTimeout", entries=[WEB]), Step.SCALE_BACK),
    (body(phase="Running", ready="Running", entries=[WEB], deleting=True), Step.SCALE_BACK),
    (body(deleting=True), Step.IDLE),
    (body(phase="Failed", ready="QuiesceTimeout", entries=[{**WEB, "restored": True}]), Step.IDLE),
])
def test_next_step_from_the_request_alone(request_body: dict[str, Any], step: Step) -> None:
    assert next_step(state_of(request_body, FINALIZER)) is step


def test_pods_are_waited_for_until_the_deadline_counted_from_the_scale_down() -> None:
    web = Workload("Deployment", "web")
    state = state_of(body(quiesced="ScalingDown", entries=[WEB]), FINALIZER)
    assert state.scaling_since == NOW
    assert after_scale_down(state, {web: []}, NOW + timedelta(seconds=1), 300) == "scaled-down"
    assert after_scale_down(state, {web: ["web-1"]}, NOW + timedelta(seconds=299), 300) == "waiting"
    assert after_scale_down(state, {web: ["web-1"]}, NOW + timedelta(seconds=300), 300) == "timed-out"
