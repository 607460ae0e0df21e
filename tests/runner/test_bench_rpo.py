"""`python -m bench --rpo` end to end at a tiny size: pgbench against a throwaway PostgreSQL while WAL is streamed
by `pgbackup wal-stream` and archived by archive_command = `pgbackup wal-push` into moto S3; every mode is a row
with lag percentiles taken from archive samples that verified, in the Markdown table and the JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)


def test_rpo_benchmark_reports_the_lag_of_each_way_of_archiving() -> None:
    # not under pytest's tmp_path: as root the server runs as `postgres`, which cannot enter pytest-of-root/
    work = Path(tempfile.mkdtemp(prefix="pgbackup-rpo-test-"))
    work.chmod(0o755)
    try:
        out = work / "rpo.json"
        run = subprocess.run([sys.executable, "-m", "bench", "--rpo", "--scale", "1", "--duration", "6",  # noqa: S603
                              "--modes", "stream,wal_push", "--no-install", "--json", str(out), "--workdir", str(work)],
                             capture_output=True, text=True, timeout=230, cwd=ROOT)
        assert run.returncode == 0, run.stderr[-3000:]
        doc = json.loads(out.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = {row["id"]: row for row in doc["rows"]}
    assert set(rows) == {"stream", "wal_push"}
    for row in rows.values():
        assert row["error"] is None, row
        assert row["failures"] == 0, f"{row['id']}: archived files failed their checksum"
        assert row["samples"] >= 3
        assert 0 <= row["p50_s"] <= row["p99_s"] <= row["max_s"]
        assert row["wal_mb_s"] > 0
    assert rows["stream"]["notes"] == "partialUploadInterval 5s"
    assert doc["meta"]["load_average"] and doc["meta"]["load_average_end"]
    assert "| pgbackup wal-stream |" in run.stdout and "| archive_command = pgbackup wal-push |" in run.stdout
