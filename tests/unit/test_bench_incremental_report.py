"""The table of `python -m bench --incremental` (bench/incremental_report.py): each tool's incremental is compared
with that tool's own full, a tool that did not run (or whose incremental failed) says why without ratios, and
the change is described with the pages it touched."""

from __future__ import annotations

import pytest

from bench.cli import parse_args
from bench.incremental_report import IncrRow, change_lines, render, to_json
from bench.report import MIB, Row

META = {"scale": 20, "vector_rows": 100000, "db_size_bytes": 500 * MIB, "cpus": 2, "load_average": "1.00 0.50 0.20",
        "load_average_end": "2.00 1.00 0.50",
        "change": {"18.3": {"pgbench_accounts": {"key": "aid", "rows": 20000, "pages_before": 32787,
                                                 "pages_after": 33115, "pages_touched": 656, "spread_pages": 20000,
                                                 "total_bytes_before": 300 * MIB, "total_bytes_after": 303 * MIB}}}}


def step(label: str, wall: float, mib: float, rss_mib: float) -> Row:
    return Row("t", "backup", label, wall_s=wall, bytes=int(mib * MIB), peak_rss_bytes=int(rss_mib * MIB))


def rows() -> list[IncrRow]:
    return [
        IncrRow("basebackup", "pg_basebackup", "18.3", step("full", 20.0, 100.0, 8.0),
                step("incremental", 2.0, 5.0, 8.0), "gzip"),
        IncrRow("pgbackrest", "pgBackRest", "15.18", step("full", 10.0, 80.0, 50.0),
                Row("pgbackrest", "backup", "incremental", wall_s=3.0,
                    error="incremental failed: RuntimeError: pgbackrest exited 1"),
                error="incremental failed: RuntimeError: pgbackrest exited 1"),
        IncrRow("pgbackup_vol", "pgbackup → volume", "18.3", error="not available: the runner has no incremental"),
    ]


def test_the_incremental_is_compared_with_the_same_tools_full() -> None:
    row = rows()[0]
    assert row.ok
    assert row.derived() == {"x_wall": pytest.approx(0.1), "x_size": pytest.approx(0.05), "x_rss": 1.0}
    line = next(line for line in render(META, rows()).splitlines() if line.startswith("| pg_basebackup"))
    assert line == "| pg_basebackup | 18.3 | 20.0 | 100.0 | 8.0 | 2.0 | 5.0 | 8.0 | 0.10 | 0.050 | 1.00 | gzip |"


def test_a_failed_incremental_keeps_the_full_and_says_why_without_ratios() -> None:
    row = rows()[1]
    assert not row.ok and row.derived() == {"x_wall": None, "x_size": None, "x_rss": None}
    line = next(line for line in render(META, rows()).splitlines() if line.startswith("| pgBackRest"))
    assert line == ("| pgBackRest | 15.18 | 10.0 | 80.0 | 50.0 | – | – | – | – | – | – | "
                    "NOT RUN: incremental failed: RuntimeError: pgbackrest exited 1 |")


def test_a_tool_that_is_not_available_is_a_row_saying_so() -> None:
    line = next(line for line in render(META, rows()).splitlines() if line.startswith("| pgbackup → volume"))
    assert line == ("| pgbackup → volume | 18.3 | – | – | – | – | – | – | – | – | – | "
                    "NOT RUN: not available: the runner has no incremental |")


def test_the_change_is_described_with_the_pages_it_touched_and_the_load_is_stated() -> None:
    assert change_lines(META) == [
        "- PostgreSQL 18.3: pgbench_accounts: 20000 rows (aid ≤ 20000) updated, 656 of 32787 heap pages touched "
        "(2.0 %), heap 32787 → 33115 pages, with indexes 300.0 → 303.0 MiB (1 % of rows spread evenly, "
        "aid % 100 = 0, would have touched 20000 pages)."]
    table = render(META, rows())
    assert "load average 1.00 0.50 0.20 at start, 2.00 1.00 0.50 at the end" in table
    assert "| tool | PostgreSQL | full s | full MiB | full RSS MiB | incr s | incr MiB | incr RSS MiB |" in table


def test_json_has_both_steps_and_the_ratios() -> None:
    doc = to_json(META, rows())
    first, second, third = doc["rows"]
    assert first["ok"] and first["full"]["wall_s"] == 20.0 and first["incr"]["bytes"] == 5 * MIB
    assert first["x_size"] == pytest.approx(0.05)
    assert second["full"]["ok"] and not second["incr"]["ok"] and second["x_wall"] is None
    assert third["error"].startswith("not available") and doc["meta"] is META


def test_incremental_and_rpo_are_separate_runs() -> None:
    assert parse_args(["--incremental", "--scale", "20"]).incremental
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--incremental", "--rpo"])
    assert exit_info.value.code == 3
