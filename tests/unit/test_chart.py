"""The Helm chart: lints, renders secure manifests, grants exactly the operator's rules, rejects bad values."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pgbackup import crdgen
from pgbackup.rbac import OPERATOR_RULES, Rule

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pgbackup-operator"
HELM = ROOT / ".tools" / "bin" / "helm"
RELEASE, NAMESPACE = "pgb", "backup-system"

needs_helm = pytest.mark.skipif(not HELM.exists(), reason=f"helm is not at {HELM}: run `make tools`")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


@cache
def _render(sets: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for value in sets:
        args += ["--set", value]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(*sets: str) -> list[dict[str, Any]]:
    """Rendered manifests (a fresh copy: tests may change them)."""
    return copy.deepcopy(list(_render(tuple(sets))))


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def as_rules(rules: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    out = []
    for rule in rules:
        (group,) = rule["apiGroups"]
        out.append((group, tuple(rule["resources"]), tuple(rule["verbs"])))
    return out


def expected(rules: tuple[Rule, ...] = OPERATOR_RULES,
             enabled: frozenset[str] = frozenset()) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The rules the chart must grant: all but the optional ones whose values flag is off."""
    return [(rule.api_group, rule.resources, rule.verbs) for rule in rules
            if rule.optional is None or rule.optional in enabled]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (operator,) = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return operator


def env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item.get("value", "<from>") for item in container(docs)["env"]}


# ---------------------------------------------------------------- lint and files


