"""`python -m bench --incremental` end to end at a tiny scale: a full, the same 1 % change on every server, then an
incremental, per tool; each incremental stores less than its tool's full, and the report says how many pages
the change touched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def bench_run() -> Iterator[tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]]:
    # not under pytest's tmp_path: as root the servers run as `postgres`, which cannot enter pytest-of-root/
    work = Path(tempfile.mkdtemp(prefix="pgbackup-incr-test-"))
    work.chmod(0o755)
    try:
        out = work / "incr.json"
        run = subprocess.run([sys.executable, "-m", "bench", "--incremental", "--scale", "1", "--vector-rows", "200",  # noqa: S603
                              "--no-install", "--json", str(out), "--workdir", str(work), "--timeout", "120"],
                             capture_output=True, text=True, timeout=230, cwd=ROOT)
        assert run.returncode == 0, run.stderr[-3000:]
        yield run, json.loads(out.read_text()), work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rows_by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in doc["rows"]}


def assert_incremental_is_smaller(row: dict[str, Any]) -> None:
    assert row["ok"], row
    for step in ("full", "incr"):
        assert 0 < row[step]["wall_s"] < 120 and row[step]["bytes"] > 0, row
        assert row[step]["peak_rss_bytes"] > 1024 * 1024, row
    assert 0 < row["x_size"] < 1 and row["x_wall"] > 0, row


def test_pg_basebackup_incremental_stores_less_than_its_full(bench_run: Any) -> None:
    run, doc, _ = bench_run
    row = rows_by_id(doc)["basebackup"]
    assert_incremental_is_smaller(row)
    assert row["server"].startswith("18.")
    [line] = [line for line in run.stdout.splitlines() if line.startswith(f"| {row['label']} |")]
    assert f"| {row['full']['wall_s']:.1f} |" in line and f"| {row['x_size']:.3f} |" in line


def test_pgbackrest_incr_on_the_same_change(bench_run: Any) -> None:
    row = rows_by_id(bench_run[1])["pgbackrest"]
    if not shutil.which("pgbackrest"):
        assert row["error"] == "not available: pgbackrest is not installed (apt-get install pgbackrest)"
        pytest.skip("pgbackrest is not installed here (make bench installs it from Debian as root)")
    assert_incremental_is_smaller(row)
    assert "repository growth" in row["notes"]


def test_the_runner_full_then_incremental_to_a_volume_and_to_s3(bench_run: Any) -> None:
    rows = rows_by_id(bench_run[1])
    for row_id in ("pgbackup_vol", "pgbackup_s3"):
        assert_incremental_is_smaller(rows[row_id])
        # the second backup's manifest records it as the full's incremental (the bench checks incremental_of)
        assert rows[row_id]["notes"].startswith("chain length 2;"), rows[row_id]


def test_the_change_touches_about_one_percent_of_the_pages_and_the_run_leaves_nothing(bench_run: Any) -> None:
    run, doc, work = bench_run
    meta = doc["meta"]
    assert meta["servers"]["pg18"].startswith("18.") and meta["load_average"] and meta["load_average_end"]
    for tables in meta["change"].values():
        accounts = tables["pgbench_accounts"]
        assert accounts["rows"] == 1000 and accounts["pages_after"] > accounts["pages_before"]
        # the old and the new row versions' pages, ~1 % each; 1 % of the rows spread evenly: most pages
        assert 0.01 < accounts["pages_touched"] / accounts["pages_before"] < 0.03
        assert accounts["spread_pages"] > accounts["pages_before"] / 2
        assert tables["docs"]["rows"] == 2
    assert "heap pages touched" in run.stdout
    assert sorted(p.name for p in work.iterdir()) == ["incr.json"]  # servers, moto and logs removed
