"""Quiesce around an overwrite restore, as pure functions: which workloads, what to record, what is left to
scale back, the pods that must be gone before the restore Job starts, and the state machine that drives it
from the RestoreRequest's status (`next_step`). The API calls are in handlers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pgbackup.api.restore import RestoreRequestSpec

Kind = Literal["Deployment", "StatefulSet"]

QUIESCED = "Quiesced"  # condition type on the RestoreRequest
QUIESCING = "Quiescing"  # Ready reason while the workloads are stopped before the restore (phase Planning)
SCALING_DOWN, SCALED_DOWN, SCALED_BACK = "ScalingDown", "ScaledDown", "ScaledBack"  # Quiesced reasons
PRE_RESTORE_HOOK = "PreRestoreHook"  # Ready reason once the preRestore hook Job was started
FINAL_PHASES = frozenset({"Succeeded", "Failed"})
ENABLE_HINT = ("the operator may not scale workloads: install the chart with restoreQuiesce.enabled=true (it grants "
               "get/patch on deployments/scale and statefulsets/scale), then create the RestoreRequest again")


@dataclass(frozen=True)
class Workload:
    kind: Kind
    name: str

    @property
    def field(self) -> str:
        return "spec.quiesce.deployments" if self.kind == "Deployment" else "spec.quiesce.statefulSets"


def requested_workloads(spec: RestoreRequestSpec) -> list[Workload]:
    """The workloads to stop: only for an overwrite restore (a restore into a new database leaves the
    application's database alone, so nothing needs stopping) and never for a dry run."""
    if spec.quiesce is None or not spec.target.overwrite or spec.dry_run:
        return []
    return ([Workload("Deployment", name) for name in dict.fromkeys(spec.quiesce.deployments)]
            + [Workload("StatefulSet", name) for name in dict.fromkeys(spec.quiesce.stateful_sets)])


def replicas_of(scale: dict[str, Any]) -> int:
    """spec.replicas of a Scale (or of the workload itself); an unset count means 1, as the API server defaults."""
    value = (scale.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def selector_of(scale: dict[str, Any]) -> dict[str, str]:
    """The workload's pod labels (equality selector): from a Scale's status.selector ('a=b,c=d') or, where the
    answer is the workload itself, from spec.selector.matchLabels."""
    text = (scale.get("status") or {}).get("selector")
    if isinstance(text, str) and text:
        pairs = (part.split("=", 1) for part in text.split(",") if "=" in part)
        return {key.strip().rstrip("="): value.strip() for key, value in pairs}
    return dict(((scale.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def record(workloads: list[Workload], scales: dict[Workload, dict[str, Any]]) -> list[dict[str, Any]]:
    """status.quiesce: each workload with the replica count it gets back."""
    return [{"kind": w.kind, "name": w.name, "replicas": replicas_of(scales[w]), "restored": False}
            for w in workloads]


def to_scale_back(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Recorded workloads not yet scaled back."""
    return [dict(entry) for entry in status.get("quiesce") or [] if not entry.get("restored")]


def mark_restored(recorded: list[dict[str, Any]], done: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """status.quiesce with the (kind, name) pairs in `done` marked restored."""
    return [{**entry, "restored": bool(entry.get("restored")) or (entry["kind"], entry["name"]) in done}
            for entry in recorded]


def running_pods(pods: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """Names of the pods (matching `labels`) that are not finished yet."""
    if not labels:
        return []
    return [pod["metadata"]["name"] for pod in pods
            if all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


# ------------------------------------------------------------------ the state machine


class Step(Enum):
    """What the operator does next for a RestoreRequest's quiesce (one timer tick may take several steps)."""

    IDLE = "idle"  # nothing to do: no quiesce, or the workloads stay down while the restore runs
    WAIT_FOR_FINALIZER = "wait-for-finalizer"  # nothing is scaled before the request is protected from deletion
    RECORD = "record"  # read the replica counts and write them to status.quiesce, before anything is scaled
    SCALE_DOWN = "scale-down"  # scale the recorded workloads to zero and look for their pods (until none is left)
    PROCEED = "proceed"  # the pods are gone: start the preRestore hook or the restore Job
    SCALE_BACK = "scale-back"  # the request ended (or is being deleted): give every workload its count back


@dataclass(frozen=True)
class QuiesceState:
    """The facts `next_step` decides on, all read from the RestoreRequest itself."""

    phase: str
    ready_reason: str | None
    quiesced_reason: str | None
    scaling_since: datetime | None
    """When the scale-down began (the Quiesced condition's lastTransitionTime): the pods' deadline counts from it."""
    recorded: tuple[tuple[str, str, bool], ...]
    """(kind, name, restored) of each entry of status.quiesce."""
    deleting: bool
    protected: bool
    """The request carries the operator's finalizer, so it cannot disappear while workloads are down."""

    @property
    def unrestored(self) -> bool:
        return any(not restored for _kind, _name, restored in self.recorded)


def state_of(request: Mapping[str, Any], finalizer: str) -> QuiesceState:
    meta = request.get("metadata") or {}
    status = request.get("status") or {}
    conditions = status.get("conditions") or []
    ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    quiesced: dict[str, Any] = next((c for c in conditions if c.get("type") == QUIESCED), {})
    since = quiesced.get("lastTransitionTime") if quiesced.get("reason") == SCALING_DOWN else None
    return QuiesceState(
        phase=status.get("phase") or "Pending",
        ready_reason=ready.get("reason"),
        quiesced_reason=quiesced.get("reason"),
        scaling_since=parse_time(since) if isinstance(since, str) else None,
        recorded=tuple((str(e.get("kind")), str(e.get("name")), bool(e.get("restored")))
                       for e in status.get("quiesce") or []),
        deleting=bool(meta.get("deletionTimestamp")),
        protected=finalizer in (meta.get("finalizers") or []),
    )


def next_step(state: QuiesceState) -> Step:
    """The next step, from the request alone, so that an operator that stopped anywhere continues where it was.
    Workloads recorded and not yet restored are scaled back as soon as the request ends or is being deleted."""
    if state.deleting or state.phase in FINAL_PHASES:
        return Step.SCALE_BACK if state.unrestored else Step.IDLE
    # Stopping the workloads: the plan succeeded (Ready Quiescing), or, for a request recorded by an operator
    # version that scaled inside the plan-Job handler, counts recorded and neither hook nor restore Job started.
    quiescing = state.ready_reason == QUIESCING or (bool(state.recorded) and state.ready_reason != PRE_RESTORE_HOOK)
    if state.phase != "Planning" or not quiescing:
        return Step.IDLE
    if not state.protected:
        return Step.WAIT_FOR_FINALIZER
    if not state.recorded:
        return Step.RECORD
    if state.quiesced_reason == SCALED_DOWN:
        return Step.PROCEED
    return Step.SCALE_DOWN


WaitOutcome = Literal["scaled-down", "waiting", "timed-out"]


def after_scale_down(state: QuiesceState, pods_left: Mapping[Workload, list[str]], now: datetime,
                     timeout_seconds: float) -> WaitOutcome:
    """Once the workloads are at zero: their pods gone, still stopping (look again on the next tick), or still
    running `timeout_seconds` after the scale-down began."""
    if not any(pods_left.values()):
        return "scaled-down"
    since = state.scaling_since or now
    return "timed-out" if (now - since).total_seconds() >= timeout_seconds else "waiting"


def describe_pods_left(pods_left: Mapping[Workload, list[str]]) -> str:
    """'Deployment web: web-1, web-2; ...' (at most 5 pods named per workload)."""
    parts = []
    for workload, pods in pods_left.items():
        if pods:
            more = f" and {len(pods) - 5} more" if len(pods) > 5 else ""
            parts.append(f"{workload.kind} {workload.name}: {', '.join(pods[:5])}{more}")
    return "; ".join(parts)


def recorded_workloads(status: Mapping[str, Any]) -> list[Workload]:
    """The workloads of status.quiesce (what was recorded is what is scaled: the spec is frozen by then)."""
    return [Workload(entry["kind"], entry["name"]) for entry in status.get("quiesce") or []
            if entry.get("kind") in ("Deployment", "StatefulSet")]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
