"""`make bench` runs the repository's own benchmark (bench/) from a clone: end to end at a tiny scale it builds
the dataset on a throwaway PostgreSQL, times the anchors and the runner against a moto S3 server, and reports
every row with sane numbers, in the Markdown table and the JSON."""

from __future__ import annotations

import json
import os
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

CORE = ["pg_dump_fc", "cron_gzip_s3", "pgbackup_s3", "pgbackup_phys_vol", "restore_fc_j2", "pgbackup_restore_s3"]
# pgBackRest and barman-cloud come from Debian (`make bench` installs them as root); the smoke test only runs
# their rows where they are installed already (and never pgBackRest to S3: its moto round trips take ~20 s).
# a restore whose backup is skipped cannot run: a row saying why, not a crash
NOT_RUN = "restore_fd_j1"
OPTIONAL = {"pgbackrest_posix": "pgbackrest", "pgbackrest_restore": "pgbackrest", "barman_cloud": "barman-cloud-backup"}


def installed_optional() -> list[str]:
    return [tool for tool, command in OPTIONAL.items() if shutil.which(command)]


@pytest.fixture(scope="module")
def bench_run() -> Iterator[tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]]:
    # not under pytest's tmp_path: as root the server runs as `postgres`, which cannot enter pytest-of-root/
    work = Path(tempfile.mkdtemp(prefix="pgbackup-bench-test-"))
    work.chmod(0o755)
    try:
        yield run_bench(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_bench(work: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    out = work / "bench.json"
    only = ",".join([*CORE, NOT_RUN, *installed_optional()])
    run = subprocess.run([sys.executable, "-m", "bench", "--scale", "1", "--vector-rows", "200", "--no-install",  # noqa: S603
                          "--only", only, "--skip", "pg_dump_fd", "--json", str(out), "--workdir", str(work), "--timeout", "120"],
                         capture_output=True, text=True, timeout=230, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    return run, json.loads(out.read_text()), work


def rows_by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in doc["rows"]}


def test_every_selected_tool_is_a_row_with_sane_numbers(bench_run: Any) -> None:
    _, doc, _ = bench_run
    rows = rows_by_id(doc)
    assert sorted(rows) == sorted([*CORE, NOT_RUN, *installed_optional()])
    for row in (r for r in rows.values() if r["id"] != NOT_RUN):
        assert row["ok"], row
        assert 0 < row["wall_s"] < 120 and row["bytes"] > 0 and row["peak_rss_bytes"] > 1024 * 1024, row
        assert row["db_mb_s"] > 0 and row["x_wall"] > 0 and row["x_size"] > 0, row
    assert rows["cron_gzip_s3"]["x_wall"] == 1.0 and set(rows["cron_gzip_s3"]["parts"]) == {"dump_gzip", "upload"}
    assert rows["restore_fc_j2"]["x_wall"] == 1.0
    assert "row counts verified" in rows["pgbackup_restore_s3"]["notes"]
    # the runner's logical backup lands in S3, the physical one on the volume
    assert "+ 0 S3" not in rows["pgbackup_s3"]["notes"] and "+ 0 S3" in rows["pgbackup_phys_vol"]["notes"]
    meta = doc["meta"]
    assert meta["scale"] == 1 and meta["vector_rows"] == 200 and meta["db_size_bytes"] > 10 * 2**20
    assert meta["postgres"] and meta["load_average"]


def test_a_tool_that_cannot_run_is_a_row_saying_why(bench_run: Any) -> None:
    run, doc, _ = bench_run
    row = rows_by_id(doc)[NOT_RUN]
    assert row["ok"] is False and row["wall_s"] is None and row["x_wall"] is None
    assert row["error"] == "no pg_dump_fd dump to restore (that backup failed or was skipped)"
    assert "| pg_restore -j 1 (from -Fd) | – | – | – | – | – | – | NOT RUN: no pg_dump_fd dump to restore" in run.stdout


def test_the_markdown_table_has_a_line_per_row_and_the_run_leaves_nothing_behind(bench_run: Any) -> None:
    run, doc, work = bench_run
    lines = run.stdout.splitlines()
    assert "| tool | wall s | size MiB | DB MB/s | peak RSS MiB | × wall | × size | notes |" in lines
    for row in doc["rows"]:
        label = row["label"].replace("|", "\\|")
        [line] = [line for line in lines if line.startswith(f"| {label} |")]
        assert f"| {row['wall_s']:.1f} |" in line if row["ok"] else "NOT RUN" in line
    assert sorted(p.name for p in work.iterdir()) == ["bench.json"]  # data dir, moto and logs removed


def test_pgbackrest_and_barman_rows(bench_run: Any) -> None:
    missing = sorted({command for tool, command in OPTIONAL.items() if tool not in installed_optional()})
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed here (make bench installs them from Debian as root)")
    rows = rows_by_id(bench_run[1])
    assert "repo growth" in rows["pgbackrest_posix"]["notes"]
    assert "data directory from the posix repo" in rows["pgbackrest_restore"]["notes"]
    assert "barman-cloud-wal-archive" in rows["barman_cloud"]["notes"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another account")
def test_a_work_directory_the_server_account_cannot_enter_is_refused_with_what_to_do(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    run = subprocess.run([sys.executable, "-m", "bench", "--no-install", "--workdir", str(closed)],  # noqa: S603
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 1
    assert "cannot enter" in run.stderr and "pass --workdir a directory it can reach" in run.stderr
    assert list(closed.iterdir()) == []


def test_make_bench_runs_the_benchmark_in_the_repository() -> None:
    dry = subprocess.run(["make", "-n", "bench", "BENCH_ARGS=--scale 1"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "-m bench --scale 1" in dry.stdout and "shared" not in dry.stdout
