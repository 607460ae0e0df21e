"""The WAL streamer of a policy (spec.wal.enabled): a one-replica Deployment running `pgbackup wal-stream`
and a ClusterIP Service through which the operator reads the streamer's state (api/wal.py), as plain dicts.

The pod is the runner pod of the backup Jobs (same image, security settings, credentials as secretKeyRef env
vars, never the age identity), made long-running: it restarts on failure and is probed over HTTP.
"""

from __future__ import annotations

from typing import Any

from pgbackup.api import jobenv
from pgbackup.api.policy import BackupPolicySpec
from pgbackup.api.wal import (
    ENV_WAL_SPOOL_LIMIT,
    ENV_WAL_STATUS_PORT,
    WAL_HEALTH_PATH,
    WAL_STATUS_PATH,
    WAL_STATUS_PORT,
    WAL_STATUS_PORT_NAME,
)
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME, ANNOTATION_SPEC_HASH, manifest_hash
from pgbackup.builders.names import LABEL_COMPONENT, LABEL_POLICY, policy_labels, wal_name
from pgbackup.builders.pod import JobSettings, owner_reference, policy_env_json, runner_pod_spec
from pgbackup.builders.wal_state import parse_size

COMPONENT_WAL = "wal"


def _metadata(name: str, namespace: str, uid: str) -> dict[str, Any]:
    return {
        "name": wal_name(name),
        "namespace": namespace,
        "labels": policy_labels(name, COMPONENT_WAL),
        "annotations": {ANNOTATION_POLICY_NAME: name},
        "ownerReferences": [owner_reference("BackupPolicy", name, uid)],
    }


def wal_selector(name: str) -> dict[str, str]:
    """Selects the streamer pod of policy `name` (immutable in a Deployment: never change it)."""
    labels = policy_labels(name, COMPONENT_WAL)
    return {LABEL_POLICY: labels[LABEL_POLICY], LABEL_COMPONENT: COMPONENT_WAL}


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": WAL_STATUS_PORT_NAME}, "periodSeconds": period,
            "timeoutSeconds": 5, "failureThreshold": failures}


def _streamer_pod(name: str, namespace: str, spec: BackupPolicySpec, settings: JobSettings) -> dict[str, Any]:
    pod = runner_pod_spec(spec, settings, command=jobenv.COMMAND_WAL_STREAM, env=[
        {"name": jobenv.ENV_POLICY, "value": policy_env_json(name, namespace, spec)},
        {"name": ENV_WAL_STATUS_PORT, "value": str(WAL_STATUS_PORT)},
        # the spool is in the scratch emptyDir: a spool over its sizeLimit gets the pod evicted, so it pauses before
        {"name": ENV_WAL_SPOOL_LIMIT, "value": str(parse_size(spec.job_template.scratch_size_limit))},
    ])
    pod["restartPolicy"] = "Always"  # a Deployment's pod runs until it is replaced
    container = pod["containers"][0]
    container["ports"] = [{"name": WAL_STATUS_PORT_NAME, "containerPort": WAL_STATUS_PORT, "protocol": "TCP"}]
    # Readiness on /status: the Service (and so the operator) reaches the pod once it can report, failing or not.
    container["readinessProbe"] = _probe(WAL_STATUS_PATH, 10, 3)
    # Liveness on /healthz with patience: a restart costs a reconnect and the spool (the scratch emptyDir), and
    # loses no WAL: the archive slot keeps on the server all WAL not yet in storage, and the new pod's streamer
    # receives it again from there (runner/wal/stream.py).
    container["livenessProbe"] = _probe(WAL_HEALTH_PATH, 20, 6)
    # pg_receivewal flushes what it received and the current .partial is shipped on SIGTERM.
    pod["terminationGracePeriodSeconds"] = 60
    return pod


def build_wal_deployment(name: str, namespace: str, uid: str, spec: BackupPolicySpec,
                         settings: JobSettings) -> dict[str, Any]:
    """The Deployment '<policy>-wal' streaming the WAL of policy `name`, owned by the policy. One replica with
    the Recreate strategy: two streamers on one replication slot would fight over it."""
    labels = policy_labels(name, COMPONENT_WAL)
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, uid),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": wal_selector(name)},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": {ANNOTATION_POLICY_NAME: name}},
                "spec": _streamer_pod(name, namespace, spec, settings),
            },
        },
    }
    deployment["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = manifest_hash(deployment)
    return deployment


def build_wal_service(name: str, namespace: str, uid: str) -> dict[str, Any]:
    """The ClusterIP Service '<policy>-wal' in front of the streamer's status port, owned by the policy."""
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, uid),
        "spec": {
            "type": "ClusterIP",
            "selector": wal_selector(name),
            "ports": [{"name": WAL_STATUS_PORT_NAME, "port": WAL_STATUS_PORT, "targetPort": WAL_STATUS_PORT_NAME,
                       "protocol": "TCP"}],
        },
    }
    service["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = manifest_hash(service)
    return service
