"""`kubectl pgbackup` without a cluster: --version and help."""

from __future__ import annotations

import io
from importlib.metadata import version

import pytest

from pgbackup.plugin.cli import run


def test_version_is_the_installed_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(["--version"], out, err) == 0
    assert f"kubectl-pgbackup {version('pgbackup-operator')}" in out.getvalue() + capsys.readouterr().out


@pytest.mark.parametrize("args", [["status", "--version"], ["-n", "shop", "list", "orders", "--version"]])
def test_version_anywhere_on_the_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert run(args, out, io.StringIO()) == 0
    assert "kubectl-pgbackup " in out.getvalue() + capsys.readouterr().out


def test_exit_codes_are_explained_once_in_the_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert run(["--help"], out, io.StringIO()) == 0
    text = out.getvalue() + capsys.readouterr().out
    assert text.count("Exit codes:") == 1
    assert "-n NAMESPACE, --namespace NAMESPACE" in text
    assert run(["status", "--help"], out := io.StringIO(), io.StringIO()) == 0
    text = out.getvalue() + capsys.readouterr().out
    assert "Exit codes:" not in text
    assert "--namespace" in text and "--all-namespaces" in text and "--output" in text


def test_unknown_arguments_are_a_usage_error_with_exit_3() -> None:
    err = io.StringIO()
    assert run(["status", "--frobnicate"], io.StringIO(), err) == 3
    assert "unrecognized arguments: --frobnicate" in err.getvalue()
