"""Rows, ratios and the Markdown/JSON output.

Backups are compared with the cron script (`pg_dump | gzip` + upload), restores with `pg_restore -j 2` of the
custom-format dump. DB MB/s is the database size (10^6 bytes) divided by wall seconds, not the output size.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

MIB = 1024 * 1024
BACKUP_BASELINE = "cron_gzip_s3"
RESTORE_BASELINE = "restore_fc_j2"
BASELINES = {"backup": BACKUP_BASELINE, "restore": RESTORE_BASELINE}
TITLES = {"backup": "Backups (× = ratio to `pg_dump | gzip` + S3 upload)",
          "restore": "Restores (× = ratio to `pg_restore -j 2` of the -Fc dump)"}


@dataclass
class Row:
    id: str
    kind: str  # "backup" or "restore"
    label: str
    wall_s: float | None = None
    bytes: int | None = None
    peak_rss_bytes: int | None = None
    notes: str = ""
    error: str | None = None  # why this tool has no numbers: it failed, or is not installed
    parts: dict[str, float] = field(default_factory=dict)  # wall seconds of the steps of a multi-step tool

    @property
    def ok(self) -> bool:
        return self.error is None and self.wall_s is not None


def ratio(value: float | int | None, base: float | int | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def baseline_for(row: Row, rows: list[Row]) -> Row | None:
    base_id = BASELINES[row.kind]
    return next((r for r in rows if r.id == base_id and r.ok), None)


def derived(row: Row, rows: list[Row], db_size_bytes: int) -> dict[str, float | None]:
    """The computed columns of one row: MB/s of the database, and the ratios to its kind's baseline."""
    if not row.ok:
        return {"db_mb_s": None, "x_wall": None, "x_size": None}
    base = baseline_for(row, rows)
    return {
        "db_mb_s": ratio(db_size_bytes / 1e6, row.wall_s),
        "x_wall": ratio(row.wall_s, base.wall_s if base else None),
        "x_size": ratio(row.bytes, base.bytes if base else None),
    }


def cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def flat_text(value: str, limit: int = 200) -> str:
    flat = re.sub(r"\s+", " ", value).strip()
    flat = flat if len(flat) <= limit else flat[: limit - 1] + "…"
    return flat.replace("|", "\\|")


def render(meta: dict[str, Any], rows: list[Row]) -> str:
    db_size = int(meta.get("db_size_bytes") or 0)
    lines = [
        f"Dataset: pgbench scale {meta.get('scale')} + {meta.get('vector_rows')} docs rows "
        f"({meta.get('vector_type')} embeddings, pg_trgm GIN index); database {db_size / MIB:.1f} MiB. "
        f"PostgreSQL {meta.get('postgres', '?')}, {meta.get('cpus', '?')} CPUs, "
        f"load average {meta.get('load_average', '?')} at start"
        + (f", {meta['load_average_end']} at the end." if meta.get("load_average_end") else "."),
        "",
    ]
    for kind in ("backup", "restore"):
        of_kind = [r for r in rows if r.kind == kind]
        if not of_kind:
            continue
        lines += [f"### {TITLES[kind]}", "",
                  "| tool | wall s | size MiB | DB MB/s | peak RSS MiB | × wall | × size | notes |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for row in of_kind:
            d = derived(row, rows, db_size)
            size = row.bytes / MIB if row.ok and row.bytes is not None else None
            rss = row.peak_rss_bytes / MIB if row.ok and row.peak_rss_bytes else None
            note = row.notes if row.ok else f"NOT RUN: {row.error}"
            lines.append(f"| {flat_text(row.label)} | {cell(row.wall_s if row.ok else None, 1)} | {cell(size, 1)} | "
                         f"{cell(d['db_mb_s'], 1)} | {cell(rss, 1)} | {cell(d['x_wall'], 2)} | "
                         f"{cell(d['x_size'], 2)} | {flat_text(note)} |")
        lines.append("")
    return "\n".join(lines)


def to_json(meta: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    db_size = int(meta.get("db_size_bytes") or 0)
    return {"meta": meta,
            "rows": [{**asdict(r), "ok": r.ok, **derived(r, rows, db_size)} for r in rows]}
