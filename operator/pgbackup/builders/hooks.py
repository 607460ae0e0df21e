"""Hook containers (HookSpec) as Kubernetes manifests: the Job of a pre/post-restore or post-backup hook and
the init container of a pre-backup hook. Env comes from plain values or Secret references (never values)."""

from __future__ import annotations

from typing import Any, Literal

from pgbackup.api.hooks import HookEnvVar, HookSpec
from pgbackup.builders.names import JOB_NAME_MAX, label_value, policy_labels, short_hash
from pgbackup.builders.pod import JOB_TTL_SECONDS, RUN_AS_USER, JobSettings, owner_reference

HookStep = Literal["pre-restore", "post-restore", "post-backup"]
COMPONENT = "hook"
ANNOTATION_HOOK = "pgbackup.dev/hook"
ANNOTATION_OWNER = "pgbackup.dev/hook-owner"  # full name of the RestoreRequest / backup Job it belongs to
LABEL_HOOK_OWNER = "pgbackup.dev/hook-owner"
CONTAINER_NAME = "hook"
PRE_BACKUP_CONTAINER = "pre-backup-hook"
HOOK_STEPS: tuple[HookStep, ...] = ("pre-restore", "post-restore", "post-backup")

CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def hook_env(env: list[HookEnvVar]) -> list[dict[str, Any]]:
    """Plain values as they are; secretKeyRef as valueFrom, so the value stays in the Secret."""
    return [
        {"name": var.name, "valueFrom": {"secretKeyRef": {"name": var.secret_key_ref.name,
                                                          "key": var.secret_key_ref.key}}}
        if var.secret_key_ref is not None else {"name": var.name, "value": var.value or ""}
        for var in env
    ]


def hook_container(hook: HookSpec, name: str = CONTAINER_NAME,
                   extra_env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The hook's container, locked down like the runner's (writable /tmp only)."""
    container: dict[str, Any] = {
        "name": name,
        "image": hook.image,
        "env": [*(extra_env or []), *hook_env(hook.env)],
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT, capabilities={"drop": ["ALL"]}),
        "volumeMounts": [{"name": f"{name}-tmp", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if hook.command:
        container["command"] = list(hook.command)
    if hook.args:
        container["args"] = list(hook.args)
    return container


def hook_tmp_volume(name: str = CONTAINER_NAME) -> dict[str, Any]:
    return {"name": f"{name}-tmp", "emptyDir": {"sizeLimit": "256Mi"}}


def hook_job_name(owner_name: str, owner_uid: str, step: HookStep) -> str:
    """'<owner>-<step>-<hash>', at most 63 characters; the same owner and step always give the same name,
    so a second create answers 409 instead of running the hook twice."""
    suffix = f"-{step}-{short_hash(owner_uid, step)}"
    return f"{owner_name[: JOB_NAME_MAX - len(suffix)].rstrip('-._')}{suffix}"


def build_hook_job(hook: HookSpec, step: HookStep, *, namespace: str, policy_name: str, owner_kind: str,
                   owner_name: str, owner_uid: str, settings: JobSettings,
                   extra_env: list[dict[str, Any]] | None = None,
                   owner_api_version: str | None = None) -> dict[str, Any]:
    """A Job running the hook once: never retried (backoffLimit 0), stopped after timeoutSeconds, owned by
    the RestoreRequest (or backup Job) it belongs to, no API token, the restore Jobs' security context."""
    labels = {**policy_labels(policy_name, component=COMPONENT), LABEL_HOOK_OWNER: label_value(owner_name)}
    annotations = {ANNOTATION_HOOK: step, ANNOTATION_OWNER: owner_name}
    owner = owner_reference(owner_kind, owner_name, owner_uid)
    if owner_api_version:
        owner["apiVersion"] = owner_api_version
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": dict(POD_SECURITY_CONTEXT),
        "containers": [hook_container(hook, extra_env=extra_env)],
        "volumes": [hook_tmp_volume()],
    }
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": hook_job_name(owner_name, owner_uid, step), "namespace": namespace,
                     "labels": labels, "annotations": annotations, "ownerReferences": [owner]},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": hook.timeout_seconds,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod},
        },
    }


def hook_step(job: dict[str, Any]) -> HookStep | None:
    step = (job.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_HOOK)
    return step if step in HOOK_STEPS else None


def log_tail(text: str, lines: int = 20, limit: int = 1500) -> str:
    """The last lines of a log, at most `limit` characters, for a status message."""
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    return tail[-limit:]


def with_pre_backup_hook(pod: dict[str, Any], job_spec: dict[str, Any], hook: HookSpec | None) -> None:
    """Add a preBackup hook to a backup pod as its init container (the backup starts only if it succeeds).
    Kubernetes has no per-container deadline, so timeoutSeconds is added to the Job's activeDeadlineSeconds:
    the budget of the whole Job is the hook's plus the backup's."""
    if hook is None:
        return
    pod["initContainers"] = [hook_container(hook, name=PRE_BACKUP_CONTAINER,
                                            extra_env=[{"name": "PGBACKUP_HOOK", "value": "pre-backup"}])]
    pod["volumes"] = [*pod.get("volumes", []), hook_tmp_volume(PRE_BACKUP_CONTAINER)]
    if job_spec.get("activeDeadlineSeconds"):
        job_spec["activeDeadlineSeconds"] = int(job_spec["activeDeadlineSeconds"]) + hook.timeout_seconds
