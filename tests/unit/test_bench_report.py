"""The benchmark's arithmetic and selection (bench/report.py, bench/cli.py): ratios to the right baseline, MB/s
of the database, rows of tools that did not run, and what --only/--skip run."""

from __future__ import annotations

import pytest

from bench.cli import parse_args, select
from bench.report import MIB, Row, derived, render, to_json

DB = 100 * 10**6  # database size in bytes: 100 MB


def rows() -> list[Row]:
    return [
        Row("cron_gzip_s3", "backup", "pg_dump | gzip + S3 upload (baseline)", wall_s=40.0, bytes=200 * MIB,
            peak_rss_bytes=80 * MIB),
        Row("pgbackup_s3", "backup", "pgbackup logical -Fc → S3", wall_s=10.0, bytes=150 * MIB,
            peak_rss_bytes=140 * MIB, notes="zstd 3"),
        Row("barman_cloud", "backup", "barman-cloud-backup (S3)", error="barman-cloud-backup is not installed"),
        Row("restore_fc_j2", "restore", "pg_restore -j 2 (from -Fc)", wall_s=20.0, bytes=190 * MIB,
            peak_rss_bytes=14 * MIB),
        Row("pgbackup_restore_s3", "restore", "pgbackup restore -Fc from S3", wall_s=30.0, bytes=150 * MIB,
            peak_rss_bytes=95 * MIB),
    ]


def test_backups_are_compared_with_the_cron_script_and_restores_with_pg_restore_j2() -> None:
    all_rows = rows()
    backup = derived(all_rows[1], all_rows, DB)
    restore = derived(all_rows[4], all_rows, DB)
    assert backup == {"db_mb_s": 10.0, "x_wall": 0.25, "x_size": 0.75}
    assert restore["x_wall"] == 1.5 and restore["x_size"] == pytest.approx(150 / 190)
    assert derived(all_rows[0], all_rows, DB)["x_wall"] == 1.0


def test_a_tool_that_did_not_run_is_a_row_saying_why_without_numbers() -> None:
    table = render({"scale": 5, "vector_rows": 100000, "db_size_bytes": DB}, rows())
    [line] = [line for line in table.splitlines() if line.startswith("| barman-cloud-backup")]
    assert line == ("| barman-cloud-backup (S3) | – | – | – | – | – | – | "
                    "NOT RUN: barman-cloud-backup is not installed |")
    assert derived(rows()[2], rows(), DB) == {"db_mb_s": None, "x_wall": None, "x_size": None}


def test_without_a_baseline_there_are_no_ratios_but_the_other_columns_stay() -> None:
    no_baseline = [r for r in rows() if r.id != "cron_gzip_s3"]
    table = render({"db_size_bytes": DB}, no_baseline)
    assert "| pgbackup logical -Fc → S3 | 10.0 | 150.0 | 10.0 | 140.0 | – | – | zstd 3 |" in table.splitlines()


def test_the_table_has_one_section_per_kind_and_escapes_pipes() -> None:
    table = render({"db_size_bytes": DB}, rows())
    assert "### Backups" in table and "### Restores" in table
    assert table.index("### Backups") < table.index("| pg_dump \\| gzip + S3 upload (baseline) | 40.0 |")
    assert table.index("### Restores") < table.index("| pgbackup restore -Fc from S3 | 30.0 |")


def test_the_json_has_the_measures_and_the_derived_columns() -> None:
    doc = to_json({"db_size_bytes": DB}, rows())
    by_id = {r["id"]: r for r in doc["rows"]}
    assert by_id["pgbackup_s3"]["x_wall"] == 0.25 and by_id["pgbackup_s3"]["ok"] is True
    assert by_id["barman_cloud"]["ok"] is False and by_id["barman_cloud"]["error"]


def test_only_adds_what_a_restore_reads_and_the_baselines_in_run_order() -> None:
    ids = [t.id for t in select("pgbackup_restore_s3", "")]
    assert ids == [
        "pg_dump_fc", "cron_gzip_s3", "pgbackup_s3", "restore_fc_j2", "pgbackup_restore_s3"]
    assert [t.id for t in select("pgbackup_vol", "")] == ["cron_gzip_s3", "pgbackup_vol"]
    assert "pgbackrest_s3" not in [t.id for t in select("", "pgbackrest_s3")]


def test_an_unknown_tool_id_is_a_usage_error_naming_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--only", "pg_dump_fc,pgbackrest"])
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert "unknown tool id(s) pgbackrest;" in err and "pgbackrest_posix" in err
