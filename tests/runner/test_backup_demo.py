"""`make demo` (python -m pgbackup.runner.cli.demo) works from a fresh directory and cleans its server up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fixtures.postgres import bindir_for


def test_demo_round_trip(tmp_path: Path) -> None:
    if bindir_for("15") is None and bindir_for("18") is None:
        import pytest

        pytest.skip("no PostgreSQL server binaries installed")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pgbackup.runner.cli.demo"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "round trip OK" in done.stdout
    assert "stopped and removed the throwaway server" in done.stdout
    manifests = list((tmp_path / ".demo" / "backups").glob("*/manifest.json"))
    assert len(manifests) == 1
