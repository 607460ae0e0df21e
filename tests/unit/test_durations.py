"""Durations as kubectl and Go show them (the RestoreRequest DURATION column)."""

from __future__ import annotations

import pytest

from pgbackup.builders.durations import duration
from pgbackup.crdgen import RESOURCES


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (0.04, "0s"), (0.4, "0.4s"), (1.613, "1.6s"), (5.0, "5s"), (9.96, "10s"), (12.5, "12s"),
    (59.6, "1m"), (73.2, "1m13s"), (120, "2m"), (3599.9, "1h"), (3600 + 185, "1h3m"), (2 * 3600 + 180, "2h3m"),
    (7200, "2h"), (47 * 3600 + 59 * 60, "47h59m"), (49 * 3600, "2d1h"), (3 * 86400, "3d"), (-3, "0s"),
])
def test_durations_read_like_kubectl(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def printer_columns(kind: str) -> dict[str, tuple[str, str]]:
    resource = next(r for r in RESOURCES if r.kind == kind)
    return {column.name: (column.json_path, column.type) for column in resource.printer_columns}


def test_the_restore_duration_column_shows_the_human_string() -> None:
    assert printer_columns("RestoreRequest")["Duration"] == (".status.duration", "string")


def test_no_printer_column_shows_a_raw_number() -> None:
    for resource in RESOURCES:
        assert [c.name for c in resource.printer_columns if c.type in ("number", "integer")] == [], resource.kind
