"""The documentation site (docs/, mkdocs.yml) builds without a warning, its API reference is what the models say
today, the README stays a front door, and every YAML example in the README and the docs is accepted by the CRD
schema (OpenAPI and CEL, as the API server would check it) and by the pydantic models the operator uses."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pgbackup import docgen
from pgbackup.api import BackupPolicy, RestoreRequest
from tests.unit.test_crds import api_server_accepts, cel_verdict, valid_policy, valid_restore

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MODELS = {"BackupPolicy": BackupPolicy, "RestoreRequest": RestoreRequest}
# `<!-- example: KIND -->` just before a ```yaml block says what it is; without it a block is a complete
# pgbackup.dev object (apiVersion) or, when it has none, a piece of a BackupPolicy (its spec or fields of it).
MARKER = re.compile(r"<!--\s*example:\s*(?P<kind>[\w-]+)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    source: str  # file:line
    lang: str
    body: str
    marker: str | None


def doc_files() -> list[Path]:
    """The README and every hand-written page (the generated reference has no examples)."""
    return [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "reference" not in p.parts)]


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        found.append(Block(f"{path.relative_to(ROOT)}:{text[:match.start()].count(chr(10)) + 1}",
                           match["lang"], match["body"], marker["kind"] if marker else None))
    return found


def yaml_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks(path) if block.lang == "yaml"]


# ---------------------------------------------------------------- the site


def test_site_builds_without_warnings(tmp_path: Path) -> None:
    """`make docs`: broken links, pages missing from the nav and missing snippets fail the build."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: run `make deps` (pyproject.toml's docs extra)")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").exists()
    guarantees = (tmp_path / "site" / "guarantees" / "index.html").read_text()
    assert "A backup is good only when it is whole" in guarantees  # the README's section, included


