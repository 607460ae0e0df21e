"""`python -m bench --incremental`: its rows (a full and an incremental of one tool), ratios, table and JSON.

× is the incremental's number divided by the same tool's full: how much of a full the incremental costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.report import MIB, Row, cell, flat_text, ratio


@dataclass
class IncrRow:
    id: str
    label: str
    server: str = ""  # the PostgreSQL the tool backed up, e.g. "18.3"
    full: Row = field(default_factory=lambda: Row("", "backup", "full"))
    incr: Row = field(default_factory=lambda: Row("", "backup", "incremental"))
    notes: str = ""
    error: str | None = None  # why the tool has no (or only a full's) numbers

    @property
    def ok(self) -> bool:
        return self.error is None and self.full.ok and self.incr.ok

    def derived(self) -> dict[str, float | None]:
        if not self.ok:
            return {"x_wall": None, "x_size": None, "x_rss": None}
        return {"x_wall": ratio(self.incr.wall_s, self.full.wall_s), "x_size": ratio(self.incr.bytes, self.full.bytes),
                "x_rss": ratio(self.incr.peak_rss_bytes, self.full.peak_rss_bytes)}


def _step(row: Row) -> list[str]:
    if not row.ok:
        return ["–", "–", "–"]
    size = row.bytes / MIB if row.bytes is not None else None
    rss = row.peak_rss_bytes / MIB if row.peak_rss_bytes else None
    return [cell(row.wall_s, 1), cell(size, 1), cell(rss, 1)]


def change_lines(meta: dict[str, Any]) -> list[str]:
    """One sentence per server and table: rows updated, heap pages touched of how many, how the table grew."""
    lines = []
    for server, tables in (meta.get("change") or {}).items():
        parts = []
        for table, s in tables.items():
            share = 100 * s["pages_touched"] / s["pages_before"] if s["pages_before"] else 0.0
            parts.append(f"{table}: {s['rows']} rows ({s['key']} ≤ {s['rows']}) updated, {s['pages_touched']} of "
                         f"{s['pages_before']} heap pages touched ({share:.1f} %), heap {s['pages_before']} → "
                         f"{s['pages_after']} pages, with indexes {s['total_bytes_before'] / MIB:.1f} → "
                         f"{s['total_bytes_after'] / MIB:.1f} MiB (1 % of rows spread evenly, {s['key']} % 100 = 0, "
                         f"would have touched {s['spread_pages']} pages)")
        lines.append(f"- PostgreSQL {server}: " + "; ".join(parts) + ".")
    return lines


def render(meta: dict[str, Any], rows: list[IncrRow]) -> str:
    db_size = int(meta.get("db_size_bytes") or 0)
    lines = [
        f"Dataset: pgbench scale {meta.get('scale')} + {meta.get('vector_rows')} docs rows; database "
        f"{db_size / MIB:.1f} MiB on each server. {meta.get('cpus', '?')} CPUs, load average "
        f"{meta.get('load_average', '?')} at start, {meta.get('load_average_end', '?')} at the end.",
        "",
        "The change between the full and the incremental, then CHECKPOINT (the same on every server):",
        *change_lines(meta),
        "",
        "| tool | PostgreSQL | full s | full MiB | full RSS MiB | incr s | incr MiB | incr RSS MiB | × wall | × size "
        "| × RSS | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        d = row.derived()
        note = row.notes if row.error is None else f"NOT RUN: {row.error}"
        lines.append(f"| {flat_text(row.label)} | {row.server or '–'} | {' | '.join(_step(row.full))} | "
                     f"{' | '.join(_step(row.incr))} | {cell(d['x_wall'], 2)} | {cell(d['x_size'], 3)} | "
                     f"{cell(d['x_rss'], 2)} | {flat_text(note, 300)} |")
    return "\n".join(lines) + "\n"


def to_json(meta: dict[str, Any], rows: list[IncrRow]) -> dict[str, Any]:
    return {"meta": meta, "rows": [{"id": r.id, "label": r.label, "server": r.server, "ok": r.ok, "notes": r.notes,
                                    "error": r.error, "full": {**asdict(r.full), "ok": r.full.ok},
                                    "incr": {**asdict(r.incr), "ok": r.incr.ok}, **r.derived()} for r in rows]}
