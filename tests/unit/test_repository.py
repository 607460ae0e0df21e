"""Repository-level promises: the README's commands are what CI runs, and the code keeps its layers apart."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    """The commands of the README's first code block (the two a new user runs)."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must open with a bash code block holding the demo and test commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]


def test_readme_opens_with_demo_and_test() -> None:
    assert readme_commands() == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert "make test" in ci_lines, ".ci/run must call the README's test command, `make test`"


def test_no_python_package_named_operator() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "operator" / "operator").exists()


def test_import_layers_hold() -> None:
    """api <- builders <- handlers and api <- runner (contracts in pyproject.toml, checked by import-linter)."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        lint_path = shutil.which("lint-imports")
        if lint_path is None:
            pytest.skip("import-linter is not installed (make deps installs it)")
        lint = Path(lint_path)
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_unused_imports_or_undefined_names() -> None:
    """ruff's pyflakes rules: dead imports and names that would fail at run time."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed (make deps installs it)")
    result = subprocess.run([str(ruff), "check", "operator", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
