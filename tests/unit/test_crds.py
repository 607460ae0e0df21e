"""The CRDs in crds/ and in the chart are generated from the pydantic models, are structural, explain every
field, and accept exactly what the models accept (as far as a schema can tell)."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from datetime import datetime
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pgbackup import crdgen
from pgbackup.api import BackupPolicy, RestoreRequest

ROOT = Path(__file__).resolve().parents[2]
KINDS = {resource.kind: resource for resource in crdgen.RESOURCES}


@cache
def _parsed_crd(kind: str) -> dict[str, Any]:
    resource = KINDS[kind]
    return yaml.safe_load((ROOT / crdgen.CRD_DIR / f"{resource.crd_name}.yaml").read_text())


def load_crd(kind: str) -> dict[str, Any]:
    """The CRD in crds/ (a fresh copy)."""
    return copy.deepcopy(_parsed_crd(kind))


def openapi(kind: str) -> dict[str, Any]:
    return load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}.*")


def node(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    for part in dotted.strip(".").split("."):
        schema = schema["properties"][part]
    return schema


def api_server_accepts(kind: str, obj: dict[str, Any]) -> list[str]:
    """Errors the CRD's OpenAPI schema finds (pattern, enum, ranges, required; CEL is checked separately).
    jsonschema ignores the x-kubernetes-* keywords, and unknown fields pass as the API server prunes them."""
    validator = jsonschema.Draft7Validator(openapi(kind))
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(obj)]


# ---------------------------------------------------------------- drift


def test_generated_files_match_the_models(tmp_path: Path) -> None:
    """crds/ and the chart's CRDs and RBAC rules are exactly what `make crds` writes today."""
    result = subprocess.run([sys.executable, "-m", "pgbackup.crdgen", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    generated = {path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file()}
    assert generated == set(crdgen.render())
    stale = []
    for relative in sorted(generated):
        committed = ROOT / relative
        if not committed.exists() or committed.read_text() != (tmp_path / relative).read_text():
            stale.append(str(relative))
    for directory in (crdgen.CRD_DIR, crdgen.CHART_CRD_DIR):
        for extra in sorted((ROOT / directory).glob("*.yaml")):
            if extra.relative_to(ROOT) not in generated:
                stale.append(f"{extra.relative_to(ROOT)} (no longer generated)")
    assert not stale, f"generated files are out of date with the pydantic models: {stale}; run `make crds`"


def test_generation_is_deterministic() -> None:
    assert crdgen.render() == crdgen.render()


def test_crdgen_refuses_to_write_outside_the_repository(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pgbackup.crdgen"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "repository root" in result.stderr
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- structure


class _Inner(BaseModel):
    """What the inner object is."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    size: int = Field(default=3, ge=1)
    """How big."""


class _Outer(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    inner: _Inner | None = None
    """The inner object."""
    quantity: int | str = 1
    """1 or '500m'."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free labels."""
    anything: dict[str, Any] = Field(default_factory=dict)
    """Free-form."""
    when: datetime | None = None
    """A time."""


def test_conversion_inlines_references_and_drops_null() -> None:
    schema = crdgen.structural_schema(_Outer, "validation")
    inner = schema["properties"]["inner"]
    assert inner["type"] == "object" and "anyOf" not in inner and "$ref" not in inner
    assert inner["description"] == "The inner object. What the inner object is."
    assert inner["properties"]["size"] == {"type": "integer", "minimum": 1, "default": 3, "description": "How big."}
    assert "default" not in inner, "a null default is dropped"
    assert schema["properties"]["quantity"] == {"x-kubernetes-int-or-string": True, "default": 1,
                                                "description": "1 or '500m'."}
    assert schema["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert schema["properties"]["anything"]["x-kubernetes-preserve-unknown-fields"] is True
    assert schema["properties"]["when"] == {"type": "string", "format": "date-time", "description": "A time."}
    assert "title" not in str(schema) and "$defs" not in schema
    assert crdgen.structural_problems(schema) == []


def test_conversion_refuses_what_has_no_structural_form() -> None:
    class Union(BaseModel):
        value: int | bool

    with pytest.raises(crdgen.SchemaError, match="Union.value: union types have no structural form"):
        crdgen.structural_schema(Union, "validation")

    class Tuple(BaseModel):
        pair: tuple[int, str]

    with pytest.raises(crdgen.SchemaError, match="Tuple.pair: JSON schema keyword 'prefixItems'"):
        crdgen.structural_schema(Tuple, "validation")



@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_is_structural(kind: str) -> None:
    assert crdgen.structural_problems(openapi(kind)) == []


@pytest.mark.parametrize("bad, complaint", [
    ({"type": "object", "properties": {"a": {"description": "no type"}}}, "needs a type"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}, "$ref"),
    ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}, "anyOf"),
    ({"type": "object", "additionalProperties": False}, "must not be false"),
    ({"type": "string", "title": "A"}, "'title'"),
    ({"type": "string", "default": None}, "default must not be null"),
    ({"type": "array"}, "needs items"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "required field 'b'"),
    ({"type": "object", "properties": {"a": {"type": "string"}},
      "x-kubernetes-validations": [{"rule": "has(self.b)", "message": "m"}]}, "unknown field 'b'"),
    ({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
      "items": {"type": "object", "properties": {"type": {"type": "string"}}}}, "must be required or defaulted"),
])
def test_structural_checker_finds_problems(bad: dict[str, Any], complaint: str) -> None:
    problems = crdgen.structural_problems(bad)
    assert any(complaint in problem for problem in problems), problems


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_names_scope_and_status_subresource(kind: str) -> None:
    crd = load_crd(kind)
    resource = KINDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{resource.plural}.pgbackup.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": resource.plural,
        "singular": kind.lower(),
        "shortNames": [{"BackupPolicy": "bp", "RestoreRequest": "rr"}[kind]],
        "categories": ["pgbackup"],
    }
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert version["schema"]["openAPIV3Schema"]["required"] == ["spec"]


