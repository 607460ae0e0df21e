"""Quiesce around an overwrite restore, as pure functions: which workloads, what to record, what is left to
scale back, and the pods that must be gone before the restore Job starts. The API calls are in handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pgbackup.api.restore import RestoreRequestSpec

Kind = Literal["Deployment", "StatefulSet"]

QUIESCED = "Quiesced"  # condition type on the RestoreRequest
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
