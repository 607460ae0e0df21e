"""RestoreRequest -> the plan Job and the restore Job (plain dicts), and reading their outcome back.

Both Jobs run `pgbackup restore-request` with the same environment (jobenv.ENV_RESTORE); the plan Job adds
`--dry-run`. The request and its policy travel inside the plan Job, and the restore Job is built from that
copy, so edits made after planning started are never acted on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pgbackup.api import jobenv
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.api.restore import RestoreRequestSpec
from pgbackup.api.summary import JobSummary
from pgbackup.builders.names import JOB_NAME_MAX, label_value, policy_labels, short_hash
from pgbackup.builders.pod import JOB_TTL_SECONDS, JobSettings, owner_reference, runner_pod_spec
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME
from pgbackup.builders.results import job_outcome, read_result, termination_message
from pgbackup.builders.secrets import SecretKeyUse, referenced_secret_keys

COMPONENT = "restore"  # the backup-Job watcher only follows component=backup
LABEL_RESTORE_REQUEST = "pgbackup.dev/restore-request"
ANNOTATION_RESTORE_REQUEST = "pgbackup.dev/restore-request"  # full name; the label value may be shortened
ANNOTATION_STEP = "pgbackup.dev/restore-step"
DRY_RUN_FLAG = "--dry-run"

Step = Literal["plan", "restore"]
STEPS: tuple[Step, ...] = ("plan", "restore")


@dataclass(frozen=True)
class FrozenRequest:
    """A RestoreRequest as it was when planning started (read back from the plan Job)."""

    name: str
    namespace: str
    uid: str
    spec: RestoreRequestSpec
    policy_name: str
    policy: BackupPolicySpec


@dataclass(frozen=True)
class StepOutcome:
    """What one finished plan or restore Job reported."""

    job_name: str
    succeeded: bool
    summary: JobSummary | None
    reason: str
    message: str


def restore_job_name(request_name: str, uid: str, step: Step) -> str:
    """'<request>-plan-<hash>' / '<request>-restore-<hash>' (at most 63 characters): the same request always
    gives the same names, so creating a Job twice answers 409 instead of running twice; the hash of the uid
    keeps a re-created request of the same name apart from the old one's Jobs."""
    suffix = f"-{step}-{short_hash(uid, step)}"
    prefix = request_name[: JOB_NAME_MAX - len(suffix)].rstrip("-._")
    return f"{prefix}{suffix}"


def restore_secret_keys(spec: RestoreRequestSpec, policy: BackupPolicySpec) -> list[SecretKeyUse]:
    """The Secret keys a restore Job needs: the target's credentials (spec.target.credentialsSecret, else the
    policy's), the policy's storage and CA Secrets and the age identity. Not the webhook: restores do not notify."""
    target_creds = spec.target.credentials_secret
    uses = [
        use for use in referenced_secret_keys(policy)
        if not use.field.startswith("spec.notifications.")
        and not (target_creds is not None and use.field.startswith("spec.database.credentialsSecret."))
    ]
    if target_creds is not None:
        uses = [
            SecretKeyUse(target_creds.name, target_creds.username_key, "spec.target.credentialsSecret.usernameKey"),
            SecretKeyUse(target_creds.name, target_creds.password_key, "spec.target.credentialsSecret.passwordKey"),
            *uses,
        ]
    return uses


def identity_problem(namespace: str, policy_name: str, policy: BackupPolicySpec) -> str | None:
    """Why the backups of an encrypted policy could not be decrypted by a restore Job, or None."""
    if policy.encryption is not None and policy.encryption.identity_secret is None:
        return (f"BackupPolicy {namespace}/{policy_name} encrypts its backups but names no encryption.identitySecret, "
                f"so a restore cannot decrypt them; add spec.encryption.identitySecret (a Secret holding the age "
                f"identity) to the policy")
    return None


