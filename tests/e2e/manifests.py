"""What the product e2e test deploys, as plain manifests from pure functions (so they are unit-tested without a
cluster: tests/unit/test_e2e_manifests.py checks them against the Kubernetes client's models and the API models).

The test namespace gets: a PostgreSQL (the official image, a StatefulSet on an emptyDir, replication allowed for
pg_basebackup and pg_receivewal), an S3 server (moto), their Secrets, the operator (the Helm chart with the image
from PGBACKUP_E2E_IMAGE) and the BackupPolicies and RestoreRequests under test. Images can be overridden by
environment variables for clusters that pull from a mirror."""

from __future__ import annotations

import os
from typing import Any

POSTGRES_IMAGE = os.environ.get("PGBACKUP_E2E_POSTGRES_IMAGE", "postgres:18")
"""The server the backups are taken of: the major version the operator image's binaries are (physical backups,
verification and PITR need the same major)."""
S3_IMAGE = os.environ.get("PGBACKUP_E2E_S3_IMAGE", "motoserver/moto:5.1.0")
OPERATOR_IMAGE = os.environ.get("PGBACKUP_E2E_IMAGE", "")
"""Empty: the chart's own image (ghcr.io/pgbackup/pgbackup-operator:<appVersion>)."""

POSTGRES = "pg"
POSTGRES_SECRET = "pg-superuser"
POSTGRES_INIT = "pg-init"
DATABASE = "shop"
S3 = "s3"
S3_PORT = 5000
S3_SECRET = "s3-credentials"
BUCKET = "backups"
LABEL = "pgbackup-e2e/app"

ALLOW_REPLICATION = """#!/bin/sh
# pg_basebackup and pg_receivewal connect with the `replication` pseudo-database, which `host all all all` does not match
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
"""


