"""Timestamps and durations as the API writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgbackup.api.base import format_duration, parse_duration, parse_timestamp


def test_kubernetes_timestamps_parse_as_aware_utc() -> None:
    assert parse_timestamp("2026-11-23T02:00:00Z") == datetime(2026, 11, 23, 2, tzinfo=UTC)
    assert parse_timestamp("2026-11-23T03:00:00+01:00") == datetime(2026, 11, 23, 2, tzinfo=UTC)
    assert parse_timestamp("2026-11-23T02:00:00") == datetime(2026, 11, 23, 2, tzinfo=UTC)  # no zone: UTC


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-40T00:00:00Z", 0])
def test_what_is_not_a_timestamp_is_none(value: object) -> None:
    assert parse_timestamp(value) is None


def test_durations_round_trip() -> None:
    assert parse_duration("1d2h3m4s") == timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert format_duration(parse_duration("90d")) == "90d"
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("3 weeks")
