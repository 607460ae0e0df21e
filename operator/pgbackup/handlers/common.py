"""Small helpers the kopf handlers share."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def plain(value: Any) -> Any:
    """kopf hands out read-only views; pydantic and comparisons want plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return copy.copy(value)
