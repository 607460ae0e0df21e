"""The GitHub workflows: a version tag publishes exactly the image and chart the chart itself points at, only after
the e2e suite passed on kind; every push runs `make lint` and `make test`. actionlint checks them (`make lint`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CHART = ROOT / "charts" / "pgbackup-operator"
HELM = ROOT / ".tools" / "bin" / "helm"


def workflow(name: str) -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    loaded["on"] = loaded.pop(True, loaded.get("on"))  # YAML 1.1 reads the key `on` as True
    return loaded


def chart_meta() -> dict[str, Any]:
    meta: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


def step(job: dict[str, Any], uses: str, **matching: Any) -> dict[str, Any]:
    found = [s for s in job["steps"] if s.get("uses", "").startswith(uses + "@")
             and all(s.get("with", {}).get(k) == v for k, v in matching.items())]
    assert len(found) == 1, f"expected one {uses} step with {matching}, found {found}"
    return found[0]


def run_step(job: dict[str, Any], step_id: str) -> str:
    script = next(s["run"] for s in job["steps"] if s.get("id") == step_id)
    assert isinstance(script, str)
    return script


def test_workflows_pass_actionlint() -> None:
    actionlint = Path(sys.executable).with_name("actionlint")
    found = str(actionlint) if actionlint.exists() else shutil.which("actionlint")
    if found is None:
        pytest.skip("actionlint is not installed (make deps installs it)")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # its shellcheck too
    result = subprocess.run([found, *sorted(str(p) for p in WORKFLOWS.glob("*.yml"))], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_a_tag_pushes_the_image_the_chart_pulls() -> None:
    release = workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert release["env"]["IMAGE"] == values["image"]["repository"] == "ghcr.io/pgbackup/pgbackup-operator"

    publish = release["jobs"]["publish"]
    assert publish["env"]["VERSION"] == "${{ needs.version.outputs.version }}"
    push = step(publish, "docker/build-push-action", push=True)
    assert push["with"]["tags"] == "${{ env.IMAGE }}:${{ env.VERSION }}"
    assert set(push["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    step(publish, "docker/setup-qemu-action")
    step(publish, "docker/setup-buildx-action")

    # A tag v<appVersion> therefore pushes <repository>:<appVersion>, the image the chart's default values render.
    version = chart_meta()["appVersion"]
    pushed = push["with"]["tags"].replace("${{ env.IMAGE }}", release["env"]["IMAGE"]) \
        .replace("${{ env.VERSION }}", version)
    assert pushed == f"{values['image']['repository']}:{version}"
    if HELM.exists():
        rendered = subprocess.run([str(HELM), "template", "pgb", str(CHART)], capture_output=True, text=True,
                                  timeout=120)
        assert rendered.returncode == 0, rendered.stderr
        deployment = next(d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Deployment")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == pushed


def check_version(tag: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    script = run_step(workflow("release.yml")["jobs"]["version"], "check")
    output = tmp_path / "github_output"
    output.write_text("")
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "GITHUB_REF_NAME": tag, "GITHUB_OUTPUT": str(output)})
    return result, output.read_text()


def test_the_tag_must_name_the_version_of_the_project_and_the_chart(tmp_path: Path) -> None:
    meta = chart_meta()
    assert meta["version"] == meta["appVersion"]
    result, output = check_version(f"v{meta['appVersion']}", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert output == f"version={meta['appVersion']}\n"

    result, output = check_version("v99.0.0", tmp_path)
    assert result.returncode != 0 and output == ""
    assert "pyproject.toml" in result.stdout and "Chart.yaml" in result.stdout and "99.0.0" in result.stdout


def test_nothing_is_published_before_the_e2e_suite_passed_on_kind() -> None:
    release = workflow("release.yml")
    assert set(release["jobs"]["publish"]["needs"]) == {"version", "e2e"}
    assert release["jobs"]["e2e"]["uses"] == "./.github/workflows/e2e.yml"
    assert release["jobs"]["e2e"]["with"]["image"] == \
        f"{release['env']['IMAGE']}:${{{{ needs.version.outputs.version }}}}"
    e2e = workflow("e2e.yml")["jobs"]["e2e"]
    step(e2e, "helm/kind-action")
    assert step(e2e, "docker/build-push-action", load=True)["with"]["tags"] == "${{ inputs.image }}"
    assert e2e["env"]["PGBACKUP_E2E_IMAGE"] == "${{ inputs.image }}"
    runs = [s.get("run", "") for s in e2e["steps"]]
    assert any("kind load docker-image" in run for run in runs)
    assert any(run.startswith("make e2e") for run in runs)


def test_the_chart_is_pushed_as_an_oci_artifact() -> None:
    release = workflow("release.yml")
    assert release["env"]["CHART_REPOSITORY"] == "oci://ghcr.io/pgbackup/charts"
    scripts = "\n".join(s.get("run", "") for s in release["jobs"]["publish"]["steps"])
    assert "helm package charts/pgbackup-operator" in scripts
    assert 'helm push "dist/pgbackup-operator-$VERSION.tgz" "$CHART_REPOSITORY"' in scripts
    assert "--password-stdin" in scripts, "the registry token must not be in an argument list"
    assert release["jobs"]["publish"]["permissions"] == {"contents": "read", "packages": "write"}


def test_every_push_and_pull_request_runs_lint_and_test() -> None:
    ci = workflow("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    runs = [s.get("run") for s in ci["jobs"]["lint-and-test"]["steps"]]
    assert "make lint" in runs and "make test" in runs
    assert ci["jobs"]["e2e"]["uses"] == "./.github/workflows/e2e.yml"
