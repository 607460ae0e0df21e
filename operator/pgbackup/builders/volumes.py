"""Application volumes in runner pods, and the pods that cannot get them.

Backup Jobs mount each BackupPolicy spec.volumes claim READ-ONLY at <APP_VOLUMES_ROOT>/<claimName>; restore
Jobs mount each RestoreRequest spec.volumes target claim read-write there. A ReadWriteOnce claim is attached to
one node at a time: while the application's pod uses it on another node, the Job's pod cannot start
(Multi-Attach error) and would sit Pending until activeDeadlineSeconds. `volume_problem` recognises that (and
the other ways a pod waits for its volumes) so the failure names the claim instead of saying 'DeadlineExceeded'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pgbackup.api import jobenv

Manifests = list[dict[str, Any]]

VOLUME_UNAVAILABLE = "VolumeUnavailable"
_MOUNT_EVENT_REASONS = {"FailedAttachVolume", "FailedMount"}
_SCHEDULING_SIGNS = ("volume node affinity conflict", "unbound immediate persistentvolumeclaims",
                     "persistentvolumeclaim", "multi-attach")
ACCESS_MODE_HINT = ("a ReadWriteOnce claim can be attached to one node at a time: run the Job on the node of the "
                    "pod using it (jobTemplate.nodeSelector / affinity), use a ReadWriteMany or ReadOnlyMany claim, "
                    "or a snapshot-cloned claim")


def app_volume_name(index: int) -> str:
    return f"app-volume-{index}"


def app_volume_mounts(claims: Sequence[str], *, read_only: bool) -> tuple[Manifests, Manifests, Manifests]:
    """Pod volumes, container mounts and env for application claims, each at <APP_VOLUMES_ROOT>/<claim>.
    A claim listed twice is mounted once."""
    unique = list(dict.fromkeys(claims))
    if not unique:
        return [], [], []
    volumes: Manifests = []
    mounts: Manifests = []
    for index, claim in enumerate(unique):
        source: dict[str, Any] = {"claimName": claim}
        if read_only:
            source["readOnly"] = True
        volumes.append({"name": app_volume_name(index), "persistentVolumeClaim": source})
        mount: dict[str, Any] = {"name": app_volume_name(index), "mountPath": f"{jobenv.APP_VOLUMES_ROOT}/{claim}"}
        if read_only:
            mount["readOnly"] = True
        mounts.append(mount)
    env = [{"name": jobenv.ENV_APP_VOLUMES_ROOT, "value": jobenv.APP_VOLUMES_ROOT}]
    return volumes, mounts, env


def _pod_claims(pod: dict[str, Any]) -> list[str]:
    return [str(v["persistentVolumeClaim"].get("claimName")) for v in pod.get("spec", {}).get("volumes") or []
            if isinstance(v.get("persistentVolumeClaim"), dict)]


def volume_problem(pod: dict[str, Any], events: Iterable[dict[str, Any]] = ()) -> str | None:
    """A clear message when a Pending pod waits for its volumes (from its PodScheduled condition, or from
    FailedAttachVolume / FailedMount / Multi-Attach events about it), else None."""
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    name = pod.get("metadata", {}).get("name", "?")
    claims = _pod_claims(pod)
    which = f" (claims: {', '.join(claims)})" if claims else ""
    for event in events:
        message = str(event.get("message") or "")
        if event.get("reason") in _MOUNT_EVENT_REASONS or "multi-attach error" in message.lower():
            return f"pod {name} cannot mount its volumes{which}: {message.strip()}; {ACCESS_MODE_HINT}"
    for condition in status.get("conditions") or []:
        message = str(condition.get("message") or "")
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and any(sign in message.lower() for sign in _SCHEDULING_SIGNS)):
            return (f"pod {name} cannot be scheduled because of its volumes{which}: {message.strip()}; "
                    f"check the claims exist and are bound, and that a node can reach them ({ACCESS_MODE_HINT})")
    return None


def stuck_volume_message(job: dict[str, Any], pods: Sequence[dict[str, Any]],
                         events: Iterable[dict[str, Any]] = ()) -> str | None:
    """Why a failed Job never ran: a pod's volume problem, or (its pods already gone) a Job that mounts
    application claims and stopped at its deadline before any container started."""
    events = list(events)
    for pod in pods:
        own = [e for e in events if (e.get("involvedObject") or {}).get("name") == pod.get("metadata", {}).get("name")]
        problem = volume_problem(pod, own)
        if problem:
            return problem
    template = job.get("spec", {}).get("template", {})
    claims = [c for c in _pod_claims(template) if c]
    app_claims = [v["persistentVolumeClaim"]["claimName"] for v in template.get("spec", {}).get("volumes") or []
                  if str(v.get("name", "")).startswith("app-volume-") and isinstance(v.get("persistentVolumeClaim"), dict)]
    deadline = any(c.get("type") == "Failed" and c.get("reason") == "DeadlineExceeded"
                   for c in job.get("status", {}).get("conditions") or [])
    started = any(s.get("state", {}).get("running") or s.get("state", {}).get("terminated")
                  or s.get("lastState", {}).get("terminated")
                  for pod in pods for s in pod.get("status", {}).get("containerStatuses") or [])
    if deadline and app_claims and not started:
        return (f"the Job's pod never started before activeDeadlineSeconds; it mounts the claims "
                f"{', '.join(claims)}: check they are bound and can be attached to the pod's node "
                f"(`kubectl describe pod` shows FailedAttachVolume / Multi-Attach errors); {ACCESS_MODE_HINT}")
    return None