def test_reference_pages_match_the_models(tmp_path: Path) -> None:
    """docs/reference/ is exactly what `make crds` (python -m pgbackup.docgen) writes today."""
    done = subprocess.run([sys.executable, "-m", "pgbackup.docgen", "--root", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stale = [str(relative) for relative in sorted(docgen.render())
             if not (ROOT / relative).exists() or (ROOT / relative).read_text() != (tmp_path / relative).read_text()]
    assert not stale, f"run `make crds`: {stale} differ from the models"


def test_reference_explains_every_spec_field_as_kubectl_explain_does() -> None:
    from pgbackup import crdgen

    for resource in crdgen.RESOURCES:
        page = (ROOT / docgen.REFERENCE_DIR / f"{resource.singular}.md").read_text()
        spec = crdgen.open_api_schema(resource)["properties"]["spec"]
        for name, field in spec["properties"].items():
            assert f"| `spec.{name}` |" in page, f"{resource.kind}: spec.{name} is missing from the reference"
        retention = spec["properties"].get("retention")
        if retention:
            assert docgen._text(retention["description"]) in page


def test_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = readme.count("\n")
    assert lines <= 230, f"README.md has {lines} lines: move details into docs/"
    assert not re.search(r"(?<![\w/&])#[0-9]+\b", readme), "internal issue numbers do not belong in user docs"
    assert "## Status" not in readme and "being built" not in readme
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_no_stale_promises_in_the_docs() -> None:
    for path in doc_files():
        text = path.read_text()
        for stale in ("arrives with WAL archiving", "being built", "see *Status*"):
            assert stale not in text, f"{path.relative_to(ROOT)}: {stale!r}"
        assert not re.search(r"(?<![\w/&])#[3-9]\b", text), f"{path.relative_to(ROOT)}: an internal issue number"


# ---------------------------------------------------------------- YAML examples


def merged(base: dict[str, Any], fragment: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in fragment.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def as_object(block: Block) -> tuple[str, dict[str, Any]]:
    """The complete object an example stands for: itself, or a valid object of its kind with the piece merged."""
    document = yaml.safe_load(block.body)
    assert isinstance(document, dict), f"{block.source}: a YAML example must be a mapping"
    if "apiVersion" in document:
        assert document["apiVersion"] == "pgbackup.dev/v1alpha1", f"{block.source}: {document['apiVersion']}"
        return document["kind"], document
    kind = block.marker or "BackupPolicy"
    base = valid_policy() if kind == "BackupPolicy" else valid_restore()
    piece = document["spec"] if set(document) == {"spec"} else document
    return kind, {**base, "spec": merged(base["spec"], piece)}


def resource_examples() -> list[Block]:
    return [b for b in yaml_blocks() if b.marker in (None, "BackupPolicy", "RestoreRequest")]


def test_every_yaml_block_is_checked() -> None:
    """A YAML block is a pgbackup.dev example (checked below) or Helm values (checked against the chart)."""
    unknown = [f"{b.source}: marker {b.marker!r}" for b in yaml_blocks()
               if b.marker not in (None, "BackupPolicy", "RestoreRequest", "helm-values")]
    assert not unknown, unknown
    assert len(resource_examples()) >= 8


@pytest.mark.parametrize("block", resource_examples(), ids=lambda b: b.source)
def test_yaml_example_is_accepted_by_the_api_server_and_the_operator(block: Block) -> None:
    kind, document = as_object(block)
    assert api_server_accepts(kind, document) == [], block.source
    if importlib.util.find_spec("celpy") is not None:
        assert cel_verdict(kind, document) == [], f"{block.source}: the API server's CEL rules refuse it"
    MODELS[kind].model_validate(document)


def test_broken_example_is_caught() -> None:
    """The check above is not vacuous: a wrong field in a doc example fails it."""
    block = Block("x.md:1", "yaml", "retention: {keepLast: -1}\n", None)
    kind, document = as_object(block)
    assert api_server_accepts(kind, document)


def helm_values_blocks() -> list[Block]:
    return [b for b in yaml_blocks() if b.marker == "helm-values"]


@pytest.mark.parametrize("block", helm_values_blocks(), ids=lambda b: b.source)
def test_helm_values_example_fits_the_chart(block: Block, tmp_path: Path) -> None:
    chart = ROOT / "charts" / "pgbackup-operator"
    values = yaml.safe_load(block.body)
    schema = json.loads((chart / "values.schema.json").read_text())
    jsonschema.validate(values, schema)
    helm = shutil.which("helm") or str(ROOT / ".tools" / "bin" / "helm")
    if not Path(helm).exists():
        pytest.skip("helm is not installed (make tools): the values were checked against values.schema.json only")
    (tmp_path / "values.yaml").write_text(block.body)
    done = subprocess.run([helm, "template", "pgbackup", str(chart), "-f", str(tmp_path / "values.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- commands


def shown_commands() -> set[tuple[str, str, tuple[str, ...]]]:
    """(program, subcommand, --flags) of every `pgbackup …` and `kubectl pgbackup …` the docs show in code."""
    code: list[str] = []
    for path in doc_files():
        text = path.read_text()
        code += [line for block in blocks(path) if block.lang in ("bash", "console", "")
                 for line in block.body.splitlines()]
        code += re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    found = set()
    for line in code:
        for match in re.finditer(r"(?:^|[\s(=/'])(?P<program>kubectl pgbackup|pgbackup)"
                                 r"(?: -n \S+)? (?P<sub>[a-z][a-z-]+)(?P<rest>[^#]*)", line):
            if re.search(r"\bhelm (install|upgrade|uninstall|template)\s*$", line[:match.start("program")]):
                continue  # `pgbackup` as a Helm release name
            flags = tuple(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", match["rest"]))
            found.add((match["program"], match["sub"], flags))
    return found


def test_every_shown_pgbackup_command_exists_with_its_flags() -> None:
    """A command line in the docs names a real subcommand, and every flag it shows is one that subcommand has."""
    programs = {"pgbackup": [sys.executable, "-m", "pgbackup.runner"],
                "kubectl pgbackup": [sys.executable, "-m", "pgbackup.plugin.cli"]}
    helps: dict[tuple[str, str], str] = {}
    wrong = []
    shown = shown_commands()
    assert len(shown) > 20
    for program, sub, flags in sorted(shown):
        if (program, sub) not in helps:
            done = subprocess.run([*programs[program], sub, "--help"], capture_output=True, text=True, timeout=60)
            helps[program, sub] = done.stdout if done.returncode == 0 else ""
        if not helps[program, sub]:
            wrong.append(f"{program} {sub}: no such command")
        wrong += [f"{program} {sub} {flag}: no such flag" for flag in flags if flag not in helps[program, sub]]
    assert not wrong, wrong


def test_argocd_patch_command_carries_both_health_checks(tmp_path: Path) -> None:
    """docs/monitoring.md: the jq part of the `kubectl patch` line yields argocd-cm data with both Lua files."""
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed (scripts/install-deps.sh installs it)")
    block = next(b.body for b in blocks(DOCS / "monitoring.md") if "argocd-cm" in b.body and b.lang == "bash")
    inner = re.search(r'"\$\((?P<jq>jq .*?)\)"', block, re.S)
    assert inner, block
    done = subprocess.run(["bash", "-c", inner["jq"]], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)["data"]
    assert data["resource.customizations.health.pgbackup.dev_BackupPolicy"] == \
        (ROOT / "argocd" / "backuppolicy.lua").read_text()
    assert data["resource.customizations.health.pgbackup.dev_RestoreRequest"] == \
        (ROOT / "argocd" / "restorerequest.lua").read_text()
