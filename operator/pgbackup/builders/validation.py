"""Readable messages for invalid specs: each names the field, as a user would write it in YAML."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, root: str = "spec") -> str:
    """'spec.database.port: Input should be less than or equal to 65535; spec.schedule: ...'."""
    parts = []
    for item in error.errors(include_url=False):
        path = ".".join([root, *(str(part) for part in item["loc"])])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {message}")
    return "; ".join(parts)