@needs_helm
def test_helm_lint_passes() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
def test_helm_lint_passes_in_watch_namespaces_mode() -> None:
    result = helm("lint", "--strict", str(CHART), "--set", "watchNamespaces={shop,billing}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == "0.1.0"
    assert chart["name"] == "pgbackup-operator"


def test_every_value_is_documented() -> None:
    """helm-docs style: a `# --` comment above each value (or above each key of a group of values)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: set[tuple[int, str]] = set()
    keys: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        keys.append((depth, match.group(2)))
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#") and not lines[above].strip().startswith("# --"):
            above -= 1
        if above >= 0 and lines[above].strip().startswith("# --"):
            documented.add((number, match.group(2)))
    values = yaml.safe_load("\n".join(lines))
    undocumented = []
    documented_names = {name for _, name in documented}
    for key, value in values.items():
        if key in documented_names:
            continue
        if isinstance(value, dict) and value and all(child in documented_names for child in value):
            continue
        undocumented.append(key)
    assert undocumented == []


def test_schema_rejects_unknown_top_level_keys() -> None:
    schema = json_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert set(schema["properties"]) - set(values) <= {"global"}, "every schema property has a default"


def json_schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def test_values_pass_their_schema() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(json_schema()).validate(values)


@needs_helm
@pytest.mark.parametrize("value, complaint", [
    ("replicaCount=two", "replicaCount"),
    ("replicaCont=2", "replicaCont"),
    ("logFormat=xml", "logFormat"),
    ("metrics.port=70000", "metrics/port"),
    ("crds.craete=true", "craete"),
    ("watchNamespaces={Shop}", "watchNamespaces"),
])
def test_bad_values_are_rejected(value: str, complaint: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", value)
    assert result.returncode != 0, f"--set {value} was accepted"
    assert complaint in result.stderr, result.stderr


# ---------------------------------------------------------------- the operator Deployment


@needs_helm
def test_deployment_is_locked_down() -> None:
    docs = render()
    deployment = only(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(docs)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tmp"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert container(docs)["resources"]["limits"]["memory"]


@needs_helm
def test_probes_use_kopfs_health_endpoint() -> None:
    operator = container(render("metrics.enabled=true"))
    ports = {p["name"]: p["containerPort"] for p in operator["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert operator[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert operator["command"] == ["pgbackup-operator"]
    assert operator["args"] == ["--liveness=http://0.0.0.0:8080/healthz"]
    moved = container(render("health.port=8081"))
    assert moved["args"] == ["--liveness=http://0.0.0.0:8081/healthz"]
    assert {p["name"]: p["containerPort"] for p in moved["ports"]}["health"] == 8081


@needs_helm
def test_operator_configuration_reaches_the_environment() -> None:
    docs = render()
    values = env(docs)
    assert values["PGBACKUP_IMAGE"] == container(docs)["image"] == "ghcr.io/pgbackup/pgbackup-operator:0.1.0"
    assert values["PGBACKUP_JOB_SERVICE_ACCOUNT"] == f"{RELEASE}-pgbackup-operator-job"
    assert values["WATCH_NAMESPACES"] == ""
    assert values["LOG_FORMAT"] == "json"
    assert values["LEADER_ELECTION"] == "true"
    assert values["POD_NAMESPACE"] == "<from>"

    custom = env(render("image.jobImage=registry.example/pgbackup:1", "watchNamespaces={shop,billing}",
                        "logFormat=text", "image.tag=9.9.9"))
    assert custom["PGBACKUP_IMAGE"] == "registry.example/pgbackup:1"
    assert custom["WATCH_NAMESPACES"] == "shop,billing"
    assert custom["LOG_FORMAT"] == "text"


@needs_helm
def test_image_digest_pins_the_image() -> None:
    digest = "sha256:" + "a" * 64
    docs = render(f"image.digest={digest}")
    assert container(docs)["image"] == f"ghcr.io/pgbackup/pgbackup-operator@{digest}"
    assert env(docs)["PGBACKUP_IMAGE"] == container(docs)["image"]


@needs_helm
def test_metrics_service_follows_metrics_enabled() -> None:
    docs = render()  # on by default: the operator serves /metrics
    service = only(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert env(docs)["METRICS_PORT"] == "9090"
    assert env(render("metrics.port=9187"))["METRICS_PORT"] == "9187"
    disabled = render("metrics.enabled=false")
    assert not [d for d in disabled if d["kind"] == "Service"]
    assert [p["name"] for p in container(disabled)["ports"]] == ["health"]
    assert env(disabled)["METRICS_PORT"] == "0"  # the operator serves nothing then


# ---------------------------------------------------------------- ServiceAccounts and RBAC


@needs_helm
def test_job_service_account_has_no_token_and_no_rights() -> None:
    docs = render()
    job_account = only(docs, "ServiceAccount", f"{RELEASE}-pgbackup-operator-job")
    assert job_account["automountServiceAccountToken"] is False
    operator_account = only(docs, "ServiceAccount", f"{RELEASE}-pgbackup-operator")
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == \
        operator_account["metadata"]["name"]
    subjects = [s["name"] for d in docs if d["kind"].endswith("Binding") for s in d["subjects"]]
    assert subjects and set(subjects) == {operator_account["metadata"]["name"]}


@needs_helm
def test_cluster_role_grants_exactly_the_operator_rules() -> None:
    docs = render()
    assert as_rules(only(docs, "ClusterRole")["rules"]) == expected()
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == only(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-pgbackup-operator",
                                    "namespace": NAMESPACE}]
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


@needs_helm
def test_watch_namespaces_get_roles_and_job_accounts() -> None:
    docs = render("watchNamespaces={shop,billing}")
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "Role"}
    bindings = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == bindings == {
        ("shop", f"{RELEASE}-pgbackup-operator"),
        ("billing", f"{RELEASE}-pgbackup-operator"),
        (NAMESPACE, f"{RELEASE}-pgbackup-operator-leader-election"),
    }
    cluster_rules = as_rules(only(docs, "ClusterRole")["rules"])
    assert {resource for _, resources, _ in cluster_rules for resource in resources} == \
        {"customresourcedefinitions", "namespaces"}, "the ClusterRole holds cluster-scoped, read-only rules only"
    assert all(set(verbs) <= {"get", "list", "watch"} for _, _, verbs in cluster_rules)
    watched = as_rules(roles[("shop", f"{RELEASE}-pgbackup-operator")]["rules"])
    leader = as_rules(roles[(NAMESPACE, f"{RELEASE}-pgbackup-operator-leader-election")]["rules"])
    assert sorted(cluster_rules + watched + leader) == sorted(expected()), "together they are the operator's rules"
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "ServiceAccount"}
    job = f"{RELEASE}-pgbackup-operator-job"
    assert {("shop", job), ("billing", job), (NAMESPACE, job)} <= accounts


@needs_helm
def test_restore_quiesce_flag_adds_the_scale_rules_to_the_cluster_role() -> None:
    granted = as_rules(only(render("restoreQuiesce.enabled=true"), "ClusterRole")["rules"])
    assert granted == expected(enabled=frozenset({"restoreQuiesce"}))
    assert any("deployments/scale" in resources for _, resources, _ in granted)
    assert not any("deployments/scale" in resources for _, resources, _ in expected())


@needs_helm
def test_restore_quiesce_flag_adds_the_scale_rules_to_each_watched_namespace_only() -> None:
    docs = render("watchNamespaces={shop}", "restoreQuiesce.enabled=true")
    cluster_rules = as_rules(only(docs, "ClusterRole")["rules"])
    assert not any("deployments/scale" in resources for _, resources, _ in cluster_rules)
    watched = as_rules(only(docs, "Role", f"{RELEASE}-pgbackup-operator")["rules"])
    leader = as_rules(only(docs, "Role", f"{RELEASE}-pgbackup-operator-leader-election")["rules"])
    assert sorted(cluster_rules + watched + leader) == sorted(expected(enabled=frozenset({"restoreQuiesce"})))


def test_optional_rules_get_their_own_template() -> None:
    rules = (Rule("", ("pods",), ("list",), "always"), Rule("apps", ("deployments/scale",), ("patch",), "flag",
                                                              optional="restoreQuiesce"))
    template = crdgen.rules_template(rules)
    always = template.split('rules.all" }}')[1].split("{{- end }}")[0]
    optional = template.split('rules.optional.restoreQuiesce" }}')[1].split("{{- end }}")[0]
    assert "deployments/scale" not in always and "deployments/scale" in optional


@needs_helm
def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    docs = render("rbac.create=false")
    assert not [d for d in docs if "Role" in d["kind"]]


def test_a_rule_mixing_scopes_is_refused() -> None:
    mixed = Rule("", ("namespaces", "pods"), ("get",), "test")
    with pytest.raises(crdgen.SchemaError, match="split it"):
        crdgen.rules_template((mixed,))


# ---------------------------------------------------------------- CRDs in the chart


@needs_helm
def test_crds_render_only_with_crds_create() -> None:
    crds = [d for d in render() if d["kind"] == "CustomResourceDefinition"]
    assert sorted(d["metadata"]["name"] for d in crds) == ["backuppolicies.pgbackup.dev",
                                                          "restorerequests.pgbackup.dev"]
    assert all(d["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"} for d in crds)
    assert not [d for d in render("crds.create=false") if d["kind"] == "CustomResourceDefinition"]


@needs_helm
def test_chart_crds_are_the_crds_in_the_repository() -> None:
    rendered = {d["metadata"]["name"]: d for d in render() if d["kind"] == "CustomResourceDefinition"}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        plain = yaml.safe_load(path.read_text())
        chart_copy = rendered.pop(plain["metadata"]["name"])
        chart_copy["metadata"].pop("annotations")
        assert chart_copy == plain, f"{path.name} differs from the chart's copy: run `make crds`"
    assert not rendered, f"the chart has CRDs that crds/ lacks: {sorted(rendered)}"


@needs_helm
def test_existing_service_accounts_can_be_used() -> None:
    docs = render("serviceAccount.create=false", "serviceAccount.name=platform-ops",
                  "jobServiceAccount.create=false", "jobServiceAccount.name=backup-runner")
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "platform-ops"
    assert only(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "platform-ops"
    assert env(docs)["PGBACKUP_JOB_SERVICE_ACCOUNT"] == "backup-runner"


@needs_helm
def test_an_unnamed_existing_service_account_is_an_error() -> None:
    result = helm("template", RELEASE, str(CHART), "--set", "serviceAccount.create=false")
    assert result.returncode != 0
    assert "serviceAccount.name is required when serviceAccount.create is false" in result.stderr