def _meta(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {LABEL: name}, **extra}


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def postgres(namespace: str, password: str) -> list[dict[str, Any]]:
    """Secret (username/password: the superuser, also the policies' credentials), the init script, a one-replica
    StatefulSet and its Service `pg`. Data lives on an emptyDir: no StorageClass needed, gone with the namespace."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(POSTGRES_SECRET, namespace),
              "type": "kubernetes.io/basic-auth", "stringData": {"username": "postgres", "password": password}}
    init = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(POSTGRES_INIT, namespace),
            "data": {"10-allow-replication.sh": ALLOW_REPLICATION}}
    container = {
        "name": "postgres",
        "image": POSTGRES_IMAGE,
        "args": ["-c", "wal_level=replica", "-c", "max_wal_senders=10", "-c", "max_replication_slots=10"],
        "env": [_secret_env("POSTGRES_PASSWORD", POSTGRES_SECRET, "password"), {"name": "POSTGRES_DB", "value": DATABASE}],
        "ports": [{"name": "postgres", "containerPort": 5432}],
        # over TCP, as the Jobs connect: the init scripts' temporary server listens on the socket only
        "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "postgres", "-h", "127.0.0.1"]},
                           "periodSeconds": 2, "failureThreshold": 60},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        # the image's PGDATA is under /var/lib/postgresql for every major (18 moved it one level down)
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"},
                         {"name": "init", "mountPath": "/docker-entrypoint-initdb.d", "readOnly": True}],
    }
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(POSTGRES, namespace),
        "spec": {
            "serviceName": POSTGRES, "replicas": 1,
            "selector": {"matchLabels": {LABEL: POSTGRES}},
            "template": {
                "metadata": {"labels": {LABEL: POSTGRES}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 5,
                         "volumes": [{"name": "data", "emptyDir": {}},
                                     {"name": "init", "configMap": {"name": POSTGRES_INIT, "defaultMode": 0o555}}]},
            },
        },
    }
    return [secret, init, statefulset, _service(POSTGRES, namespace, 5432)]


def s3(namespace: str, access_key: str, secret_key: str) -> list[dict[str, Any]]:
    """Secret (the keys a policy's storage.s3.credentialsSecret names), a moto S3 server and its Service `s3`.
    The keys are in the server's environment too, so that the bucket is created from inside it
    (create_bucket_command), with no credential on a command line."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(S3_SECRET, namespace), "type": "Opaque",
              "stringData": {"accessKeyId": access_key, "secretAccessKey": secret_key}}
    container = {
        "name": "s3",
        "image": S3_IMAGE,
        "env": [_secret_env("AWS_ACCESS_KEY_ID", S3_SECRET, "accessKeyId"),
                _secret_env("AWS_SECRET_ACCESS_KEY", S3_SECRET, "secretAccessKey"),
                {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"}],
        "ports": [{"name": "s3", "containerPort": S3_PORT}],
        "readinessProbe": {"tcpSocket": {"port": S3_PORT}, "periodSeconds": 2, "failureThreshold": 60},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(S3, namespace),
        "spec": {"replicas": 1, "selector": {"matchLabels": {LABEL: S3}},
                 "template": {"metadata": {"labels": {LABEL: S3}}, "spec": {"containers": [container]}}},
    }
    return [secret, deployment, _service(S3, namespace, S3_PORT)]


def create_bucket_command() -> list[str]:
    """Run in the S3 server's container (`kubectl exec`): moto ships boto3; the keys come from its environment."""
    return ["python3", "-c", "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:%d')"
                             ".create_bucket(Bucket='%s')" % (S3_PORT, BUCKET)]


def _service(name: str, namespace: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, namespace),
            "spec": {"selector": {LABEL: name}, "ports": [{"name": name, "port": port, "targetPort": port}]}}


def s3_endpoint(namespace: str) -> str:
    return f"http://{S3}.{namespace}.svc:{S3_PORT}"


def backup_policy(namespace: str, name: str, *, method: str = "logical", wal: bool = False,
                  verify: bool = False) -> dict[str, Any]:
    """A policy on the e2e PostgreSQL and bucket, each under its own prefix. The schedule is far away: the test
    takes its backups with `kubectl pgbackup backup --wait` (the backup-now annotation)."""
    spec: dict[str, Any] = {
        "database": {"host": f"{POSTGRES}.{namespace}.svc", "port": 5432, "databases": [DATABASE],
                     "credentialsSecret": {"name": POSTGRES_SECRET}, "sslMode": "disable"},
        "schedule": "0 3 1 1 *",
        "method": method,
        "storage": {"s3": {"bucket": BUCKET, "prefix": f"e2e/{name}", "endpoint": s3_endpoint(namespace),
                           "region": "us-east-1", "forcePathStyle": True,
                           "credentialsSecret": {"name": S3_SECRET}}},
        "compression": {"algorithm": "zstd", "level": 3},
        "retention": {"keepLast": 5},
    }
    if verify:
        spec["verify"] = {"enabled": True, "compareRowCounts": True,
                          "checks": [{"name": "orders-not-empty", "database": DATABASE,
                                      "sql": "select count(*) > 0 from orders"}]}
    if wal:
        spec["wal"] = {"enabled": True, "slotName": f"pgbackup_{name.replace('-', '_')}",
                       "partialUploadInterval": "5s"}
    return {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "BackupPolicy", "metadata": _meta(name, namespace),
            "spec": spec}


def restore_request(namespace: str, name: str, policy: str, target_database: str, *, backup: str = "latest",
                    target_time: str | None = None) -> dict[str, Any]:
    """Restore the e2e database into a new database, with a check that the table came back."""
    spec: dict[str, Any] = {
        "policyRef": {"name": policy}, "backup": backup, "databases": [DATABASE],
        "target": {"database": target_database},
        "checks": [{"name": "orders-restored", "database": target_database,
                    "sql": "select count(*) >= 0 from orders"}],
    }
    if target_time is not None:
        spec["pointInTime"] = {"targetTime": target_time}
    return {"apiVersion": "pgbackup.dev/v1alpha1", "kind": "RestoreRequest", "metadata": _meta(name, namespace),
            "spec": spec}


def image_values(reference: str) -> dict[str, Any]:
    """Helm values for an image reference: 'repo:tag', 'repo@sha256:…' or 'repo' (the chart's tag)."""
    if not reference:
        return {}
    if "@" in reference:
        repository, digest = reference.split("@", 1)
        return {"image": {"repository": repository, "digest": digest}}
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = reference.rsplit(":", 1)
        return {"image": {"repository": repository, "tag": tag}}
    return {"image": {"repository": reference}}


def operator_values(namespace: str, image: str = OPERATOR_IMAGE) -> dict[str, Any]:
    """The chart's values for the e2e release: watches only its own namespace (an operator of another release
    or test never competes), CRDs applied by the suite (from crds/, like `kubectl apply -f crds/`)."""
    return {
        **image_values(image),
        "crds": {"create": False},
        "watchNamespaces": [namespace],
        "logFormat": "text",
        "extraEnv": [{"name": "PGBACKUP_SECRET_RETRY_SECONDS", "value": "3"},
                     {"name": "PGBACKUP_WAL_STATUS_INTERVAL_SECONDS", "value": "5"}],
    }