def test_backup_policy_printer_columns() -> None:
    columns = {c["name"]: c for c in load_crd("BackupPolicy")["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns) == ["Schedule", "Method", "Last Backup", "Last Backup Time", "Size", "Verified", "Ready", "Age"]
    assert columns["Schedule"]["jsonPath"] == ".spec.schedule"
    assert columns["Method"]["priority"] == 1
    assert columns["Last Backup"]["jsonPath"] == ".status.lastBackup.id"
    assert columns["Last Backup Time"] == {**columns["Last Backup Time"], "jsonPath": ".status.lastBackup.completedAt",
                                           "type": "date"}
    assert columns["Size"]["jsonPath"] == ".status.lastBackup.size"
    assert columns["Verified"]["jsonPath"] == '.status.conditions[?(@.type=="Verified")].status'
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"]["type"] == "date"
    assert all("priority" not in c for name, c in columns.items() if name != "Method"), "only Method is -o wide"


def test_restore_request_printer_columns() -> None:
    columns = {c["name"]: c for c in load_crd("RestoreRequest")["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Backup", "Requested", "Target", "Duration", "Age"]
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Backup"]["jsonPath"] == ".status.plan.backup"
    assert columns["Requested"] == {**columns["Requested"], "jsonPath": ".spec.backup", "priority": 1}
    assert columns["Target"]["jsonPath"] == ".spec.target.database"
    assert columns["Duration"] == {**columns["Duration"], "jsonPath": ".status.duration", "type": "string"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_printer_columns_point_at_fields_that_exist(kind: str) -> None:
    """A column on a misspelt field is silently empty; here it is a failure."""
    schema = openapi(kind)
    for column in load_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]:
        path = column["jsonPath"].split("[")[0]
        if path.startswith(".metadata."):
            continue
        target = node(schema, path)
        if "[" in column["jsonPath"]:  # .status.conditions[?(@.type=="X")].status
            target = node(target["items"], column["jsonPath"].rsplit("]", 1)[1])
        expected = {"date": "string", "number": "number", "integer": "integer", "string": "string"}[column["type"]]
        assert target["type"] == expected, column


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_field_is_described(kind: str) -> None:
    """`kubectl explain` shows these; a field without one is a question for the user."""
    undescribed = [path for path, schema in walk(openapi(kind)["properties"]["spec"], ".spec")
                   if not path.endswith(("[]", ".*")) and not schema.get("description")]
    undescribed += [path for path, schema in walk(openapi(kind)["properties"]["status"], ".status")
                    if not path.endswith(("[]", ".*")) and not schema.get("description")]
    assert undescribed == []


def test_explain_retention_explains_the_rules() -> None:
    retention = node(openapi("BackupPolicy"), "spec.retention")
    assert "kept if any rule keeps it" in retention["description"]
    assert set(retention["properties"]) == {"keepLast", "daily", "weekly", "monthly", "maxAge"}
    assert retention["properties"]["maxAge"]["pattern"]
    assert retention["properties"]["keepLast"]["minimum"] == 1


def test_schema_keeps_validation_of_the_models() -> None:
    spec = openapi("BackupPolicy")["properties"]["spec"]
    assert spec["required"] == ["database", "schedule", "storage", "retention"]
    assert node(spec, "database.port") == {**node(spec, "database.port"), "minimum": 1, "maximum": 65535,
                                           "default": 5432}
    assert node(spec, "method")["enum"] == ["logical", "physical"]
    assert node(spec, "compression.level")["maximum"] == 22
    assert node(spec, "encryption.recipients")["minItems"] == 1
    assert node(spec, "database.credentialsSecret.name")["pattern"].startswith("^[a-z0-9]")
    assert node(spec, "storage")["x-kubernetes-validations"][0]["rule"] == "has(self.s3) != has(self.volume)"
    assert "default" not in node(spec, "compression.level"), "Optional fields have no null default"


def test_free_form_fields_keep_unknown_fields() -> None:
    template = node(openapi("BackupPolicy"), "spec.jobTemplate")
    assert template["properties"]["affinity"] == {**template["properties"]["affinity"], "type": "object",
                                                  "x-kubernetes-preserve-unknown-fields": True}
    assert template["properties"]["tolerations"]["items"]["x-kubernetes-preserve-unknown-fields"] is True
    assert template["properties"]["nodeSelector"]["additionalProperties"] == {"type": "string"}


def test_status_times_and_conditions() -> None:
    status = openapi("BackupPolicy")["properties"]["status"]
    assert node(status, "lastBackup.completedAt") == {**node(status, "lastBackup.completedAt"),
                                                     "type": "string", "format": "date-time"}
    conditions = node(status, "conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert not [path for path, schema in walk(status) if "default" in schema], "the operator writes all of status"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_defaults_satisfy_their_own_schema(kind: str) -> None:
    """The API server rejects a CRD whose default violates its schema."""
    for path, schema in walk(openapi(kind)):
        if "default" in schema:
            rest = {k: v for k, v in schema.items() if k != "default"}
            errors = list(jsonschema.Draft7Validator(rest).iter_errors(schema["default"]))
            assert not errors, f"{path}: default {schema['default']!r}: {errors[0].message}"


# ---------------------------------------------------------------- CEL


def cel_rules(kind: str) -> list[tuple[str, str]]:
    return [(path, rule["rule"]) for path, schema in walk(openapi(kind))
            for rule in schema.get("x-kubernetes-validations", [])]


@cache
def cel_program(rule: str) -> Any:
    celpy = pytest.importorskip("celpy", reason="cel-python is not installed: CEL rules are not evaluated")
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_accepts(rule: str, value: dict[str, Any]) -> bool:
    program = cel_program(rule)
    import celpy

    return bool(program.evaluate({"self": celpy.json_to_cel(value)}))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_cel_rules_compile(kind: str) -> None:
    celpy = pytest.importorskip("celpy", reason="cel-python is not installed: CEL rules are not compiled")
    rules = cel_rules(kind)
    assert rules, f"{kind} has CEL rules"
    for path, rule in rules:
        try:
            celpy.Environment().compile(rule)
        except Exception as error:  # noqa: BLE001 - any parse failure is the finding
            pytest.fail(f"{kind}{path}: CEL rule {rule!r} does not compile: {error}")


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """The object as the API server sees it when CEL runs: schema defaults filled in."""
    if isinstance(value, dict) and "properties" in schema:
        value = dict(value)
        for name, child in schema["properties"].items():
            if name in value:
                value[name] = with_defaults(child, value[name])
            elif "default" in child:
                value[name] = copy.deepcopy(child["default"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [with_defaults(schema["items"], item) for item in value]
    return value


def cel_verdict(kind: str, obj: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules the object breaks, evaluated where the API server would evaluate them."""
    broken = []
    full = with_defaults(openapi(kind), obj)

    def visit(schema: dict[str, Any], value: Any) -> None:
        if isinstance(value, list) and "items" in schema:  # rules on list items (e.g. hook env vars)
            for item in value:
                visit(schema["items"], item)
            return
        if not isinstance(value, dict):
            return
        for rule in schema.get("x-kubernetes-validations", []):
            if not cel_accepts(rule["rule"], value):
                broken.append(rule["message"])
        for name, child in schema.get("properties", {}).items():
            if name in value:
                visit(child, value[name])

    visit(openapi(kind), full)
    return broken


def model_verdict(model: type[Any], obj: dict[str, Any]) -> list[str]:
    try:
        model.model_validate(obj)
    except ValidationError as error:
        return [e["msg"] for e in error.errors()]
    return []


CEL_CASES = [
    ("BackupPolicy", "storage", {"s3": {"bucket": "backups"}}),
    ("BackupPolicy", "storage", {"volume": {"claimName": "pvc"}}),
    ("BackupPolicy", "storage", {"s3": {"bucket": "backups"}, "volume": {"claimName": "pvc"}}),
    ("BackupPolicy", "storage", {}),
    ("BackupPolicy", "storage", {"s3": {"bucket": "backups", "kmsKeyId": "k"}}),
    ("BackupPolicy", "storage", {"s3": {"bucket": "backups", "kmsKeyId": "k", "serverSideEncryption": "AES256"}}),
    ("BackupPolicy", "storage", {"s3": {"bucket": "backups", "kmsKeyId": "k", "serverSideEncryption": "aws:kms"}}),
    ("BackupPolicy", "compression", {"algorithm": "gzip", "level": 9}),
    ("BackupPolicy", "compression", {"algorithm": "gzip", "level": 10}),
    ("BackupPolicy", "compression", {"level": 19}),
    ("BackupPolicy", "compression", {"algorithm": "none", "level": 1}),
    ("BackupPolicy", "compression", {"algorithm": "none"}),
    ("BackupPolicy", "retention", {"maxAge": "30d"}),
    ("BackupPolicy", "retention", {"monthly": 3}),
    ("BackupPolicy", "retention", {}),
    ("BackupPolicy", "logical", {"jobs": 4}),
    ("BackupPolicy", "logical", {"jobs": 4, "format": "directory"}),
    ("BackupPolicy", "logical", {"format": "directory"}),
    ("BackupPolicy", "logical", {}),
    ("BackupPolicy", "physical", {"fullEvery": 7}),  # valid_policy's method is logical
    ("BackupPolicy", "physical", {}),
    ("BackupPolicy", "copies", [{"name": "dr", "s3": {"bucket": "dr-backups"}, "retention": {"keepLast": 3}}]),
    ("BackupPolicy", "copies", [{"name": "dr", "volume": {"claimName": "pvc"}, "retention": {"daily": 7}}]),
    ("BackupPolicy", "copies", [{"name": "dr", "s3": {"bucket": "dr-backups"}, "volume": {"claimName": "pvc"},
                                 "retention": {"keepLast": 3}}]),
    ("BackupPolicy", "copies", [{"name": "dr", "retention": {"keepLast": 3}}]),
    ("RestoreRequest", "pointInTime", {"targetTime": "2026-11-23T10:15:00Z"}),
    ("RestoreRequest", "pointInTime", {"targetLSN": "0/3000060"}),
    ("RestoreRequest", "pointInTime", {"targetTime": "2026-11-23T10:15:00Z", "targetLSN": "0/3000060"}),
    ("RestoreRequest", "pointInTime", {}),
    ("RestoreRequest", "hooks", {"postRestore": {"image": "app:1", "env": [{"name": "A", "value": "1"}]}}),
    ("RestoreRequest", "hooks", {"postRestore": {"image": "app:1", "env": [
        {"name": "A", "value": "1", "secretKeyRef": {"name": "s", "key": "k"}}]}}),
    ("RestoreRequest", "hooks", {"preRestore": {"image": "app:1", "env": [{"name": "A"}]}}),
    ("RestoreRequest", "include", {"tables": ["public.customers"]}),
    ("RestoreRequest", "include", {"schemas": ["sales"]}),
    ("RestoreRequest", "include", {}),
    ("RestoreRequest", "include", {"schemas": [], "tables": []}),
]


@pytest.mark.parametrize("kind, field, value", CEL_CASES)
def test_cel_rules_agree_with_the_model(kind: str, field: str, value: dict[str, Any]) -> None:
    """The API server refuses (with the same message) exactly what the operator would refuse later."""
    obj = valid_policy() if kind == "BackupPolicy" else valid_restore()
    obj["spec"][field] = value
    assert api_server_accepts(kind, obj) == [], "the case must pass the OpenAPI part of the schema"
    model = {"BackupPolicy": BackupPolicy, "RestoreRequest": RestoreRequest}[kind]
    by_model = model_verdict(model, obj)
    by_cel = cel_verdict(kind, obj)
    assert bool(by_cel) == bool(by_model), f"CEL says {by_cel}, the model says {by_model}"
    for message in by_cel:
        assert any(set(message.split()) <= set(text.split()) for text in by_model), \
            f"CEL message {message!r} says something else than the model: {by_model}"


def test_every_cel_rule_is_exercised() -> None:
    pytest.importorskip("celpy", reason="cel-python is not installed: CEL rules are not evaluated")
    broken = set()
    for kind, field, value in CEL_CASES:
        obj = valid_policy() if kind == "BackupPolicy" else valid_restore()
        obj["spec"][field] = value
        broken.update(cel_verdict(kind, obj))
    every = {rule["message"] for kind in KINDS for _, schema in walk(openapi(kind))
             for rule in schema.get("x-kubernetes-validations", [])}
    assert every - broken == set(), "CEL rules without a failing case in CEL_CASES"


def test_database_names_are_a_set() -> None:
    """The API server refuses a database listed twice (the model does too)."""
    assert node(openapi("BackupPolicy"), "spec.database.databases")["x-kubernetes-list-type"] == "set"


# ---------------------------------------------------------------- schema and model agree


def valid_policy() -> dict[str, Any]:
    return {
        "apiVersion": "pgbackup.dev/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": "orders-db", "namespace": "shop"},
        "spec": {
            "database": {"host": "orders-db.shop.svc", "port": 5432, "databases": ["orders"],
                         "credentialsSecret": {"name": "orders-db-backup"}, "sslMode": "prefer"},
            "schedule": "0 2 * * *",
            "timeZone": "Europe/Berlin",
            "method": "logical",
            "storage": {"s3": {"bucket": "backups", "prefix": "shop/orders-db",
                               "endpoint": "https://minio.minio.svc:9000", "forcePathStyle": True,
                               "credentialsSecret": {"name": "backup-s3"}}},
            "compression": {"algorithm": "zstd", "level": 3},
            "encryption": {"recipients": ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"],
                           "identitySecret": {"name": "backup-age-identity", "key": "identity"}},
            "retention": {"keepLast": 7, "daily": 7, "weekly": 4, "monthly": 12, "maxAge": "90d"},
            "wal": {"enabled": False},
            "verify": {"enabled": True, "checks": [{"name": "orders-not-empty", "database": "orders",
                                                    "sql": "select count(*) > 0 from orders"}]},
            "objectives": {"rpo": "24h", "rto": "4h"},
            "notifications": {"webhook": {"urlSecret": {"name": "backup-webhook", "key": "url"},
                                          "events": ["BackupFailed"]}},
            "jobTemplate": {"resources": {"limits": {"memory": "1Gi"}}, "nodeSelector": {"disk": "ssd"},
                            "tolerations": [{"key": "backup", "operator": "Exists"}],
                            "affinity": {"nodeAffinity": {}}, "backoffLimit": 2},
        },
    }


def valid_restore() -> dict[str, Any]:
    return {
        "apiVersion": "pgbackup.dev/v1alpha1",
        "kind": "RestoreRequest",
        "metadata": {"name": "orders-restore-1", "namespace": "shop"},
        "spec": {"policyRef": {"name": "orders-db"}, "backup": "20261123T020000Z",
                 "target": {"database": "orders_restored", "overwrite": False},
                 "extensions": ["vector", "pg_trgm"], "dryRun": True},
    }


def test_a_full_policy_passes_schema_and_model() -> None:
    policy = valid_policy()
    assert api_server_accepts("BackupPolicy", policy) == []
    BackupPolicy.model_validate(policy)


def test_a_restore_request_passes_schema_and_model() -> None:
    request = valid_restore()
    assert api_server_accepts("RestoreRequest", request) == []
    RestoreRequest.model_validate(request)


@pytest.mark.parametrize("path, value", [
    ("database.port", 70000),
    ("database.credentialsSecret.name", "Not_A_Name"),
    ("method", "incremental"),
    ("compression.level", 23),
    ("storage.s3.bucket", "UPPER"),
    ("retention.maxAge", "ninety days"),
    ("jobTemplate.backoffLimit", 11),
    ("encryption.recipients", []),
])
def test_schema_and_model_both_refuse(path: str, value: Any) -> None:
    policy = valid_policy()
    parent = policy["spec"]
    *parents, last = path.split(".")
    for part in parents:
        parent = parent[part]
    parent[last] = value
    assert api_server_accepts("BackupPolicy", policy), f"the CRD schema accepts spec.{path}={value!r}"
    with pytest.raises(ValidationError):
        BackupPolicy.model_validate(policy)


def test_schema_requires_spec() -> None:
    assert any("'spec' is a required property" in e for e in api_server_accepts("BackupPolicy", {"metadata": {}}))


# ---------------------------------------------------------------- examples


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted((ROOT / "examples").glob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") in KINDS:
                documents.append((f"{path.name}:{document['metadata'].get('name')}", document))
    return documents


@pytest.mark.parametrize("name, document", example_documents() or [pytest.param("", {}, marks=pytest.mark.skip(
    reason="examples/ holds no BackupPolicy or RestoreRequest yet"))])
def test_examples_validate_against_crd_and_model(name: str, document: dict[str, Any]) -> None:
    kind = document["kind"]
    assert api_server_accepts(kind, document) == [], name
    model = {"BackupPolicy": BackupPolicy, "RestoreRequest": RestoreRequest}[kind]
    model.model_validate(document)
    if importlib.util.find_spec("celpy") is not None:
        assert cel_verdict(kind, document) == [], f"{name}: the API server's CEL rules refuse it"
