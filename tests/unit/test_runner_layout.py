"""The runner's layout keeps its promises (README, Development): imports at the top of each module, so the
import-linter layers contract sees every arrow; no module reaches into another's private names; every package
says what lives in it."""

from __future__ import annotations

import ast
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[2] / "operator" / "pgbackup" / "runner"
LAZY_SDK_IMPORTS = {("storage/factory.py", "pgbackup.runner.storage.s3")}
"""boto3 is loaded only when a storage is S3 (barman's rule: the provider SDK imported only when used)."""
LAZY_FOR_START_UP = {("cli/entry.py", "pgbackup.runner.cli.main")} | {
    ("cli/main.py", f"pgbackup.runner.cli{module}")
    for module in (".backup", ".restore", ".verify", "")}  # "": `from pgbackup.runner.cli import catalog` / `wal`
"""`pgbackup wal-push` runs once per WAL segment: the console script loads the full command line only for the other
commands (docs/benchmarks.md, RPO under load); the full command line loads only the command being run."""
ANNOTATION_ONLY = {("wal/archive.py", "pgbackup.runner.catalog.manifest"), ("wal/window.py", "pgbackup.runner.catalog.manifest")}
"""Imported for annotations only, so that wal-push does not load the manifest model; the arrow (wal -> catalog) is
one the layers allow, and import-linter sees it all the same."""


def modules() -> list[tuple[str, ast.Module]]:
    return [(str(path.relative_to(RUNNER)), ast.parse(path.read_text())) for path in sorted(RUNNER.rglob("*.py"))]


def test_runner_imports_stand_at_the_top_of_each_module() -> None:
    inside: list[str] = []
    for name, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                hidden = {(name, found.module) for found in ast.walk(node) if isinstance(found, ast.ImportFrom)}
                if not hidden <= ANNOTATION_ONLY or any(isinstance(found, ast.Import) for found in ast.walk(node)):
                    inside.append(f"{name}:{node.lineno} TYPE_CHECKING")
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for found in ast.walk(node):
                if isinstance(found, ast.ImportFrom) and (name, found.module) in LAZY_SDK_IMPORTS | LAZY_FOR_START_UP:
                    continue
                if isinstance(found, (ast.Import, ast.ImportFrom)):
                    inside.append(f"{name}:{found.lineno}")
    assert inside == [], f"imports inside functions or TYPE_CHECKING blocks hide arrows from the layers: {inside}"


def test_no_runner_module_imports_another_modules_private_names() -> None:
    private = [f"{name}:{node.lineno} {node.module}.{alias.name}"
               for name, tree in modules() for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pgbackup")
               for alias in node.names if alias.name.startswith("_")]
    assert private == []


def test_every_runner_package_says_what_lives_there() -> None:
    packages = sorted(path.parent for path in RUNNER.rglob("__init__.py"))
    assert len(packages) >= 10
    silent = [str(package.relative_to(RUNNER.parent)) for package in packages
              if not ast.get_docstring(ast.parse((package / "__init__.py").read_text()))]
    assert silent == []
