"""SizeAnomaly: the newest Completed backup's size against the median of the ones before it (pure).

"Abnormal-true" like a node's DiskPressure: True means something looks wrong. It never feeds Ready: a big
jump can be legitimate (a data import), the condition and its Event only make sure somebody looks.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgbackup.builders.conditions import Status, find_condition, set_condition

SIZE_ANOMALY = "SizeAnomaly"
DEFAULT_WINDOW = 7
MIN_PREVIOUS = 3
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class SizeReport:
    status: Status
    reason: str  # SizeJump, SizeDrop or SizeNormal
    message: str
    newest_bytes: int
    median_bytes: float


def completed_sizes(status: Mapping[str, Any]) -> list[int]:
    """sizeBytes of the Completed backups in status.backups, newest first."""
    records = sorted((r for r in status.get("backups") or []
                      if r.get("phase", "Completed") == "Completed" and isinstance(r.get("sizeBytes"), int)),
                     key=lambda r: str(r.get("id") or ""), reverse=True)
    return [int(r["sizeBytes"]) for r in records]


def previous_median(status: Mapping[str, Any], window: int = DEFAULT_WINDOW) -> float | None:
    """Median size of the last `window` Completed backups before the newest; None with fewer than 3 of them."""
    previous = completed_sizes(status)[1:window + 1]
    return statistics.median(previous) if len(previous) >= MIN_PREVIOUS else None


def size_text(size: float) -> str:
    """800 MiB, 1.9 GiB, 512 B: one decimal where it says something."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            text = f"{value:.0f}" if unit == "B" or value >= 100 else f"{value:.1f}".removesuffix(".0")
            return f"{text} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def evaluate_size(status: Mapping[str, Any], threshold: float = DEFAULT_THRESHOLD,
                  window: int = DEFAULT_WINDOW) -> SizeReport | None:
    """None while there are fewer than 3 earlier Completed backups (no condition then)."""
    sizes = completed_sizes(status)
    median = previous_median(status, window)
    if median is None or not sizes:
        return None
    newest = sizes[0]
    count = len(sizes[1:window + 1])
    if median <= 0:
        ratio = 1.0 if newest == 0 else float("inf")
    else:
        ratio = newest / median
    what = (f"newest backup {size_text(newest)} is {ratio:.1f}x the median {size_text(median)} of the last {count}"
            if ratio != float("inf") else f"newest backup {size_text(newest)} follows {count} empty backups")
    if abs(ratio - 1) <= threshold:
        return SizeReport("False", "SizeNormal", f"{what} (threshold ±{threshold:.0%})", newest, median)
    reason = "SizeJump" if ratio > 1 else "SizeDrop"
    return SizeReport("True", reason, f"{what}, more than ±{threshold:.0%} off; check what changed", newest, median)


def size_anomaly_conditions(status: Mapping[str, Any], report: SizeReport | None, generation: int | None,
                            now: str) -> list[dict[str, Any]]:
    """status.conditions with SizeAnomaly set from the report (removed when there is no report)."""
    conditions = [dict(c) for c in status.get("conditions") or []]
    if report is None:
        return [c for c in conditions if c.get("type") != SIZE_ANOMALY]
    return set_condition(conditions, SIZE_ANOMALY, report.status, report.reason, report.message, generation, now)


def became_anomalous(status: Mapping[str, Any], report: SizeReport | None) -> bool:
    """True on the transition to SizeAnomaly=True (the moment for a Warning Event)."""
    previous = find_condition(list(status.get("conditions") or []), SIZE_ANOMALY) or {}
    return report is not None and report.status == "True" and previous.get("status") != "True"


def with_size_anomaly(status: Mapping[str, Any], patch: dict[str, Any], generation: int | None, now: str,
                      threshold: float) -> tuple[dict[str, Any], SizeReport | None]:
    """Extend a status patch that records a backup with the SizeAnomaly condition; the report is returned only
    when the condition turns True (then an Event is due)."""
    merged = {**status, **patch}
    report = evaluate_size(merged, threshold)
    conditions = size_anomaly_conditions(merged, report, generation, now)
    if conditions != list(merged.get("conditions") or []):
        patch = {**patch, "conditions": conditions}
    return patch, report if became_anomalous(status, report) else None
