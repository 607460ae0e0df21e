"""The e2e suite's own deployments, checked without a cluster: every Kubernetes object against the Kubernetes
client's models (unknown or misspelt fields, wrong types, missing required fields), the custom resources against
the API models, the references between them, the Helm values against the chart, and no credential outside
its Secret. What only a cluster can show (that PostgreSQL starts, that the backup runs) is the e2e suite's job."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

from pgbackup.api import BackupPolicySpec
from pgbackup.api.restore import RestoreRequestSpec
from tests.e2e import manifests
from tests.fixtures.postgres import bindir_for, create_cluster

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
NAMESPACE = "pgbackup-e2e-product-abc123"
PASSWORD, ACCESS_KEY, SECRET_KEY = "pg-Pa55word-xyz", "e2eaccesskey0001", "s3-Secret-Key-qwerty"


def deployed() -> list[dict[str, Any]]:
    return [*manifests.postgres(NAMESPACE, PASSWORD), *manifests.s3(NAMESPACE, ACCESS_KEY, SECRET_KEY)]


def custom_resources() -> list[dict[str, Any]]:
    return [manifests.backup_policy(NAMESPACE, "shop-logical", verify=True),
            manifests.backup_policy(NAMESPACE, "shop-pitr", method="physical", wal=True),
            manifests.restore_request(NAMESPACE, "shop-restore", "shop-logical", "shop_restored",
                                      backup="20261123T020000Z"),
            manifests.restore_request(NAMESPACE, "shop-pitr", "shop-pitr", "shop_pitr",
                                      target_time="2026-12-02T11:20:00.123456Z")]


# ------------------------------------------------------------------ against the Kubernetes client's models


class _Response:
    def __init__(self, document: dict[str, Any]) -> None:
        self.data = json.dumps(document)


def unknown_fields(value: Any, type_name: str, path: str) -> list[str]:
    """Fields the Kubernetes API does not have (the API server would drop or refuse them), and wrong types."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in unknown_fields(item, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith(("dict(", "dict[")):
        inner = type_name[5:-1].split(", ", 1)[1]
        if not isinstance(value, dict):
            return [f"{path}: expected a map"]
        return [p for key, item in value.items() for p in unknown_fields(item, inner, f"{path}.{key}")]
    simple: dict[str, type | tuple[type, ...]] = {"str": str, "int": int, "bool": bool, "datetime": str,
                                                  "float": (int, float)}
    if type_name in simple:
        if not isinstance(value, simple[type_name]) or (type_name == "int" and isinstance(value, bool)):
            return [f"{path}: expected {type_name}, got {value!r}"]
        return []
    if type_name == "object":
        return []
    model = getattr(kubernetes.client.models, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({type_name})"]
    by_key = {key: attribute for attribute, key in model.attribute_map.items()}
    found = []
    for key, item in value.items():
        if key not in by_key:
            found.append(f"{path}.{key}: no such field in {type_name}")
        else:
            found.extend(unknown_fields(item, model.openapi_types[by_key[key]], f"{path}.{key}"))
    return found


@pytest.mark.parametrize("document", deployed(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_object_is_a_valid_kubernetes_object(document: dict[str, Any]) -> None:
    type_name = f"V1{document['kind']}"
    assert unknown_fields(document, type_name, document["kind"]) == []
    # required fields (the client's models refuse None for them)
    kubernetes.client.ApiClient().deserialize(_Response(document), type_name)
    assert document["metadata"]["namespace"] == NAMESPACE


def test_the_checker_finds_a_misspelt_field() -> None:
    [_, _, statefulset, _] = manifests.postgres(NAMESPACE, PASSWORD)
    statefulset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPrt"] = 5432
    statefulset["spec"]["replicas"] = "1"
    assert unknown_fields(statefulset, "V1StatefulSet", "StatefulSet") == [
        "StatefulSet.spec.replicas: expected int, got '1'",
        "StatefulSet.spec.template.spec.containers[0].ports[0].containerPrt: no such field in V1ContainerPort"]


def test_services_select_their_pods_and_ports() -> None:
    documents = deployed()
    workloads = {d["metadata"]["name"]: d for d in documents if d["kind"] in ("StatefulSet", "Deployment")}
    services = [d for d in documents if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {manifests.POSTGRES, manifests.S3}
    for service in services:
        workload = workloads[service["metadata"]["name"]]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        assert service["spec"]["selector"] == selector
        container_ports = {p["containerPort"] for c in workload["spec"]["template"]["spec"]["containers"]
                           for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports


def test_volumes_and_secret_references_resolve() -> None:
    documents = deployed()
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for d in documents if d["kind"] == "Secret"}
    config_maps = {d["metadata"]["name"] for d in documents if d["kind"] == "ConfigMap"}
    for workload in (d for d in documents if d["kind"] in ("StatefulSet", "Deployment")):
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            assert {m["name"] for m in container.get("volumeMounts", [])} <= set(volumes)
            for env in container.get("env", []):
                if "valueFrom" in env:
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert ref["key"] in secrets[ref["name"]], env
        assert {v["configMap"]["name"] for v in volumes.values() if "configMap" in v} <= config_maps
    for resource in custom_resources():
        spec = resource["spec"]
        if resource["kind"] == "BackupPolicy":
            assert secrets[spec["database"]["credentialsSecret"]["name"]] >= {"username", "password"}
            assert secrets[spec["storage"]["s3"]["credentialsSecret"]["name"]] >= {"accessKeyId", "secretAccessKey"}
            assert spec["database"]["host"] == f"{manifests.POSTGRES}.{NAMESPACE}.svc"
            assert spec["storage"]["s3"]["endpoint"] == f"http://{manifests.S3}.{NAMESPACE}.svc:{manifests.S3_PORT}"


def test_credentials_appear_only_in_their_secrets() -> None:
    for document in [*deployed(), *custom_resources()]:
        if document["kind"] == "Secret":
            continue
        text = yaml.safe_dump(document)
        for value in (PASSWORD, ACCESS_KEY, SECRET_KEY):
            assert value not in text, f"{document['kind']}/{document['metadata']['name']} holds a credential"
    assert not any(value in " ".join(manifests.create_bucket_command()) for value in (ACCESS_KEY, SECRET_KEY))


def test_the_init_script_allows_replication_connections(tmp_path: Path) -> None:
    """What the image's entrypoint runs once after initdb: pg_basebackup and pg_receivewal connect to the
    `replication` pseudo-database, which `host all all all` does not match."""
    [_, init, _, _] = manifests.postgres(NAMESPACE, PASSWORD)
    [(name, script)] = init["data"].items()
    (tmp_path / "pg_hba.conf").write_text("host all all all scram-sha-256\n")
    path = tmp_path / name
    path.write_text(script)
    subprocess.run(["sh", str(path)], env={**os.environ, "PGDATA": str(tmp_path)}, check=True)
    lines = (tmp_path / "pg_hba.conf").read_text().splitlines()
    assert lines[-1].split() == ["host", "replication", "all", "all", "scram-sha-256"]


def test_the_init_script_is_what_lets_pg_basebackup_in(scratch: Path, tmp_path: Path) -> None:
    """On a real server with the official image's pg_hba.conf (every host connection with a password, which does
    not cover the `replication` pseudo-database): pg_basebackup, as the physical backup and the WAL streamer
    connect, is refused before the init script ran and accepted after."""
    version = "18" if bindir_for("18") is not None else "15"
    server = create_cluster(version, scratch)
    try:
        (server.datadir / "pg_hba.conf").write_text("local all all trust\nhost all all all scram-sha-256\n")
        server.start()

        def base_backup(into: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(server.bindir / "pg_basebackup"), "-D", str(tmp_path / into), "-X", "none"],
                                  env={**os.environ, **server.env()}, capture_output=True, text=True, timeout=120)

        refused = base_backup("before")
        assert refused.returncode != 0 and "replication connection" in refused.stderr, refused.stderr
        [_, init, _, _] = manifests.postgres(NAMESPACE, PASSWORD)
        [script] = init["data"].values()
        subprocess.run(["sh", "-c", script], env={**os.environ, "PGDATA": str(server.datadir)}, check=True)
        server.query("select pg_reload_conf()")
        accepted = base_backup("after")
        assert accepted.returncode == 0, accepted.stderr
        assert (tmp_path / "after" / "PG_VERSION").read_text().strip() == version
    finally:
        server.close()


# ------------------------------------------------------------------ against the pgbackup API


@pytest.mark.parametrize("resource", custom_resources(), ids=lambda r: r["metadata"]["name"])
def test_custom_resources_are_valid_for_the_api(resource: dict[str, Any]) -> None:
    model = BackupPolicySpec if resource["kind"] == "BackupPolicy" else RestoreRequestSpec
    model.model_validate(resource["spec"])
    assert resource["apiVersion"] == "pgbackup.dev/v1alpha1"


def test_the_pitr_policy_streams_wal_and_takes_physical_base_backups() -> None:
    spec = BackupPolicySpec.model_validate(manifests.backup_policy(NAMESPACE, "shop-pitr", method="physical",
                                                                   wal=True)["spec"])
    assert spec.method == "physical" and spec.wal is not None and spec.wal.enabled
    assert re.fullmatch(r"[a-z0-9_]+", spec.wal.slot_name or "")
    prefixes = {manifests.backup_policy(NAMESPACE, n)["spec"]["storage"]["s3"]["prefix"] for n in ("a", "b")}
    assert len(prefixes) == 2, "each policy needs its own prefix"


# ------------------------------------------------------------------ the operator's Helm values


@pytest.mark.parametrize(("reference", "values"), [
    ("", {}),
    ("registry.local:5000/pgbackup-operator:e2e",
     {"image": {"repository": "registry.local:5000/pgbackup-operator", "tag": "e2e"}}),
    ("ghcr.io/pgbackup/pgbackup-operator@sha256:" + "a" * 64,
     {"image": {"repository": "ghcr.io/pgbackup/pgbackup-operator", "digest": "sha256:" + "a" * 64}}),
    ("registry.local:5000/pgbackup-operator", {"image": {"repository": "registry.local:5000/pgbackup-operator"}}),
])
def test_image_references_become_chart_values(reference: str, values: dict[str, Any]) -> None:
    assert manifests.image_values(reference) == values


@pytest.mark.skipif(not HELM.exists(), reason="helm is not at .tools/bin/helm: run `make tools`")
@pytest.mark.parametrize("image", ["pgbackup-operator:e2e", ""])
def test_the_chart_renders_with_the_e2e_values(image: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(manifests.operator_values(NAMESPACE, image)))
    rendered = subprocess.run([str(HELM), "template", "pgbackup-e2e", str(ROOT / "charts" / "pgbackup-operator"),
                               "-n", NAMESPACE, "-f", str(values)], capture_output=True, text=True, check=True)
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert "CustomResourceDefinition" not in {d["kind"] for d in documents}, "the suite applies crds/ itself"
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    chart = yaml.safe_load((ROOT / "charts" / "pgbackup-operator" / "Chart.yaml").read_text())
    assert container["image"] == (image or f"ghcr.io/pgbackup/pgbackup-operator:{chart['appVersion']}")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WATCH_NAMESPACES"] == NAMESPACE
    assert env["PGBACKUP_SECRET_RETRY_SECONDS"] == "3"
    roles = [d for d in documents if d["kind"] == "Role"]
    assert NAMESPACE in {role["metadata"]["namespace"] for role in roles}
