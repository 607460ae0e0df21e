"""Smoke test of the scale benchmark (scripts/bench_scale.py; `make bench-scale` runs it with 100 and 1,000
policies): with 5 policies it runs the operator as its own process against kmock and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def test_the_scale_benchmark_runs_with_five_policies(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_scale.py"), "--policies", "5",  # noqa: S603
                          "--idle-seconds", "2", "--settle-seconds", "2", "--ready-timeout", "120",
                          "--json", str(out)], capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    [result] = json.loads(out.read_text())
    assert result["policies"] == 5 and result["ready_seconds"] > 0
    assert result["reconcile_peak_rss_mib"] > 0 and result["idle_rss_mib"] > 0
    assert isinstance(result["idle_requests_per_minute"], dict) and result["reapply_writes"] >= 0
    assert "| all Ready after (s) |" in run.stdout and "5 policies" in run.stdout
