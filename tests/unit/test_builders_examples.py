"""Every example in examples/ parses and validates against the API models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pgbackup.api import BackupPolicy, RestoreRequest
from pgbackup.builders.secrets import referenced_secrets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def documents() -> list[dict]:
    return [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("doc", [d for d in documents() if d["kind"] in {"BackupPolicy", "RestoreRequest"}],
                         ids=lambda d: d["metadata"]["name"])
def test_example_validates(doc: dict) -> None:
    model = BackupPolicy if doc["kind"] == "BackupPolicy" else RestoreRequest
    model.model_validate(doc)


def test_examples_cover_s3_volume_and_restore() -> None:
    kinds = {(d["kind"], next(iter(d["spec"].get("storage", {"-": 0})))) for d in documents() if "spec" in d}
    assert ("BackupPolicy", "s3") in kinds and ("BackupPolicy", "volume") in kinds
    assert any(kind == "RestoreRequest" for kind, _ in kinds)


def test_every_referenced_secret_key_is_provided_with_a_placeholder() -> None:
    secrets = {d["metadata"]["name"]: d for d in documents() if d["kind"] == "Secret"}
    for doc in documents():
        if doc["kind"] != "BackupPolicy":
            continue
        for name, key in referenced_secrets(BackupPolicy.model_validate(doc).spec):
            assert name in secrets, f"{doc['metadata']['name']} refers to Secret {name}, not in examples/"
            value = secrets[name]["stringData"][key]
            assert "REPLACE-ME" in value


@pytest.mark.parametrize("doc", [d for d in documents() if d["kind"] == "BackupPolicy"], ids=lambda d: d["metadata"]["name"])
def test_each_example_policy_builds_a_cronjob(doc: dict) -> None:
    import json

    from pgbackup.builders.cronjob import build_cronjob
    from pgbackup.builders.pod import JobSettings

    policy = BackupPolicy.model_validate(doc)
    cronjob = build_cronjob(doc["metadata"]["name"], doc["metadata"]["namespace"], "uid-1", policy.spec,
                            JobSettings(image="img:1"))
    assert len(cronjob["metadata"]["name"]) <= 52
    assert "REPLACE-ME" not in json.dumps(cronjob)  # Secret values never reach the manifest
