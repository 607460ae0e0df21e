"""Shared building blocks of the pgbackup.dev/v1alpha1 API: base model, names, durations, conditions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "pgbackup.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(BaseModel):
    """Spec objects: camelCase on the wire, unknown fields rejected so typos surface as errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-compatible dict as Kubernetes stores it (camelCase, no unset optional fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Status objects: tolerant of fields written by newer operator versions."""

    model_config = ConfigDict(extra="ignore")


_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_PATTERN = _DNS1123_SUBDOMAIN.pattern

DnsName = Annotated[
    str,
    Field(min_length=1, max_length=253, pattern=DNS1123_PATTERN),
]
"""A Kubernetes object name (DNS-1123 subdomain): lower-case letters, digits, '-' and '.'."""

SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]

_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")
DURATION_PATTERN = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"


def parse_duration(text: str) -> timedelta:
    """Parse '90d', '24h', '1h30m', '45s' into a timedelta; raise ValueError with the accepted forms."""
    match = _DURATION.match(text.strip()) if text else None
    if not match or not any(match.groupdict().values()):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit d, h, m or s, e.g. '90d', '24h', '1h30m'")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    value = timedelta(days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0), seconds=parts.get("s", 0))
    if value <= timedelta(0):
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    return value


def parse_timestamp(value: object) -> datetime | None:
    """A Kubernetes/RFC 3339 timestamp ('2026-11-23T02:00:00Z') as an aware datetime; None when empty or not a
    timestamp. A time without a zone is read as UTC."""
    if not value:
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_duration(value: timedelta | float) -> str:
    """Human form of a duration, the inverse of parse_duration for whole seconds: 93784s -> '1d2h3m4s'."""
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else value)
    if seconds <= 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out += f"{count}{unit}"
    return out


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[
    str,
    Field(pattern=DURATION_PATTERN, min_length=2, examples=["90d", "24h", "1h30m"]),
    AfterValidator(_check_duration),
]
"""A duration such as '90d', '24h', '30m', '1h30m'."""


def _check_cron(text: str) -> str:
    from croniter import croniter  # local: only validation needs it

    fields = text.split()
    if text.startswith("@"):
        if text not in {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}:
            raise ValueError(f"invalid schedule {text!r}: unknown macro")
        return text
    if len(fields) != 5:
        raise ValueError(
            f"invalid schedule {text!r}: a CronJob schedule has 5 fields (minute hour day-of-month month day-of-week), "
            f"e.g. '0 2 * * *'; got {len(fields)}"
        )
    if not croniter.is_valid(text):
        raise ValueError(f"invalid schedule {text!r}: not a valid cron expression, e.g. '0 2 * * *'")
    return text


CronSchedule = Annotated[str, Field(min_length=1, examples=["0 2 * * *"]), AfterValidator(_check_cron)]
"""A cron expression as accepted by a Kubernetes CronJob, e.g. '0 2 * * *' or '@daily'."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str
    """Kind of condition: Ready, LastBackupSucceeded, Verified, WALArchiving, ObjectivesMet, ..."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str
    """One CamelCase word a program can match on."""
    message: str = ""
    """What a person needs to know, and what to do next when the status is not True."""
    last_transition_time: datetime | None = None
    """When status last changed (not when the message did)."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed from."""