def request_env_json(name: str, namespace: str, spec: RestoreRequestSpec, policy_name: str,
                     policy: BackupPolicySpec) -> str:
    """The runner's PGBACKUP_RESTORE document (Secret references only, never values)."""
    document = {"name": name, "namespace": namespace, "spec": spec.to_wire(),
                "policy": {"name": policy_name, "spec": policy.to_wire()}}
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def build_restore_job(request: FrozenRequest, settings: JobSettings, step: Step) -> dict[str, Any]:
    """The plan Job (`pgbackup restore-request --dry-run`) or the restore Job of a request, owned by it.
    Never retried (backoffLimit 0): a half-done restore needs a person, not a second attempt."""
    labels = {**policy_labels(request.policy_name, component=COMPONENT),
              LABEL_RESTORE_REQUEST: label_value(request.name)}
    annotations = {ANNOTATION_RESTORE_REQUEST: request.name, ANNOTATION_STEP: step,
                   ANNOTATION_POLICY_NAME: request.policy_name}
    command = [*jobenv.COMMAND_RESTORE, *([DRY_RUN_FLAG] if step == "plan" else [])]
    env = [{"name": jobenv.ENV_RESTORE, "value": request_env_json(request.name, request.namespace, request.spec,
                                                                   request.policy_name, request.policy)}]
    pod = runner_pod_spec(request.policy, settings, command=command, env=env,
                          db_credentials=request.spec.target.credentials_secret, mount_identity=True,
                          copies=[request.spec.from_copy] if request.spec.from_copy else [],
                          # only the restore step writes into volumes; the plan Job stays off the claims
                          app_claims=[v.target_claim for v in request.spec.volumes] if step == "restore" else [],
                          app_claims_writable=True)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": restore_job_name(request.name, request.uid, step),
            "namespace": request.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference("RestoreRequest", request.name, request.uid)],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": request.policy.job_template.active_deadline_seconds,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod},
        },
    }


def job_step(job: dict[str, Any]) -> Step | None:
    step = (job.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_STEP)
    return step if step in STEPS else None


def frozen_request(job: dict[str, Any]) -> FrozenRequest | None:
    """The request and policy a plan Job was built from (its PGBACKUP_RESTORE env and owner), or None when
    the Job does not carry them."""
    owner = next((ref for ref in job.get("metadata", {}).get("ownerReferences") or []
                  if ref.get("kind") == "RestoreRequest"), None)
    containers = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    text = next((env.get("value") for container in containers for env in container.get("env") or []
                 if env.get("name") == jobenv.ENV_RESTORE), None)
    if owner is None or not text:
        return None
    try:
        document = json.loads(text)
        return FrozenRequest(
            name=document["name"], namespace=document["namespace"], uid=owner["uid"],
            spec=RestoreRequestSpec.model_validate(document["spec"]),
            policy_name=document["policy"]["name"], policy=BackupPolicySpec.model_validate(document["policy"]["spec"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_step_outcome(job: dict[str, Any], pods: list[dict[str, Any]]) -> StepOutcome | None:
    """The outcome of a finished plan/restore Job, None while it runs: from the runner's summary when there is
    one, else from Job and Pod status (results.read_result)."""
    outcome = job_outcome(job)
    if outcome is None:
        return None
    name = job["metadata"]["name"]
    fallback = read_result(job, pods)  # understands Job/Pod failures; restore summaries are read below
    assert fallback is not None  # the Job has finished
    text = termination_message(pods)
    summary = JobSummary.from_termination_message(text) if text else None
    if summary is not None and summary.kind != "restore":
        summary = None
    if summary is not None:
        succeeded = outcome == "Completed" and summary.phase == "Completed"
        reason = summary.reason or ("RestoreSucceeded" if succeeded else "RestoreFailed")
        message = summary.error or ("" if succeeded else fallback.message)
        return StepOutcome(name, succeeded, summary, reason, message)
    if outcome == "Completed":
        return StepOutcome(name, False, None, "NoSummary",
                           f"Job {name} completed but left no restore summary; see `kubectl logs job/{name}`")
    return StepOutcome(name, False, None, fallback.reason, fallback.message)

