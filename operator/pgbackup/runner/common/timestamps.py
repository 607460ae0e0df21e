"""Time in one place: UTC now, a naive or zoned moment as UTC, and RFC 3339 text ('Z' or an offset) both ways."""

from __future__ import annotations

from datetime import UTC, datetime

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """The same moment in UTC; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def assume_utc(moment: datetime) -> datetime:
    """`moment` unchanged when it has a zone; a naive one is taken to be UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def format_utc(moment: datetime) -> str:
    """'2026-11-23T10:15:00Z' (whole seconds)."""
    return as_utc(moment).strftime(RFC3339)


def parse_timestamp(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time ('Z' or an offset, which is kept; without one it is taken as UTC), as an aware
    datetime. Raises ValueError when `text` is not such a time."""
    return assume_utc(datetime.fromisoformat(text))
