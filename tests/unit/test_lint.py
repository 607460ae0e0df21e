"""`make lint` is what CI runs to keep the code typed and the workflows valid: mypy --strict over the whole package,
actionlint over .github/workflows, and CI calls it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Paths whose mypy errors are tolerated while a restructuring is in flight; empty: none are.
NOT_YET_TYPED: tuple[str, ...] = ()


def make_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{target}:", line))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def test_mypy_is_configured_strict_over_the_whole_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert config["files"] == ["operator/pgbackup"]
    for override in config.get("overrides", []):
        assert set(override) <= {"module", "ignore_missing_imports"}, \
            f"overrides only tell mypy where a package has no usable types, never relax checks: {override}"


def test_mypy_strict_finds_nothing() -> None:
    """`mypy` as `make lint` runs it (the [tool.mypy] section of pyproject.toml)."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (make deps installs it)")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1) and re.search(r"^(Success|Found \d+ error)", output, re.M), output
    errors = [line for line in output.splitlines() if re.match(r"^[^:\s]+\.py:\d+: error:", line)]
    outside = [line for line in errors if not line.startswith(NOT_YET_TYPED)]
    assert not outside, "\n".join(outside)


def test_make_lint_runs_mypy_and_actionlint() -> None:
    recipe = " ".join(make_recipe("lint"))
    assert re.search(r"\bmypy\b", recipe), recipe
    assert re.search(r"\bactionlint\b", recipe), recipe


def test_ci_runs_lint() -> None:
    """CI runs `.ci/run`, which is exactly the README's test command; that command ends with `make lint`."""
    ci_lines = [line.split("#")[0].strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert "make test" in ci_lines, ".ci/run must run the README's test command, `make test`"
    assert any(re.search(r"\$\(MAKE\).*\blint\b", line) for line in make_recipe("test")), "`make test` must run `make lint`"
