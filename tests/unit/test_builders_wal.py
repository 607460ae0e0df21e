"""The WAL streamer Deployment and Service built from a policy (plain dicts, no cluster)."""

from __future__ import annotations

import json
import re
from typing import Any

from pgbackup.api import BackupPolicySpec, jobenv
from pgbackup.api.wal import ENV_WAL_SPOOL_LIMIT, WAL_HEALTH_PATH, WAL_STATUS_PATH, WAL_STATUS_PORT
from pgbackup.builders.cronjob import ANNOTATION_POLICY_NAME, ANNOTATION_SPEC_HASH, build_cronjob
from pgbackup.builders.names import wal_name
from pgbackup.builders.wal_deployment import build_wal_deployment, build_wal_service
from tests.unit.test_builders import SETTINGS, s3_spec

UID = "uid-1"
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def spec(**overrides: Any) -> BackupPolicySpec:
    return BackupPolicySpec.model_validate(s3_spec(wal={"enabled": True, "slotName": "orders_slot"}, **overrides))


def deployment(name: str = "orders", **overrides: Any) -> dict[str, Any]:
    return build_wal_deployment(name, "shop", UID, spec(**overrides), SETTINGS)


def pod(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def test_deployment_runs_one_streamer_with_recreate_owned_by_the_policy() -> None:
    made = deployment()
    assert (made["apiVersion"], made["kind"]) == ("apps/v1", "Deployment")
    assert made["metadata"]["name"] == "orders-wal"
    assert made["spec"]["replicas"] == 1
    assert made["spec"]["strategy"] == {"type": "Recreate"}  # never two streamers on one slot
    owner = made["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("BackupPolicy", "orders", UID, True)
    assert made["metadata"]["annotations"][ANNOTATION_POLICY_NAME] == "orders"
    assert made["metadata"]["labels"]["app.kubernetes.io/component"] == "wal"
    selector = made["spec"]["selector"]["matchLabels"]
    assert selector.items() <= made["spec"]["template"]["metadata"]["labels"].items()


def test_streamer_pod_is_long_running_and_probed_on_the_status_port() -> None:
    streamer = pod(deployment())
    [container] = streamer["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert streamer["restartPolicy"] == "Always"
    assert container["command"] == jobenv.COMMAND_WAL_STREAM
    assert json.loads(env[jobenv.ENV_POLICY]["value"])["spec"]["wal"]["slotName"] == "orders_slot"
    assert container["ports"] == [{"name": "status", "containerPort": WAL_STATUS_PORT, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": WAL_STATUS_PATH, "port": "status"}
    assert container["livenessProbe"]["httpGet"] == {"path": WAL_HEALTH_PATH, "port": "status"}


def test_streamer_pod_has_the_backup_jobs_security_and_credentials_but_no_identity() -> None:
    policy = spec()
    backup = build_cronjob("orders", "shop", UID, policy, SETTINGS)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    streamer = pod(build_wal_deployment("orders", "shop", UID, policy, SETTINGS))
    assert streamer["securityContext"] == backup["securityContext"]
    assert streamer["containers"][0]["securityContext"] == backup["containers"][0]["securityContext"]
    assert streamer["automountServiceAccountToken"] is False  # the streamer never talks to the API server
    assert streamer["containers"][0]["image"] == SETTINGS.image
    env = {item["name"]: item for item in streamer["containers"][0]["env"]}
    assert env["PGPASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "db-creds", "key": "pass"}}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"
    assert "age-identity" not in {volume["name"] for volume in streamer["volumes"]}  # recipients are enough


def test_no_secret_value_appears_in_the_deployment_or_service() -> None:
    text = json.dumps([deployment(), build_wal_service("orders", "shop", UID)])
    for forbidden in ("stringData", "\"data\"", "password\":", "secretAccessKey\":"):
        assert forbidden not in text


def test_service_selects_the_streamer_pod_on_the_status_port() -> None:
    service = build_wal_service("orders", "shop", UID)
    made = deployment()
    assert (service["metadata"]["name"], service["spec"]["type"]) == ("orders-wal", "ClusterIP")
    assert service["spec"]["selector"] == made["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "status", "port": WAL_STATUS_PORT, "targetPort": "status",
                                         "protocol": "TCP"}]
    assert service["metadata"]["ownerReferences"][0]["name"] == "orders"


def test_names_are_valid_service_names_and_distinct_for_similar_policies() -> None:
    long = "a" * 253
    names = [wal_name(n) for n in ("orders", long, "orders.eu", "orders-eu", "1st-db")]
    assert names[0] == "orders-wal"
    assert all(len(n) <= 63 and DNS_1035_LABEL.match(n) for n in names), names
    assert len(set(names)) == len(names)
    assert wal_name(long) == wal_name(long)


def test_spec_hash_changes_with_what_the_streamer_runs_only() -> None:
    first = deployment()["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    assert deployment()["metadata"]["annotations"][ANNOTATION_SPEC_HASH] == first
    changed = build_wal_deployment("orders", "shop", UID, BackupPolicySpec.model_validate(
        s3_spec(wal={"enabled": True, "slotName": "other_slot"})), SETTINGS)
    assert changed["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != first
    assert build_wal_service("orders", "shop", UID)["metadata"]["annotations"][ANNOTATION_SPEC_HASH]


def test_job_template_overrides_reach_the_streamer() -> None:
    made = deployment(jobTemplate={"resources": {"limits": {"memory": "256Mi"}}, "nodeSelector": {"disk": "ssd"}})
    assert pod(made)["containers"][0]["resources"] == {"limits": {"memory": "256Mi"}}
    assert pod(made)["nodeSelector"] == {"disk": "ssd"}


def test_streamer_knows_its_spool_limit_the_scratch_size_limit() -> None:
    env = {e["name"]: e.get("value") for e in pod(deployment(jobTemplate={"scratchSizeLimit": "2Gi"}))
           ["containers"][0]["env"]}
    assert env[ENV_WAL_SPOOL_LIMIT] == str(2 * 1024**3)
